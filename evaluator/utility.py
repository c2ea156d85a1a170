"""Segmentation utility of a synthetic release, measured as the study fedsynth follows did:
train one fixed segmentation recipe on (a) real training cases, (b) synthetic cases only,
(c) real + synthetic, and test each on held-out real cases, per structure, over several seeds.

Metrics per test case and structure (a structure is a set of label values, e.g. tumour =
{1, 2, 3} in BraTS), with MONAI's ``compute_dice`` and ``compute_hausdorff_distance``
(``percentile=95``, Euclidean, in mm from the voxel spacing):

* both masks non-empty: Dice and HD95 as measured;
* both masks empty: Dice 1 (nothing to find and nothing found; BraTS' convention), no HD95;
* exactly one mask empty (the structure missed, or found where there is none): Dice 0, no
  HD95 (there is no surface to measure to).

Per seed a structure's Dice is the mean over all test cases; its HD95 the mean over the cases
where both masks are non-empty (``nan`` when there is none), and the cases where exactly one is
empty are counted beside it (``unmatched``): a mean HD95 that silently included them would be
infinite, one that silently dropped them would flatter a model that misses structures. Across
seeds: the mean and population standard deviation (0 for one seed), of HD95 over the seeds that
measured one. Every arm trains with the same seeds, so arms differ only in their training data.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from common.data.schema import LabelSchema, schema_for
from common.errors import ConfigError
from common.strict_json import json_ready
from evaluator.segmentation import (
    Array,
    Case,
    IterationCallback,
    SegmentationInputError,
    SegmentationRecipe,
    predict,
    stack_cases,
    train_segmenter,
)

ARMS = ("real", "synthetic", "real+synthetic")
"""The training sets compared, in table order."""

NOT_ASKED_ARM = "not asked for (evaluation.utility-arms)"
HD95_PERCENTILE = 95.0
"""HD95: the 95th percentile of the symmetric surface distances."""

# Dice of segmentation models trained on synthetic cases only and tested on real ones, from
# Ferreira et al., "Enhancing Privacy: The Utility of Stand-Alone Synthetic CT and MRI for
# Tumor and Bone Segmentation", arXiv:2506.12106 (2025), abstract: tumour DSC 0.064 on
# head-and-neck CT and 0.834 on brain glioma MRI, bone mean DSC 0.841 on CT.
STUDY_DICE: dict[str, dict[str, float]] = {
    "mri": {"tumour": 0.834},
    "ct": {"tumour": 0.064, "bone": 0.841},
}

Structures = Mapping[str, Collection[int]]
"""Structure name -> the label values whose union it is, e.g. {"tumour": {1, 2, 3}}."""
ProgressCallback = Callable[[int, int, str], None]
"""Called after every training iteration with (iterations done, iterations of the whole
study, what is training, e.g. "synthetic, seed 1"); a model is tested before the next starts."""


def schema_structures(modality: str) -> dict[str, frozenset[int]]:
    """The structures of a modality's label schema (its regions): CT tumour and bone; MRI
    tumour, tumour core and enhancing tumour."""
    return {name: frozenset(values) for name, values in _schema(modality).regions.items()}


def schema_num_classes(modality: str) -> int:
    """Classes of a modality's segmentation: its labels plus background."""
    return len(_schema(modality).labels) + 1


def _schema(modality: str) -> LabelSchema:
    return schema_for(_checked_modality(modality))


def _checked_modality(modality: str) -> str:
    if modality not in STUDY_DICE:
        known = ", ".join(sorted(STUDY_DICE))
        raise ConfigError(f"modality = {modality!r} is not one of {known}")
    return modality


@dataclass(frozen=True)
class CaseScore:
    """One structure in one test case."""

    dice: float
    hd95: float
    """In mm; ``nan`` unless both masks are non-empty."""
    unmatched: bool = False
    """Exactly one of the masks is empty: the structure was missed, or found where none is."""


def _mask(label: Array) -> torch.Tensor:
    """A mask as MONAI's metrics take it: (batch 1, channel 1, z, y, x), any non-zero true."""
    return _labels(label).to(torch.bool)[None, None]


def score_masks(prediction: Array, truth: Array, spacing: Sequence[float]) -> CaseScore:
    """Dice and HD95 (mm; ``spacing`` in the arrays' axis order) of two binary masks, with the
    empty-mask conventions of this module."""
    predicted, actual = _mask(prediction), _mask(truth)
    if predicted.shape != actual.shape:
        raise SegmentationInputError(
            f"prediction {tuple(predicted.shape[2:])} and truth {tuple(actual.shape[2:])} differ"
        )
    has_prediction, has_truth = bool(predicted.any()), bool(actual.any())
    if not has_prediction and not has_truth:
        return CaseScore(dice=1.0, hd95=math.nan)
    if has_prediction != has_truth:
        return CaseScore(dice=0.0, hd95=math.nan, unmatched=True)
    dice = compute_dice(predicted.float(), actual.float(), include_background=True)
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal call
        warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)
        hd95 = compute_hausdorff_distance(
            predicted.float(),
            actual.float(),
            include_background=True,
            percentile=HD95_PERCENTILE,
            spacing=[float(s) for s in spacing],
        )
    return CaseScore(dice=float(dice), hd95=float(hd95))


