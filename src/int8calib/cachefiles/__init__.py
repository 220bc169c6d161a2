"""The cache route: calibration caches, ranges JSONs and Q/DQ models written elsewhere.

``read`` reads any of them as float32 scales and matches their names to a model's tensors;
``compare`` puts two side by side (``inspect --compare``); ``to_qdq`` turns one into a Q/DQ
model (``calibrate --from-cache``, ``evaluate --cache``); ``inspect`` summarises a cache,
statistics file or Q/DQ model (``int8calib inspect``).

Imports point one way: these modules use the stages (``writers/``, ``runner/``, ``stats/``,
``evaluate/``) and, for ``--missing-ranges calibrate``, the API; nothing below the CLI imports them.
"""
