"""The segmentation-utility part of an evaluation: train on real, synthetic, or both; test on
held-out real cases (the study's question).

The real set is split once, by a seeded shuffle, into training cases and
``evaluation.real-test-fraction`` held-out test cases. Images are handed to the recipe in
[-1, 1] (the release's intensity mapping), labels as schema values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from common.config import FedsynthConfig
from common.memory.plan import MemoryPlan
from common.release import release_intensity
from common.seeding import numpy_rng
from evaluator.cases import EvalCase
from evaluator.realism_section import not_computed
from evaluator.segmentation import Case, SegmentationRecipe
from evaluator.utility import (
    ProgressCallback,
    schema_num_classes,
    schema_structures,
    study_table,
    utility_study,
)
from evaluator.utility_memory import plan_utility_memory

MIN_REAL_CASES = 2
"""A split needs one real case to train on and one to test on."""


def split_real(
    real: Sequence[EvalCase], test_fraction: float, seed: int
) -> tuple[list[EvalCase], list[EvalCase]]:
    """(training, held-out test) real cases: a seeded shuffle, at least one case in each."""
    order = numpy_rng(seed, "utility-split").permutation(len(real))
    tests = min(len(real) - 1, max(1, round(len(real) * test_fraction)))
    test = [real[i] for i in sorted(order[:tests])]
    train = [real[i] for i in sorted(order[tests:])]
    return train, test


def utility_recipe(config: FedsynthConfig) -> SegmentationRecipe:
    """The segmentation recipe with the evaluation's iteration count."""
    recipe = SegmentationRecipe()
    if config.evaluation.utility_iterations:
        recipe = replace(recipe, iterations=config.evaluation.utility_iterations)
    return recipe


def plan_utility(config: FedsynthConfig, grid: tuple[int, ...]) -> MemoryPlan:
    """Check, before the evaluation starts, that its segmentation training fits in memory;
    its plan (the estimated peak).

    Raises:
        MemoryPlanError: it would not; the message says what to change.
    """
    num_classes = schema_num_classes(config.data.modality)
    return plan_utility_memory(config, grid, num_classes, utility_recipe(config))


def utility(
    config: FedsynthConfig,
    real: Sequence[EvalCase],
    synthetic: Sequence[EvalCase],
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """The study's three arms, JSON-ready, with the study's table rows."""
    if len(real) < MIN_REAL_CASES:
        return not_computed(f"{len(real)} real case(s): the utility study needs two or more")
    train, test = split_real(real, config.evaluation.real_test_fraction, config.seed)
    recipe = utility_recipe(config)
    mapping = release_intensity(config)

    def cases(chosen: Sequence[EvalCase]) -> list[Case]:
        return [(mapping.forward(c.image).astype(np.float32), c.label) for c in chosen]

    x, y, z = real[0].spacing
    result = utility_study(
        cases(train),
        cases(test),
        cases(synthetic),
        schema_structures(config.data.modality),
        recipe,
        seeds=[config.seed + k for k in range(config.evaluation.utility_seeds)],
        num_classes=schema_num_classes(config.data.modality),
        spacing=(z, y, x),
        device=config.training.device,
        on_progress=on_progress,
        arms=config.evaluation.arm_names(),
        min_real_dice=config.evaluation.min_real_dice,
    )
    return {
        "computed": True,
        "real_training_cases": len(train),
        "real_test_cases": len(test),
        **result.to_json(),
        "study_table": study_table(result, config.data.modality),
    }