def score_case(
    prediction: Array, truth: Array, structures: Structures, spacing: Sequence[float]
) -> dict[str, CaseScore]:
    """Dice and HD95 of every structure of one case (label maps of the same grid)."""
    predicted, actual = _labels(prediction), _labels(truth)
    return {
        name: score_masks(_member(predicted, values), _member(actual, values), spacing)
        for name, values in structures.items()
    }


def _labels(label: Array) -> torch.Tensor:
    return torch.as_tensor(label) if isinstance(label, np.ndarray) else label.detach().cpu()


def _member(labels: torch.Tensor, values: Collection[int]) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(sorted(values), dtype=labels.dtype))


@dataclass(frozen=True)
class StructureStats:
    """One structure of one arm: per-seed means over the test cases, and their summary."""

    dice_per_seed: tuple[float, ...]
    hd95_per_seed: tuple[float, ...]
    """Mean HD95 (mm) over the test cases with both masks non-empty; ``nan`` for none."""
    unmatched_per_seed: tuple[int, ...]
    """Test cases per seed where exactly one mask is empty (no HD95 for them)."""

    @property
    def dice_mean(self) -> float:
        """Mean Dice over seeds."""
        return float(np.mean(self.dice_per_seed))

    @property
    def dice_std(self) -> float:
        """Population standard deviation of Dice over seeds."""
        return float(np.std(self.dice_per_seed))

    @property
    def hd95_mean(self) -> float:
        """Mean HD95 (mm) over the seeds that measured one; ``nan`` when none did."""
        values = self._measured_hd95()
        return float(np.mean(values)) if values.size else math.nan

    @property
    def hd95_std(self) -> float:
        """Population standard deviation of HD95 over the seeds that measured one."""
        values = self._measured_hd95()
        return float(np.std(values)) if values.size else math.nan

    def _measured_hd95(self) -> np.ndarray:
        values = np.asarray(self.hd95_per_seed, dtype=np.float64)
        return values[~np.isnan(values)]


@dataclass(frozen=True)
class ArmResult:
    """One training set: what it scored per structure, or why it was not computed."""

    name: str
    training_cases: int
    structures: dict[str, StructureStats] = field(default_factory=dict)
    train_seconds: tuple[float, ...] = ()
    reason: str = ""
    """Why the arm was not computed; empty when it was."""

    @property
    def computed(self) -> bool:
        """True when models were trained and tested for this arm."""
        return not self.reason


