"""The sampled tumour volume calibrated to the sites' (``model.tumour-calibration-cases``).

A class-probabilities denoiser trained for minutes places a tumour on a knife edge. Measured on
the quality-mri validation split (800 steps): tumour loss weight 1x drew 45 tumour voxels a
case, 2x 360, 3x 1,455, against 415 real; and runs from other training seeds at 2x drew 4 to 6
times the real volume. The sampled volume grows with a shift added to the tumour classes'
logits (``model.tumour-logit-shift``), so after training the shift is searched on the final
model until the mean tumour volume of a few samples matches the training cases' mean: the
secant method on ``log(1 + volume)``, kept inside a bracket once one is found, every try
sampled from the same seed (common random numbers, so that the tries differ by the shift
alone). Only synthetic cases are sampled; of the sites' data it needs one number per site,
their mean tumour volume, which is why it is off under DP-SGD (which does not cover it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from common.config import FedsynthConfig
from common.data.dataset import CachedCases
from common.data.schema import schema_for
from common.models.diffusion import DiffusionModel
from common.models.interface import GenerativeModel
from common.seeding import torch_generator

FIRST_SLOPE = 2.0
"""The second shift tried assumes that ``log(1 + volume)`` changes this much per unit of shift
(a quality-mri model, bench seed 1: 924 tumour voxels at shift 0, 103 at -1, a slope of 2.2)."""
SHIFT_BOUND = 8.0
"""Shifts are searched within +-SHIFT_BOUND (beyond it a class is always or never drawn)."""


@dataclass(frozen=True)
class Calibration:
    """The search's outcome: the chosen shift, its sampled volume, every (shift, volume) tried."""

    target: float
    shift: float
    volume: float
    tried: list[tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the run summary's ``calibration``)."""
        return {
            "target_tumour_voxels": self.target,
            "tumour_logit_shift": self.shift,
            "sampled_tumour_voxels": self.volume,
            "tried": [[shift, volume] for shift, volume in self.tried],
        }


def mean_tumour_voxels(labels: Iterable[torch.Tensor], tumour_values: Sequence[int]) -> float:
    """The mean count of tumour voxels (any label in ``tumour_values``) over label maps."""
    counts = [float(torch.isin(label, torch.tensor(list(tumour_values))).sum()) for label in labels]
    if not counts:
        raise ValueError("no label maps to count tumour voxels in")
    return sum(counts) / len(counts)


def site_tumour_voxels(cases: CachedCases, config: FedsynthConfig) -> float:
    """The mean tumour voxels of a site's prepared training cases (what it sends)."""
    labels = (cases[i][1] for i in range(len(cases)))
    return mean_tumour_voxels(labels, schema_for(config.data.modality).tumour_values)


def search_shift(
    volume_at: Callable[[float], float], target: float, *, tolerance: float, tries: int
) -> Calibration:
    """The shift whose ``volume_at`` is within ``tolerance`` (relative, on 1 + volume) of
    ``target``, after at most ``tries`` evaluations; else the closest one tried."""
    if target < 0 or tries < 1:
        raise ValueError(f"target {target} must be >= 0 and tries {tries} >= 1")
    tried: list[tuple[float, float]] = []

    def gap(shift: float) -> float:
        volume = float(volume_at(shift))
        tried.append((shift, volume))
        return math.log1p(volume) - math.log1p(target)

    close = math.log1p(tolerance)
    points = [(0.0, gap(0.0))]
    while abs(points[-1][1]) > close and len(points) < tries:
        shift = _next_shift(points)
        if any(shift == done for done, _ in points):
            break  # at a bound, or the search stalled: more tries would repeat one
        points.append((shift, gap(shift)))
    best = min(points, key=lambda point: abs(point[1]))
    return Calibration(target, best[0], dict(tried)[best[0]], tried)


def _next_shift(points: list[tuple[float, float]]) -> float:
    """The secant step from the last two points (from one point: a step of FIRST_SLOPE),
    bisecting the tightest bracket when the step leaves it, within SHIFT_BOUND."""
    shift, value = points[-1]
    if len(points) == 1:
        return max(-SHIFT_BOUND, min(SHIFT_BOUND, shift - value / FIRST_SLOPE))
    previous, before = points[-2]
    if value == before:  # flat (no tumour drawn at either): go twice as far
        candidate = shift - math.copysign(2 * abs(shift - previous), value)
    else:
        candidate = shift - value * (shift - previous) / (value - before)
    below = [s for s, v in points if v < 0]  # shifts whose volume is under the target
    above = [s for s, v in points if v > 0]
    if below and above:
        low, high = sorted((max(below), min(above)))
        if not low < candidate < high:
            candidate = (low + high) / 2
    return max(-SHIFT_BOUND, min(SHIFT_BOUND, candidate))


def calibrate_tumour_volume(
    model: GenerativeModel, config: FedsynthConfig, target: float
) -> tuple[FedsynthConfig, Calibration]:
    """Search ``model.tumour-logit-shift`` on the trained ``model`` so that the mean tumour
    volume of ``model.tumour-calibration-cases`` samples matches ``target`` (voxels a case);
    the config with the chosen shift (which the model keeps for sampling) and the search."""
    if not isinstance(model, DiffusionModel):  # pragma: no cover - a config rule prevents it
        raise TypeError(f"only the diffusion family calibrates, not {model.family}")
    cases = config.model.tumour_calibration_cases
    tumour_values = schema_for(config.data.modality).tumour_values

    def volume_at(shift: float) -> float:
        model.config = dataclasses.replace(config.model, tumour_logit_shift=shift)
        pairs = model.sample(cases, torch_generator(config.seed, "tumour-calibration"))
        return mean_tumour_voxels(pairs.label.cpu(), tumour_values)

    found = search_shift(
        volume_at,
        target,
        tolerance=config.model.tumour_calibration_tolerance,
        tries=config.model.tumour_calibration_tries,
    )
    calibrated = dataclasses.replace(
        config, model=dataclasses.replace(config.model, tumour_logit_shift=found.shift)
    )
    model.config = calibrated.model
    return calibrated, found
