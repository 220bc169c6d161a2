"""What a calibration returns (kept apart from the calibrator so that reading statistics
and computing ranges imports neither ONNX Runtime nor the image pipeline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stats.histogram import CONSTANTS_META, Statistics


@dataclass
class CalibrationResult:
    amax: dict[str, float]
    method: str
    algorithm: str
    statistics: Statistics | None = None
    from_cache: bool = False
    samples: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    by_method: dict[str, dict[str, float]] = field(default_factory=dict)  # {method: amax}; several with "all"
    search_seconds: dict[str, float] = field(default_factory=dict)  # threshold search time per method
    quantization: object = None  # evaluate.mixed.MixedPrecision when an accuracy budget was given
    precision: object = None  # writers.precision.PrecisionSummary of the int8 Q/DQ model written
    chosen_method: str | None = None  # --method auto: the candidate kept, e.g. "mse" or "percentile:99.99"
    auto: object = None  # --method auto: evaluate.mixed.MethodChoice (every candidate's held-out error)

    @property
    def constants(self) -> list[str]:
        """The tensors of ``amax`` that are the model's constants under TensorRT 10's names (stats.constants)."""
        return list(self.statistics.meta.get(CONSTANTS_META, ())) if self.statistics is not None else []
