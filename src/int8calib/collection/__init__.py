"""Collection: run the model over the calibration data and histogram every activation.

The stand-in for TensorRT's calibration pass: batches from ``batching`` run through the
``runner``, their activations go to ``stats``. Its modules import only those and
``methods``, ``util`` and ``errors``, never the calibrator or the API above them:

* ``gather.py``: :func:`gather_statistics`, the entry point: warm-up, then one process or several;
* ``calibration_pass.py``: :func:`collect_statistics`, the pass over a loader's batches;
* ``steps.py``: :func:`parse_size` and how many samples one run takes under ``--max-memory``;
* ``workers.py``: ``collect_in_processes``, the pass in N processes over shards of the data
  (imported on first use: it loads multiprocessing);
* ``warmup.py``: :func:`warm_up_in_background`, the histogram kernel and methods' compilation in a thread.
"""

from .calibration_pass import collect_statistics
from .gather import gather_statistics
from .steps import parse_size
from .warmup import warm_up_in_background

__all__ = ["collect_statistics", "gather_statistics", "parse_size", "warm_up_in_background"]
