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

A glioma's labels share that volume unevenly: bench seed 1 (quality-mri), calibrated to the
union's 293 voxels, drew oedema at 1.07x the held-out cases', enhancing tumour at 1.34x and
no necrotic core at all (7.5 voxels a case in the real ones); and every other label is
drawn with a bias of its own (thin bone, under an argmax, too little). With
``model.label-calibration-tries`` the search goes on, one group of labels after another (the
schema's ``calibration_groups``; mri: the tumour core inside the union, then the necrotic core
inside the core, then the oedema; ct: bone, then the tumour): the same one-shift search on the
group's volume, its shift added to the group's labels' logits on top of the shifts found before
(``model.label-logit-shifts``). A nested group moves voxels mostly between itself and its
parent, but not only (the shifts act at every sampling step), so when a group is still off
target after a pass, a second pass searches each group again. Searching every label at once did
not work: the labels compete for the same voxels, and on quality-mri bench seed 1 the
simultaneous steps traded them off (0-151 necrotic voxels a try against 10) until the release
drew 0.33x the oedema. Every label is in a group: lowering a quality-mri GAN's core (bench seed
2) sent its voxels to the background, not to the oedema, and with only the core and the
necrotic core searched its release drew 180 tumour voxels a case against 370, the oedema at
0.29x; the oedema's own search, last, makes up the union. Each site then sends one mean per
label.

With ``model.tumour-presence-redraws`` every calibration sample draws its tumour's presence
first, as the release does (``common.models.presence``), at the sites' rate (each site then
also sends the fraction of its cases with a tumour), so that the shifts match the volumes of
the cases that have one instead of trading presence against size.

The GAN's label generator draws its label maps from class logits too, and drifts the same way:
on the quality-ct validation split, after 1,650 steps, bone at 2.2x and tumour at 3.3x the
held-out volume. Its logits are shifted and searched exactly as the denoiser's, at one forward
pass a sample.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from common.config import FedsynthConfig
from common.data.dataset import CachedCases
from common.data.schema import schema_for
from common.exchange import TUMOUR_PRESENT_KEY, TUMOUR_VOXELS_KEY, label_voxels_key
from common.models.interface import GenerativeModel
from common.models.presence import has_tumour, sample_with_presence
from common.seeding import torch_generator

FIRST_SLOPE = 2.0
"""The second shift tried assumes that ``log(1 + volume)`` changes this much per unit of shift
(a quality-mri model, bench seed 1: 924 tumour voxels at shift 0, 103 at -1, a slope of 2.2)."""
GROUP_PASSES = 2
"""Passes over the calibration groups: a group's step moves the groups searched before it
(bench seed 2, quality-mri: the necrotic core's step drew the enhancing tumour down from 1.09x
to 0.71x its target), so a second pass runs when any group is still off target."""
SHIFT_BOUND = 8.0
"""Shifts are searched within +-SHIFT_BOUND (beyond it a class is always or never drawn)."""


@dataclass(frozen=True)
class VolumeTargets:
    """What the calibration matches: the sites' mean tumour voxels a case, with
    ``model.label-calibration-tries`` each label's (label value -> voxels), and with
    ``model.tumour-presence-redraws`` the fraction of cases with a tumour (sampled with it)."""

    tumour: float
    labels: dict[int, float] = dataclasses.field(default_factory=dict)
    presence: float | None = None


@dataclass(frozen=True)
class GroupSearch:
    """One group's search: its label values and the one-shift search on its volume."""

    labels: tuple[int, ...]
    search: Calibration


@dataclass(frozen=True)
class LabelCalibration:
    """The per-label search: targets, the chosen shifts and their volumes (label order),
    every (shifts, volumes) sampled, the union's chosen shift first (shifts all 0), and each
    group's search in order."""

    targets: tuple[float, ...]
    shifts: tuple[float, ...]
    volumes: tuple[float, ...]
    tried: list[tuple[tuple[float, ...], tuple[float, ...]]]
    groups: tuple[GroupSearch, ...]


@dataclass(frozen=True)
class Calibration:
    """The search's outcome: the chosen shift, its sampled volume, every (shift, volume) tried,
    the per-label search when one ran, and the tumour presence sampled with (when set)."""

    target: float
    shift: float
    volume: float
    tried: list[tuple[float, float]]
    labels: LabelCalibration | None = None
    presence: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the run summary's ``calibration``)."""
        out: dict[str, Any] = {
            "target_tumour_voxels": self.target,
            "tumour_logit_shift": self.shift,
            "sampled_tumour_voxels": self.volume,
            "tried": [[shift, volume] for shift, volume in self.tried],
        }
        if self.presence is not None:
            out["tumour_presence"] = self.presence
        if self.labels is not None:
            found = self.labels
            out["labels"] = {
                "target_voxels": list(found.targets),
                "logit_shifts": list(found.shifts),
                "sampled_voxels": list(found.volumes),
                "tried": [[list(shifts), list(volumes)] for shifts, volumes in found.tried],
                "groups": [
                    {"labels": list(group.labels), **group.search.to_json()}
                    for group in found.groups
                ],
            }
        return out


