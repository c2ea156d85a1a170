"""Cost of the utility study on the CPU: training time per arm and inference time per case at
32^3 with the default segmentation recipe (UNet channels 32-64-128-256, two residual units).

    .venv/bin/python -m bench.utility                     # the recipe's 2,000 iterations
    .venv/bin/python -m bench.utility --iterations 200    # fewer, extrapolated to 2,000

Writes "utility" in bench/results.json. A step always sees ``batch_size`` whole volumes, so the
training time of an arm depends on the iterations, not on how many cases the arm holds; the
arms still differ in size here (8 real, 8 synthetic, 16 both) to show it. Cases are random
volumes: time does not depend on what the voxels hold. ``per_study_s`` projects a study of
three arms and ``SEEDS`` seeds with ``TEST_CASES`` test cases at the recipe's iterations.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from bench.common import peak_rss_mib, save
from evaluator.segmentation import Case, SegmentationRecipe, predict, train_segmenter
from evaluator.utility import schema_num_classes, schema_structures, score_case

SIZE = 32
SPACING = (6.25, 6.25, 6.25)
"""The demo's grid: 32^3 voxels of 6.25 mm."""
MODALITY = "ct"
CASES_PER_SET = 8
TEST_CASES = 4
SEEDS = 3


def _cases(count: int, num_classes: int, generator: torch.Generator) -> list[Case]:
    shape = (SIZE, SIZE, SIZE)
    return [
        (
            torch.rand(shape, generator=generator) * 2 - 1,
            torch.randint(0, num_classes, shape, generator=generator),
        )
        for _ in range(count)
    ]


def measure(iterations: int) -> dict[str, Any]:
    """Train each arm once for ``iterations`` steps and time inference and metrics per case."""
    default = SegmentationRecipe()
    recipe = SegmentationRecipe(iterations=iterations)
    num_classes = schema_num_classes(MODALITY)
    generator = torch.Generator().manual_seed(0)
    real = _cases(CASES_PER_SET, num_classes, generator)
    synthetic = _cases(CASES_PER_SET, num_classes, generator)
    test = _cases(TEST_CASES, num_classes, generator)
    arms: dict[str, Any] = {}
    models: dict[str, torch.nn.Module] = {}
    for arm, cases in (
        ("real", real),
        ("synthetic", synthetic),
        ("real+synthetic", real + synthetic),
    ):
        started = time.perf_counter()
        models[arm] = train_segmenter(cases, recipe, 0, num_classes, device="cpu")
        seconds = time.perf_counter() - started
        arms[arm] = {
            "cases": len(cases),
            "train_s": seconds,
            "s_per_iteration": seconds / iterations,
            "train_s_at_default_iterations": seconds / iterations * default.iterations,
        }
    inference, metrics = [], []
    structures = schema_structures(MODALITY)
    for image, label in test:
        started = time.perf_counter()
        prediction = predict(models["real+synthetic"], image)
        inference.append(time.perf_counter() - started)
        started = time.perf_counter()
        score_case(prediction, label, structures, SPACING)
        metrics.append(time.perf_counter() - started)
    per_model = float(np.mean([a["train_s_at_default_iterations"] for a in arms.values()]))
    per_case = float(np.median(inference) + np.median(metrics))
    return {
        "size": SIZE,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "recipe_channels": list(default.channels),
        "num_res_units": default.num_res_units,
        "batch_size": default.batch_size,
        "iterations_measured": iterations,
        "iterations_default": default.iterations,
        "arms": arms,
        "inference_s_per_case": float(np.median(inference)),
        "metrics_s_per_case": float(np.median(metrics)),
        "per_study_s": len(arms) * SEEDS * (per_model + TEST_CASES * per_case),
        "study_seeds": SEEDS,
        "study_test_cases": TEST_CASES,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    """Measure and save under "utility" in bench/results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=SegmentationRecipe().iterations,
        help="training iterations per arm (default: the recipe's)",
    )
    save("utility", measure(parser.parse_args().iterations))


if __name__ == "__main__":
    main()
