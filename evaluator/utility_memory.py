"""The memory of the utility study's segmentation training, planned before it starts."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from common.config import FedsynthConfig
from common.memory.estimate import Workload
from common.memory.plan import MemoryPlan, plan_workload
from evaluator.segmentation import SegmentationRecipe, build_network


def segmentation_workload(
    grid: tuple[int, ...], cases: int, num_classes: int, recipe: SegmentationRecipe | None = None
) -> Workload:
    """One training iteration of the segmentation recipe on ``cases`` cases of ``grid``."""
    chosen = recipe or SegmentationRecipe()
    with torch.device("meta"):
        network = build_network(chosen, num_classes, seed=0)
    return Workload(
        family="segmentation",
        cases=cases,
        voxels=math.prod(grid),
        widths=tuple(chosen.channels),
        spatial_dims=3,
        parameters=sum(p.numel() for p in network.parameters()),
    )


def plan_utility_memory(
    config: FedsynthConfig, grid: tuple[int, ...], num_classes: int, recipe: SegmentationRecipe
) -> MemoryPlan:
    """Check that the utility study's segmentation training fits in memory.

    Raises:
        MemoryPlanError: it would not; the message says which settings would make it fit.
    """
    work = segmentation_workload(grid, recipe.batch_size, num_classes, recipe)
    return plan_workload(
        work,
        config.training.memory_limit_gib,
        what="the utility study's segmentation training",
        levers={
            "evaluation.parts without utility": None,
            "a release sampled on a smaller data.target-shape (half each side)": replace(
                work, voxels=math.prod(max(1, side // 2) for side in grid)
            ),
        },
    )