def mean_voxels(labels: Iterable[torch.Tensor], values: Sequence[int]) -> float:
    """The mean count of voxels of any label in ``values`` over label maps."""
    counts = [float(torch.isin(label, torch.tensor(list(values))).sum()) for label in labels]
    if not counts:
        raise ValueError("no label maps to count voxels in")
    return sum(counts) / len(counts)


def label_values(config: FedsynthConfig) -> tuple[int, ...]:
    """Every label value of the modality's schema, background left out, rising."""
    return tuple(sorted(schema_for(config.data.modality).labels.values()))


def site_volume_metrics(cases: CachedCases, config: FedsynthConfig) -> dict[str, float]:
    """What a site sends for the calibration: the mean tumour voxels of its prepared training
    cases, with ``model.label-calibration-tries`` each label's mean, and with
    ``model.tumour-presence-redraws`` the fraction of its cases that have a tumour."""
    labels = [cases[i][1] for i in range(len(cases))]
    tumour_values = schema_for(config.data.modality).tumour_values
    metrics = {TUMOUR_VOXELS_KEY: mean_voxels(labels, tumour_values)}
    if config.model.tumour_presence_redraws > 0:
        present = has_tumour(torch.stack(labels), tumour_values)
        metrics[TUMOUR_PRESENT_KEY] = float(present.float().mean())
    if config.model.label_calibration_tries > 0:
        for value in label_values(config):
            metrics[label_voxels_key(value)] = mean_voxels(labels, (value,))
    return metrics


def volume_targets(metrics: Mapping[str, float], config: FedsynthConfig) -> VolumeTargets | None:
    """The targets in (aggregated) site metrics, or None when one the config needs is missing."""
    if TUMOUR_VOXELS_KEY not in metrics:
        return None
    presence = None
    if config.model.tumour_presence_redraws > 0:
        if TUMOUR_PRESENT_KEY not in metrics:
            return None
        presence = float(metrics[TUMOUR_PRESENT_KEY])
    labels: dict[int, float] = {}
    if config.model.label_calibration_tries > 0:
        for value in label_values(config):
            key = label_voxels_key(value)
            if key not in metrics:
                return None
            labels[value] = float(metrics[key])
    return VolumeTargets(float(metrics[TUMOUR_VOXELS_KEY]), labels, presence)


def _gap(volume: float, target: float) -> float:
    return math.log1p(volume) - math.log1p(target)


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
        return _gap(volume, target)

    close = math.log1p(tolerance)
    points = [(0.0, gap(0.0))]
    while abs(points[-1][1]) > close and len(points) < tries:
        shift = _next_shift(points)
        if any(shift == done for done, _ in points):
            break  # at a bound, or the search stalled: more tries would repeat one
        points.append((shift, gap(shift)))
    best = min(points, key=lambda point: abs(point[1]))
    return Calibration(target, best[0], dict(tried)[best[0]], tried)


