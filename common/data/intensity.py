"""Intensity normalisation to [-1, 1] and back, per modality.

CT: the HU window ``[data.ct-window-min, data.ct-window-max]`` maps linearly onto [-1, 1]; values
outside the window are clipped. MRI has no absolute unit, so the ``data.mri-percentile-low`` and
``-high`` percentiles of the intensities inside the body map to -1 and +1, and values beyond are
clipped. The mapping is kept with each case so synthetic volumes go back to HU (CT) or to the
site's intensity range (MRI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.config import DataConfig

NORMALISED_MIN = -1.0
NORMALISED_MAX = 1.0


@dataclass(frozen=True)
class IntensityMapping:
    """The linear map of ``[low, high]`` (HU or MRI intensities) onto [-1, 1], and its inverse."""

    modality: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"intensity mapping needs finite low < high, got low={self.low}, high={self.high}"
            )

    @property
    def scale(self) -> float:
        """Normalised units per source unit."""
        return (NORMALISED_MAX - NORMALISED_MIN) / (self.high - self.low)

    def forward(self, values: np.ndarray) -> np.ndarray:
        """Source units to [-1, 1] (float32), clipping what lies outside ``[low, high]``."""
        scaled = (np.asarray(values, dtype=np.float64) - self.low) * self.scale + NORMALISED_MIN
        return np.clip(scaled, NORMALISED_MIN, NORMALISED_MAX).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """[-1, 1] back to source units (float32); exact inverse of :meth:`forward` in range."""
        normalised = np.asarray(values, dtype=np.float64) - NORMALISED_MIN
        return (normalised / self.scale + self.low).astype(np.float32)

    def to_json(self) -> dict[str, str | float]:
        """A JSON-ready dict."""
        return {"modality": self.modality, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: dict[str, str | float]) -> IntensityMapping:
        """Inverse of :meth:`to_json`."""
        return cls(modality=str(data["modality"]), low=float(data["low"]), high=float(data["high"]))


def ct_mapping(data: DataConfig) -> IntensityMapping:
    """The fixed HU window of ``data`` as a mapping."""
    return IntensityMapping("ct", float(data.ct_window_min), float(data.ct_window_max))


def mri_mapping(values: np.ndarray, body: np.ndarray, data: DataConfig) -> IntensityMapping:
    """The robust MRI mapping: body percentiles ``data.mri-percentile-low``/``-high`` to -1/+1.

    Raises:
        ValueError: the body mask is empty or its intensities are all the same (no contrast).
    """
    inside = np.asarray(values)[body]
    if inside.size == 0:
        raise ValueError("the MRI body mask is empty")
    low, high = np.percentile(inside, [data.mri_percentile_low, data.mri_percentile_high])
    if not high > low:
        raise ValueError(
            f"MRI intensities inside the body have no contrast: the {data.mri_percentile_low} "
            f"and {data.mri_percentile_high} percentiles are both {float(low)}"
        )
    return IntensityMapping("mri", float(low), float(high))
