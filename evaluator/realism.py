"""How real synthetic volumes look: MAE inside the body and 3D MS-SSIM, paired and within a set.

Arrays are numpy (z, y, x): images float in real-world units (CT in HU, MRI in the site's units),
body masks and label maps bool or integer (non-zero = inside).

- :func:`paired_mae`: mean absolute error between a real image and the image generated for its
  label map, over the real body only (the study reports it in HU for CT).
- :func:`msssim`: 3D multi-scale SSIM computed by MONAI's
  :func:`monai.metrics.regression.compute_ms_ssim`, with a kernel and a number of scales that fit
  the volume (:func:`msssim_settings`; MONAI's defaults need 176 voxels per side). Intensities are
  clipped to a window (CT: an HU window; MRI: the range given) and mapped onto [0, 1] with data
  range 1, which gives the same value as data range = the window's width on intensities shifted to
  start at 0 (SSIM's constants scale with the data range), and keeps the luminance term on
  non-negative values as SSIM assumes.
- :func:`paired_msssim` (real vs synthetic for the same label map) and :func:`diversity` (mean
  pairwise MS-SSIM within one set: close to 1 for a collapsed generator, lower for a varied one).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.regression import compute_ms_ssim

from common.config import DataConfig
from common.data import crop
from common.errors import FedsynthError

MONAI_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""MONAI's default per-scale exponents (Wang et al. 2003), finest scale first."""
MONAI_KERNEL_SIZE = 11
"""MONAI's default Gaussian window, in voxels per side; the largest this module uses."""
MONAI_KERNEL_SIGMA = 1.5
"""MONAI's default Gaussian sigma for the 11-voxel window; smaller windows keep the same ratio."""
MIN_KERNEL_SIZE = 5
"""The smallest window: 5^3 voxels still give stable local means and variances."""
SSIM_K1 = 0.01
"""SSIM's luminance constant (MONAI's and the paper's default): C1 = (K1 * data range)^2."""
SSIM_K2 = 0.03
"""SSIM's contrast constant (MONAI's and the paper's default): C2 = (K2 * data range)^2."""
SPATIAL_DIMS = 3
"""Volumes are (z, y, x); MONAI is called with spatial_dims=3."""


class RealismError(FedsynthError, ValueError):
    """A realism metric cannot be computed on the arrays given; the message says what to do."""