def search_label_shifts(
    volumes_at: Callable[[tuple[float, ...]], Sequence[float]],
    values: Sequence[int],
    targets: Sequence[float],
    first: Sequence[float],
    groups: Sequence[tuple[int, ...]],
    *,
    tolerance: float,
    tries: int,
) -> LabelCalibration:
    """Per-label shifts (label ``values``, from all 0, whose volumes are ``first``) found one
    group after another: each group's shift, added to its labels' on top of the earlier
    groups', is searched by :func:`search_shift` until the group's volume is within
    ``tolerance`` of the sum of its labels' ``targets``, in at most ``tries`` more samples
    a group, and the closest try is kept; the groups are searched again (up to GROUP_PASSES
    passes) while any group is off its target."""
    count = len(values)
    if len(first) != count or len(targets) != count or any(t < 0 for t in targets):
        raise ValueError(f"targets {list(targets)} and first volumes {list(first)} must pair up")
    if tries < 0 or any(value not in values for group in groups for value in group):
        raise ValueError(f"groups {list(groups)} must hold label values of {list(values)}")
    shifts = (0.0,) * count
    sampled = {shifts: tuple(float(v) for v in first)}
    tried = [(shifts, sampled[shifts])]

    def volumes(trial: tuple[float, ...]) -> tuple[float, ...]:
        if trial not in sampled:
            sampled[trial] = tuple(float(v) for v in volumes_at(trial))
            tried.append((trial, sampled[trial]))
        return sampled[trial]

    members = [[values.index(value) for value in group] for group in groups]
    group_targets = [sum(targets[i] for i in indices) for indices in members]
    close = math.log1p(tolerance)

    def all_close() -> bool:
        drawn = sampled[shifts]
        return all(
            abs(_gap(sum(drawn[i] for i in indices), target)) <= close
            for indices, target in zip(members, group_targets, strict=True)
        )

    searches: list[GroupSearch] = []
    for _ in range(GROUP_PASSES):
        if searches and all_close():
            break
        for group, indices, target in zip(groups, members, group_targets, strict=True):
            found = search_shift(
                _group_volume(volumes, shifts, indices),
                target,
                tolerance=tolerance,
                tries=tries + 1,  # its first, at the shifts found so far, is sampled already
            )
            shifts = _moved(shifts, indices, found.shift)
            searches.append(GroupSearch(tuple(group), found))
    return LabelCalibration(
        tuple(float(t) for t in targets), shifts, sampled[shifts], tried, tuple(searches)
    )


def _moved(shifts: tuple[float, ...], members: Sequence[int], by: float) -> tuple[float, ...]:
    return tuple(s + by if i in members else s for i, s in enumerate(shifts))


def _group_volume(
    volumes: Callable[[tuple[float, ...]], tuple[float, ...]],
    shifts: tuple[float, ...],
    members: Sequence[int],
) -> Callable[[float], float]:
    """The group's sampled volume as a function of its own shift on top of ``shifts``."""
    return lambda by: sum(volumes(_moved(shifts, members, by))[i] for i in members)


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
    model: GenerativeModel, config: FedsynthConfig, targets: VolumeTargets
) -> tuple[FedsynthConfig, Calibration]:
    """Search ``model.tumour-logit-shift`` on the trained ``model`` so that the mean tumour
    volume of ``model.tumour-calibration-cases`` samples matches ``targets.tumour`` (voxels a
    case), then, with ``targets.labels``, ``model.label-logit-shifts`` so that each
    calibration group's does; with ``targets.presence`` every sample draws its tumour's
    presence at that rate first (``model.tumour-presence``, as the release will). The config
    with the chosen settings (which the model keeps for sampling) and the search."""
    cases = config.model.tumour_calibration_cases
    tumour_values = schema_for(config.data.modality).tumour_values
    values = label_values(config)
    if targets.presence is not None:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, tumour_presence=targets.presence)
        )
    sampled: dict[tuple[float, str], list[float]] = {}  # (shift, label shifts) -> volumes

    def volumes_at(shift: float, own: str = "") -> list[float]:
        model.config = dataclasses.replace(
            config.model, tumour_logit_shift=shift, label_logit_shifts=own
        )
        pairs = sample_with_presence(
            model, cases, torch_generator(config.seed, "tumour-calibration")
        )
        labels = pairs.label.cpu()
        volumes = [mean_voxels(labels, (value,)) for value in values]
        sampled[(shift, own)] = volumes
        return volumes

    def tumour_volume(volumes: Sequence[float]) -> float:
        return sum(v for value, v in zip(values, volumes, strict=True) if value in tumour_values)

    found = search_shift(
        lambda shift: tumour_volume(volumes_at(shift)),
        targets.tumour,
        tolerance=config.model.tumour_calibration_tolerance,
        tries=config.model.tumour_calibration_tries,
    )
    chosen = dataclasses.replace(config.model, tumour_logit_shift=found.shift)
    if targets.labels:
        per_label = search_label_shifts(
            lambda shifts: volumes_at(found.shift, _listed(shifts)),
            values,
            [targets.labels[value] for value in values],
            sampled[(found.shift, "")],
            schema_for(config.data.modality).calibration_groups,
            tolerance=config.model.tumour_calibration_tolerance,
            tries=config.model.label_calibration_tries,
        )
        found = dataclasses.replace(found, labels=per_label)
        chosen = dataclasses.replace(chosen, label_logit_shifts=_listed(per_label.shifts))
    found = dataclasses.replace(found, presence=targets.presence)
    model.config = chosen
    return dataclasses.replace(config, model=chosen), found


def _listed(shifts: Sequence[float]) -> str:
    """Shifts as ``model.label-logit-shifts`` spells them ('' when all are 0)."""
    return ",".join(f"{shift:.6g}" for shift in shifts) if any(shifts) else ""