@dataclass(frozen=True)
class UtilityResult:
    """The whole study: every arm, the settings it ran with, and the synthetic/real ratios."""

    arms: dict[str, ArmResult]
    seeds: tuple[int, ...]
    test_cases: int
    spacing: tuple[float, ...]
    structures: dict[str, tuple[int, ...]]
    recipe: SegmentationRecipe
    min_real_dice: float = 0.0

    def dice_ratio(self, structure: str) -> float | None:
        """Synthetic-only over real-only mean Dice; None (undefined) when either arm was not
        computed or the real arm did not learn the structure (Dice 0, or under
        ``min_real_dice``: ``evaluation.min-real-dice``)."""
        real, synthetic = self.arms["real"], self.arms["synthetic"]
        if not (real.computed and synthetic.computed):
            return None
        denominator = real.structures[structure].dice_mean
        if denominator == 0 or denominator < self.min_real_dice:
            return None
        return synthetic.structures[structure].dice_mean / denominator

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary; ``inf`` and ``nan`` are written as the strings "inf", "nan"."""
        return {
            "seeds": list(self.seeds),
            "test_cases": self.test_cases,
            "spacing_zyx_mm": list(self.spacing),
            "structures": {name: list(values) for name, values in self.structures.items()},
            "recipe": json_ready(asdict(self.recipe)),
            "arms": {name: _arm_json(arm) for name, arm in self.arms.items()},
            "synthetic_over_real_dice": {
                name: json_ready(self.dice_ratio(name)) for name in self.structures
            },
        }


def _arm_json(arm: ArmResult) -> dict[str, Any]:
    summary: dict[str, Any] = {"computed": arm.computed, "training_cases": arm.training_cases}
    if not arm.computed:
        summary["reason"] = arm.reason
        return summary
    summary["train_seconds"] = list(arm.train_seconds)
    summary["structures"] = {
        name: {
            "dice_mean": stats.dice_mean,
            "dice_std": stats.dice_std,
            "dice_per_seed": list(stats.dice_per_seed),
            "hd95_mm_mean": stats.hd95_mean,
            "hd95_mm_std": stats.hd95_std,
            "hd95_mm_per_seed": list(stats.hd95_per_seed),
            "unmatched_cases_per_seed": list(stats.unmatched_per_seed),
        }
        for name, stats in arm.structures.items()
    }
    return json_ready(summary)  # type: ignore[no-any-return]


def utility_study(
    real_train: Sequence[Case],
    real_test: Sequence[Case],
    synthetic: Sequence[Case],
    structures: Structures,
    recipe: SegmentationRecipe,
    seeds: Sequence[int],
    num_classes: int,
    spacing: Sequence[float],
    device: str | torch.device = "auto",
    on_progress: ProgressCallback | None = None,
    arms: Collection[str] = ARMS,
    min_real_dice: float = 0.0,
) -> UtilityResult:
    """Train the recipe on each arm's cases once per seed and test every model on
    ``real_test``; an arm without training cases, or not among ``arms``, is reported as not
    computed, with the reason.

    ``spacing`` is the common grid's voxel size in mm in the arrays' axis order (z, y, x), i.e.
    ``data.target-spacing`` (written x, y, z) reversed.

    Raises:
        SegmentationInputError: no test case; a case unusable (see
            :func:`evaluator.segmentation.stack_cases`); sets on different grids.
        ConfigError: no seed, a repeated or negative seed; no structure, or one with no label
            value or a value outside ``1..num_classes - 1``; spacing not three positive numbers.
    """
    checked_seeds = _checked_seeds(seeds)
    checked_structures = _checked_structures(structures, num_classes)
    checked_spacing = _checked_spacing(spacing)
    test = _grid_cases(real_test, num_classes, recipe, "real test cases", None)
    grid = tuple(test[0][0].shape)
    real = _grid_cases(real_train, num_classes, recipe, "real training cases", grid)
    fake = _grid_cases(synthetic, num_classes, recipe, "synthetic cases", grid)
    training = {"real": real, "synthetic": fake, "real+synthetic": [*real, *fake]}
    reasons = _arm_reasons(bool(real), bool(fake))
    for arm in ARMS:
        if arm not in arms:
            reasons[arm] = NOT_ASKED_ARM
    computed = [arm for arm in ARMS if not reasons[arm]]
    run = _Run(
        recipe,
        num_classes,
        checked_structures,
        checked_spacing,
        device,
        on_progress,
        len(computed) * len(checked_seeds) * recipe.iterations,
    )
    results = {
        arm: ArmResult(arm, len(training[arm]), reason=reasons[arm])
        if reasons[arm]
        else run.arm(arm, training[arm], test, checked_seeds, computed.index(arm))
        for arm in ARMS
    }
    return UtilityResult(
        arms=results,
        seeds=checked_seeds,
        test_cases=len(test),
        spacing=checked_spacing,
        structures=checked_structures,
        recipe=recipe,
        min_real_dice=min_real_dice,
    )


@dataclass(frozen=True)
class _Run:
    """The settings every model of a study shares, and its progress reporting."""

    recipe: SegmentationRecipe
    num_classes: int
    structures: dict[str, tuple[int, ...]]
    spacing: tuple[float, ...]
    device: str | torch.device
    on_progress: ProgressCallback | None
    total_iterations: int

    def arm(
        self,
        name: str,
        cases: list[tuple[torch.Tensor, torch.Tensor]],
        test: list[tuple[torch.Tensor, torch.Tensor]],
        seeds: tuple[int, ...],
        position: int,
    ) -> ArmResult:
        """Train on ``cases`` once per seed and score every model on ``test``; ``position``
        is the arm's place among the computed arms (for progress)."""
        per_seed: list[list[dict[str, CaseScore]]] = []
        seconds: list[float] = []
        for index, seed in enumerate(seeds):
            offset = (position * len(seeds) + index) * self.recipe.iterations
            started = time.perf_counter()
            model = train_segmenter(
                cases,
                self.recipe,
                seed,
                self.num_classes,
                self.device,
                self._reporter(offset, f"{name}, seed {seed}"),
            )
            seconds.append(time.perf_counter() - started)
            per_seed.append(
                [
                    score_case(predict(model, image), label, self.structures, self.spacing)
                    for image, label in test
                ]
            )
        stats = {structure: structure_stats(per_seed, structure) for structure in self.structures}
        return ArmResult(name, len(cases), stats, tuple(seconds))

    def _reporter(self, offset: int, what: str) -> IterationCallback | None:
        report = self.on_progress
        if report is None:
            return None
        total = self.total_iterations
        return lambda done, _loss: report(offset + done, total, what)