@dataclass(frozen=True)
class MsssimSettings:
    """One MS-SSIM configuration, as recorded in evaluation.json.

    Attributes:
        kernel_size: Gaussian window, voxels per side (odd; the same on every axis).
        kernel_sigma: its standard deviation, in voxels.
        weights: exponent of each scale, finest first, summing to 1.
        window_low: intensities below are clipped to this (HU for CT).
        window_high: intensities above are clipped to this.
    """

    kernel_size: int
    kernel_sigma: float
    weights: tuple[float, ...]
    window_low: float
    window_high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_low) and math.isfinite(self.window_high)):
            raise RealismError("the MS-SSIM intensity window must be finite: give (low, high)")
        if not self.window_low < self.window_high:
            raise RealismError(
                f"the MS-SSIM intensity window needs low < high, got "
                f"({self.window_low}, {self.window_high}): swap or widen it"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise RealismError(
                f"MS-SSIM kernel size must be a positive odd number, got {self.kernel_size}: "
                "use msssim_settings(shape, window)"
            )
        if not self.kernel_sigma > 0:
            raise RealismError(f"MS-SSIM kernel sigma must be > 0, got {self.kernel_sigma}")
        if not self.weights or min(self.weights) <= 0:
            raise RealismError(
                f"MS-SSIM needs one positive weight per scale, got {self.weights}: "
                "use msssim_settings(shape, window)"
            )

    @property
    def scales(self) -> int:
        """Number of scales (each halves the volume)."""
        return len(self.weights)

    @property
    def data_range(self) -> float:
        """Width of the intensity window, in the images' units."""
        return self.window_high - self.window_low

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, for evaluation.json."""
        return {
            "implementation": "monai.metrics.regression.compute_ms_ssim",
            "kernel": "gaussian",
            "kernel_size": self.kernel_size,
            "kernel_sigma": self.kernel_sigma,
            "scales": self.scales,
            "weights": list(self.weights),
            "window": [self.window_low, self.window_high],
            "data_range": self.data_range,
            "k1": SSIM_K1,
            "k2": SSIM_K2,
        }


def _require_3d(name: str, array: np.ndarray) -> None:
    if array.ndim != SPATIAL_DIMS:
        raise RealismError(
            f"{name} must be a 3D (z, y, x) array, got shape {array.shape}: "
            "drop channel or batch axes first"
        )


def _require_same_shape(first: np.ndarray, second: np.ndarray, what: str) -> None:
    if first.shape != second.shape:
        raise RealismError(
            f"{what} have different shapes {first.shape} and {second.shape}: "
            "put both on the same grid (e.g. the release grid) first"
        )


def _require_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise RealismError(f"{name} holds NaN or infinite values: fix or leave out that case")


def _as_mask(body: np.ndarray) -> np.ndarray:
    if body.dtype == np.bool_:
        return body
    if np.issubdtype(body.dtype, np.integer):
        return body != 0
    raise RealismError(
        f"the body mask must be a bool or integer array, got {body.dtype}: "
        "threshold it first (e.g. mask > 0.5)"
    )


def body_mask(image: np.ndarray, data: DataConfig) -> np.ndarray:
    """The body of a real image, as in data preparation (:func:`common.data.crop.body_mask`).

    CT: voxels above ``data.ct-body-threshold-hu`` (air is below). MRI: voxels above
    ``data.mri-body-fraction`` times the image's 99th percentile (a robust maximum). Only the
    largest connected component is kept.

    Raises:
        RealismError: the image is not 3D or not finite, or no voxel is inside the body.
    """
    image = np.asarray(image)
    _require_3d("the image", image)
    _require_finite("the image", image)
    mask = crop.body_mask(image, data)
    if not mask.any():
        raise RealismError(
            f"no body found: no {data.modality} voxel is above the body threshold; check that "
            "the image is in real-world units (HU for CT) and data.modality is right"
        )
    return mask


def paired_mae(real: np.ndarray, synthetic: np.ndarray, body: np.ndarray) -> float:
    """Mean absolute error between ``real`` and ``synthetic`` over the voxels of ``body``.

    Raises:
        RealismError: shapes differ or are not 3D, the body is empty or not bool/integer, or a
            value inside the body is NaN or infinite.
    """
    real, synthetic, body = np.asarray(real), np.asarray(synthetic), np.asarray(body)
    _require_3d("the real image", real)
    _require_same_shape(real, synthetic, "the real and synthetic images")
    _require_same_shape(real, body, "the images and the body mask")
    mask = _as_mask(body)
    if not mask.any():
        raise RealismError(
            "the body mask is empty, so MAE has no voxels to average: compute it with "
            "body_mask(real, data) or check that the label map is not all background"
        )
    inside_real = real[mask].astype(np.float64)
    inside_synthetic = synthetic[mask].astype(np.float64)
    _require_finite("the real image", inside_real)
    _require_finite("the synthetic image", inside_synthetic)
    return float(np.mean(np.abs(inside_synthetic - inside_real)))


def _largest_kernel(side: int, scales: int) -> int:
    """The largest odd window (at most MONAI's 11) that fits ``side`` voxels over ``scales``.

    Two limits: the coarsest level (``side`` halved ``scales - 1`` times, rounding down like
    average pooling) must hold the window, and MONAI's own check, ``side // (scales - 1)^2 >=
    kernel``, must pass (stricter than the first for 4 scales, weaker for 2).
    """
    coarsest = side >> (scales - 1)
    monai_limit = side // max(1, scales - 1) ** 2
    limit = min(coarsest, monai_limit, MONAI_KERNEL_SIZE)
    return limit if limit % 2 == 1 else limit - 1


def _scale_weights(scales: int) -> tuple[float, ...]:
    """MONAI's weights for all five scales; for fewer, the finest ones renormalised to sum 1."""
    if scales == len(MONAI_WEIGHTS):
        return MONAI_WEIGHTS
    kept = MONAI_WEIGHTS[:scales]
    return tuple(weight / sum(kept) for weight in kept)


def msssim_settings(shape: Sequence[int], window: tuple[float, float]) -> MsssimSettings:
    """The MS-SSIM settings for volumes of ``shape`` (z, y, x) and an intensity ``window``.

    As many scales as fit (up to MONAI's 5), then the largest odd window up to 11 voxels that fits
    the coarsest scale; sigma keeps MONAI's ratio (1.5 for 11). Fewer than 5 scales keep MONAI's
    weights of the finest ones, renormalised to sum to 1 (1 scale is plain SSIM). The smallest
    side decides. Volumes of 176 voxels per side and more get exactly MONAI's defaults (MONAI
    rejects 161 to 175: its message says "larger than 160" but it tests ``side // 16 > 10``);
    128 -> 5 scales with a 7-voxel window, 64 -> 4 of 7, 32 -> 3 of 7, 16 -> 2 of 7.

    ``window`` is (low, high): e.g. (data.ct-window-min, data.ct-window-max) in HU for CT, the
    intensity range of the images for MRI.

    Raises:
        RealismError: ``shape`` is not three positive sides, a side is below 5 voxels, or the
            window is not finite with low < high.
    """
    sides = tuple(int(side) for side in shape)
    if len(sides) != SPATIAL_DIMS or min(sides) < 1:
        raise RealismError(f"MS-SSIM needs a 3D shape (z, y, x) of positive sides, got {shape}")
    side = min(sides)
    for scales in range(len(MONAI_WEIGHTS), 0, -1):
        kernel = _largest_kernel(side, scales)
        if kernel >= MIN_KERNEL_SIZE:
            return MsssimSettings(
                kernel_size=kernel,
                kernel_sigma=MONAI_KERNEL_SIGMA * kernel / MONAI_KERNEL_SIZE,
                weights=_scale_weights(scales),
                window_low=float(window[0]),
                window_high=float(window[1]),
            )
    raise RealismError(
        f"volumes of shape {sides} are too small for MS-SSIM: every side needs at least "
        f"{MIN_KERNEL_SIZE} voxels; evaluate on a larger grid"
    )


def _fits(shape: tuple[int, ...], settings: MsssimSettings) -> bool:
    return all(_largest_kernel(side, settings.scales) >= settings.kernel_size for side in shape)


def _to_tensor(volume: np.ndarray, settings: MsssimSettings) -> torch.Tensor:
    """The volume clipped to the window and mapped onto [0, 1], as a (1, 1, z, y, x) tensor."""
    values = np.clip(volume.astype(np.float64), settings.window_low, settings.window_high)
    scaled = ((values - settings.window_low) / settings.data_range).astype(np.float32)
    return torch.from_numpy(scaled)[None, None]


def msssim(a: np.ndarray, b: np.ndarray, settings: MsssimSettings) -> float:
    """3D MS-SSIM of two volumes (1 = identical), with MONAI's ``compute_ms_ssim``.

    Raises:
        RealismError: shapes differ or are not 3D, a value is NaN or infinite, or ``settings``
            were chosen for a larger volume than these.
    """
    a, b = np.asarray(a), np.asarray(b)
    _require_3d("each volume", a)
    _require_same_shape(a, b, "the two volumes")
    if not _fits(a.shape, settings):
        raise RealismError(
            f"MS-SSIM with {settings.scales} scales and a {settings.kernel_size}-voxel window "
            f"does not fit volumes of shape {a.shape}: use msssim_settings({a.shape}, window)"
        )
    _require_finite("the first volume", a)
    _require_finite("the second volume", b)
    with torch.inference_mode():
        value = compute_ms_ssim(
            _to_tensor(a, settings),
            _to_tensor(b, settings),
            spatial_dims=SPATIAL_DIMS,
            data_range=1.0,
            kernel_type="gaussian",
            kernel_size=settings.kernel_size,
            kernel_sigma=settings.kernel_sigma,
            k1=SSIM_K1,
            k2=SSIM_K2,
            weights=settings.weights,
        )
    return float(value.item())


def _require_one_shape(volumes: Sequence[np.ndarray], what: str) -> None:
    shapes = {np.shape(volume) for volume in volumes}
    if len(shapes) > 1:
        raise RealismError(
            f"{what} have different shapes {sorted(shapes)}: put them on one grid first"
        )


def paired_msssim(
    reals: Sequence[np.ndarray], synthetics: Sequence[np.ndarray], settings: MsssimSettings
) -> list[float]:
    """MS-SSIM of each real volume with the synthetic one generated for its label map.

    Raises:
        RealismError: the lists are empty or of different lengths, or :func:`msssim` fails.
    """
    if len(reals) != len(synthetics):
        raise RealismError(
            f"{len(reals)} real and {len(synthetics)} synthetic volumes: paired MS-SSIM needs "
            "one synthetic volume per real label map, in the same order"
        )
    if not reals:
        raise RealismError("no pairs given: paired MS-SSIM needs at least one real volume")
    _require_one_shape([*reals, *synthetics], "the volumes")
    pairs = zip(reals, synthetics, strict=True)
    return [msssim(real, synthetic, settings) for real, synthetic in pairs]


def sample_pairs(count: int, max_pairs: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """Index pairs (i < j) of ``count`` items: all of them, or ``max_pairs`` drawn with ``seed``.

    Raises:
        RealismError: fewer than 2 items, or ``max_pairs`` below 1.
    """
    if count < 2:
        raise RealismError(
            f"within-set MS-SSIM needs at least 2 volumes, got {count}: add volumes to the set"
        )
    if max_pairs is not None and max_pairs < 1:
        raise RealismError(f"max_pairs must be at least 1 (or None for all pairs), got {max_pairs}")
    pairs = list(itertools.combinations(range(count), 2))
    if max_pairs is None or max_pairs >= len(pairs):
        return pairs
    chosen = np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False)
    return [pairs[int(index)] for index in np.sort(chosen)]


def pairwise_msssim(
    volumes: Sequence[np.ndarray],
    settings: MsssimSettings,
    max_pairs: int | None = None,
    seed: int = 0,
) -> list[float]:
    """MS-SSIM of every pair within one set, or of ``max_pairs`` pairs drawn with ``seed``
    (see :func:`sample_pairs`), in the order of the pairs.

    Raises:
        RealismError: fewer than 2 volumes, ``max_pairs`` below 1, shapes differ, or
            :func:`msssim` fails.
    """
    pairs = sample_pairs(len(volumes), max_pairs, seed)
    _require_one_shape(volumes, "the volumes of the set")
    return [msssim(volumes[i], volumes[j], settings) for i, j in pairs]


def diversity(
    volumes: Sequence[np.ndarray],
    settings: MsssimSettings,
    max_pairs: int | None = None,
    seed: int = 0,
) -> float:
    """Mean pairwise MS-SSIM within one set (1 = all alike, i.e. mode collapse): the mean of
    :func:`pairwise_msssim` (same arguments, same errors)."""
    return float(np.mean(pairwise_msssim(volumes, settings, max_pairs, seed)))