def _arm_reasons(has_real: bool, has_synthetic: bool) -> dict[str, str]:
    no_real = "" if has_real else "no real training cases"
    no_synthetic = "" if has_synthetic else "no synthetic set"
    return {
        "real": no_real,
        "synthetic": no_synthetic,
        "real+synthetic": " and ".join(r for r in (no_real, no_synthetic) if r),
    }


def _grid_cases(
    cases: Sequence[Case],
    num_classes: int,
    recipe: SegmentationRecipe,
    what: str,
    grid: tuple[int, ...] | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Checked cases as tensors, all on ``grid`` (any one grid when None); [] for no case,
    unless ``grid`` is None (the test set must not be empty)."""
    if not cases and grid is not None:
        return []
    images, labels = stack_cases(cases, num_classes, recipe, what)
    if grid is not None and tuple(images.shape[2:]) != grid:
        raise SegmentationInputError(
            f"{what} are on a {tuple(images.shape[2:])} grid, real test cases on {grid}: "
            "resample every set to one grid (the evaluation's data.target-shape and "
            "data.target-spacing)"
        )
    return list(zip(images[:, 0], labels, strict=True))


def structure_stats(per_seed: list[list[dict[str, CaseScore]]], name: str) -> StructureStats:
    """One structure over every seed's test cases (the conventions of the module docstring)."""
    dice = [float(np.mean([case[name].dice for case in seed])) for seed in per_seed]
    hd95 = [_mean_measured([case[name].hd95 for case in seed]) for seed in per_seed]
    unmatched = [sum(case[name].unmatched for case in seed) for seed in per_seed]
    return StructureStats(tuple(dice), tuple(hd95), tuple(unmatched))


def _mean_measured(values: list[float]) -> float:
    measured = [value for value in values if not math.isnan(value)]
    return float(np.mean(measured)) if measured else math.nan


def _checked_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(seed) for seed in seeds)
    if not values:
        raise ConfigError("no seeds: give one or more, e.g. seeds=(0, 1, 2)")
    if len(set(values)) != len(values) or min(values) < 0:
        raise ConfigError(f"seeds {values}: give distinct non-negative integers")
    return values


def _checked_structures(structures: Structures, num_classes: int) -> dict[str, tuple[int, ...]]:
    if not structures:
        raise ConfigError("no structures: give name -> label values, e.g. {'tumour': {1}}")
    checked: dict[str, tuple[int, ...]] = {}
    for name, values in structures.items():
        labels = tuple(sorted({int(value) for value in values}))
        if not labels or labels[0] < 1 or labels[-1] >= num_classes:
            raise ConfigError(
                f"structure {name!r} has label values {labels}: give one or more of "
                f"1..{num_classes - 1} (0 is background)"
            )
        checked[name] = labels
    return checked


def _checked_spacing(spacing: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(value) for value in spacing)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"spacing {values}: give three positive voxel sizes in mm, (z, y, x)")
    return values


def study_table(result: UtilityResult, modality: str) -> list[dict[str, Any]]:
    """One row per structure, the study's first, with its synthetic-only Dice beside
    fedsynth's Dice (mean and std over seeds) and HD95 of every arm, and the
    synthetic/real Dice ratio. A value is None where fedsynth did not compute it or the study
    did not report it. Columns, in order: :data:`STUDY_COLUMNS`."""
    study = STUDY_DICE[_checked_modality(modality)]
    names = [*study, *(name for name in result.structures if name not in study)]
    return [_study_row(result, name, study.get(name)) for name in names]


def _study_row(result: UtilityResult, name: str, study_dice: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"structure": name, "study_synthetic_dice": study_dice}
    for arm_name in ARMS:
        arm = result.arms[arm_name]
        stats = arm.structures.get(name) if arm.computed else None
        row[f"{arm_name}_dice"] = None if stats is None else stats.dice_mean
        row[f"{arm_name}_dice_std"] = None if stats is None else stats.dice_std
        row[f"{arm_name}_hd95_mm"] = None if stats is None else stats.hd95_mean
    row["synthetic_over_real_dice"] = result.dice_ratio(name) if name in result.structures else None
    return row


STUDY_COLUMNS = (
    "structure",
    "study_synthetic_dice",
    *(f"{arm}_{column}" for arm in ARMS for column in ("dice", "dice_std", "hd95_mm")),
    "synthetic_over_real_dice",
)
"""The columns of :func:`study_table`'s rows."""
