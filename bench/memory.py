"""Memory: peak resident memory of real training steps, and the planner's fitted model of it.

    .venv/bin/python -m bench.memory           # writes "memory" in bench/results.json

Each point trains two steps (the second has Adam's state) of one family at one grid, batch
size, network width and DP mode in a fresh process, and records that process's peak resident
memory (``ru_maxrss``). :func:`common.memory.fit_coefficients` fits the planner's model to the
points by least squares; the coefficients it prints are the constants of ``common/memory.py``,
and its error is reported per point, and on the ``gpu`` preset's 128^3 step of
``bench.scale`` (not in the fit: how far the model extrapolates).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench.common import ONE_FLAG, RESULTS, in_child, peak_rss_mib, save
from common.memory.estimate import estimate_bytes

if TYPE_CHECKING:
    from common.memory.estimate import Workload

STEPS = 2
FLOORS = {"parameters": 4.0, "per-sample-gradients": 1.0}
"""Copies the fit may not go below: every parameter has a weight, a gradient and Adam's two
moments; DP-SGD keeps one gradient per case (too small at the measured sizes to be seen)."""
NARROW, DEFAULT_WIDTHS, WIDE = "8,16", "16,32,32", "32,64,64"
POINTS: tuple[tuple[str, int, int, str, bool], ...] = tuple(
    (family, size, batch, widths, private)
    for family, size, batch, widths in (
        ("diffusion", 16, 1, DEFAULT_WIDTHS),
        ("diffusion", 32, 1, DEFAULT_WIDTHS),
        ("diffusion", 32, 4, DEFAULT_WIDTHS),
        ("diffusion", 48, 2, DEFAULT_WIDTHS),
        ("diffusion", 32, 2, NARROW),  # two levels: the attention block sees 16^3 tokens
        ("diffusion", 40, 1, NARROW),
        ("diffusion", 16, 8, WIDE),  # more parameters: DP's per-sample gradients show
        ("gan", 16, 1, DEFAULT_WIDTHS),
        ("gan", 32, 1, DEFAULT_WIDTHS),
        ("gan", 32, 4, DEFAULT_WIDTHS),
        ("gan", 48, 2, DEFAULT_WIDTHS),
        ("gan", 32, 2, NARROW),  # the label generator's dense layer: 34 million weights
    )
    for private in (False, True)
) + tuple(("segmentation", size, 2, "", False) for size in (16, 32, 48, 64, 80))
"""(family, grid side, batch size, model.channels, DP) of every measured point; the
segmentation points train the utility study's recipe (its own widths, batch 2, no DP)."""


def point_settings(family: str, size: int, batch: int, widths: str, private: bool) -> dict:
    """The run settings of one point (CPU, float32, the default CT schema); "model.family"
    is "segmentation" for the utility study's recipe."""
    return {
        "model.family": family,
        "data.target-shape": f"{size},{size},{size}",
        "training.batch-size": batch,
        "model.channels": widths,
        "model.norm-groups": 4 if widths == NARROW else 8,
        "privacy.enabled": private,
        "training.device": "cpu",
    }


def training_step_peak(settings: dict[str, Any], steps: int = STEPS) -> dict[str, Any]:
    """Peak resident memory (MiB) and seconds of ``steps`` training steps of the model these
    settings describe, on random cases, in this process (call it in a fresh one)."""
    import torch
    from torch.utils.data import TensorDataset

    import client.training  # noqa: F401  (what `fedsynth train` imports: the same base)
    from common.config import load_config
    from common.models.interface import Batch
    from common.models.registry import build_model
    from common.privacy.engine import make_private

    if settings["model.family"] == "segmentation":
        return _segmentation_peak(settings, steps)
    config = load_config(settings)
    batch = config.training.batch_size
    image, label = _random_cases(batch, config.data.target_shape)
    model = build_model(config)
    before = peak_rss_mib()
    if config.privacy.enabled:
        loader = torch.utils.data.DataLoader(
            TensorDataset(image, label), batch_size=batch, generator=torch.Generator()
        )
        make_private(
            model,
            loader,
            config.privacy,
            noise_generator=torch.Generator().manual_seed(0),
            planned_steps=steps,
        )
    started = time.perf_counter()
    for step in range(steps):
        model.train_step(Batch(image, label), torch.Generator().manual_seed(step))
    return {
        "settings": settings,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_step_mib": before,
        "seconds": time.perf_counter() - started,
    }


def _random_cases(batch: int, grid: tuple[int, ...]) -> tuple[Any, Any]:
    """(images (B, 1, *grid) in [-1, 1], labels (B, *grid) of 3 classes), seeded."""
    import torch

    shape = (batch, 1, *grid)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    label = torch.randint(0, 3, shape[:1] + shape[2:], generator=torch.Generator().manual_seed(1))
    return image, label


def _segmentation_peak(settings: dict[str, Any], steps: int) -> dict[str, Any]:
    """Peak memory of ``steps`` iterations of the utility study's segmentation recipe."""
    import evaluator.evaluate  # noqa: F401  (what `fedsynth evaluate` imports)
    from evaluator.segmentation import SegmentationRecipe, train_segmenter

    side = int(str(settings["data.target-shape"]).split(",")[0])
    recipe = SegmentationRecipe(iterations=steps, batch_size=int(settings["training.batch-size"]))
    images, labels = _random_cases(4, (side, side, side))
    cases = [(images[i, 0], labels[i]) for i in range(4)]
    before = peak_rss_mib()
    started = time.perf_counter()
    train_segmenter(cases, recipe, seed=0, num_classes=3, device="cpu")
    return {
        "settings": settings,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_step_mib": before,
        "seconds": time.perf_counter() - started,
    }


def fit_coefficients(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fit ``common.memory.estimate.COEFFICIENTS`` to measured points (settings and
    ``peak_rss_mib``): least squares on the relative error, each coefficient at least its
    :data:`FLOORS` value. Returns the coefficients, and each point's estimate and error."""
    import numpy as np
    from scipy.optimize import lsq_linear

    from common.memory.estimate import COEFFICIENTS, features

    works = [workload_of_settings(point["settings"]) for point in points]
    measured = np.array([float(point["peak_rss_mib"]) * 2**20 for point in points])
    names = list(COEFFICIENTS)
    design = np.array([[features(work)[name] for name in names] for work in works])
    used = design.any(axis=0)
    scale = np.where(used, np.abs(design).max(axis=0), 1.0)  # columns of similar size
    floors = np.array([FLOORS.get(name, 0.0) for name in names]) * scale
    solution = lsq_linear(
        (design / scale)[:, used] / measured[:, None],
        np.ones(len(points)),
        bounds=(floors[used], np.inf),
    ).x
    values = np.zeros(len(names))
    values[used] = solution / scale[used]
    coefficients = {name: float(value) for name, value in zip(names, values, strict=True)}
    estimates = design @ values
    errors = estimates / measured - 1
    return {
        "coefficients": coefficients,
        "estimate_mib": [float(e) / 2**20 for e in estimates],
        "relative_error": [float(e) for e in errors],
        "max_abs_relative_error": float(np.abs(errors).max()),
        "mean_abs_relative_error": float(np.abs(errors).mean()),
    }


def workload_of_settings(settings: Mapping[str, Any]) -> Workload:
    """The workload of one point's settings; "segmentation" is the utility study's recipe."""
    from common.config import load_config
    from common.memory.generators import generator_workload
    from evaluator.utility_memory import segmentation_workload

    if settings["model.family"] == "segmentation":
        side = int(str(settings["data.target-shape"]).split(",")[0])
        return segmentation_workload((side,) * 3, int(settings["training.batch-size"]), 3)
    return generator_workload(load_config(dict(settings)))


def gpu_preset_points() -> list[dict[str, Any]]:
    """bench.scale's measured 128^3 training steps of the gpu preset (one case, CPU), as
    points: the only measured peaks far beyond the small grids."""
    from simulations.presets import preset

    measured = json.loads(RESULTS.read_text(encoding="utf-8"))["scale"]["gpu_step"]
    base = {**preset("gpu"), "training.device": "cpu", "training.batch-size": 1}
    return [
        {
            "settings": {**base, "privacy.enabled": mode == "dp"},
            "peak_rss_mib": float(measured[mode]["peak_rss_mib"]),
        }
        for mode in ("plain", "dp")
    ]


def fit_report(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The fit on every point (the constants of common/memory/estimate.py), and how far a fit
    on the small points alone misses the 128^3 ones (the error of extrapolating)."""
    large = gpu_preset_points()
    fit = fit_coefficients(points + large)
    small = fit_coefficients(points)
    works = [workload_of_settings(point["settings"]) for point in large]
    extrapolation = {
        ("dp" if point["settings"]["privacy.enabled"] else "plain"): {
            "measured_mib": point["peak_rss_mib"],
            "estimate_mib": estimate_bytes(work, small["coefficients"]) / 2**20,
            "error": estimate_bytes(work, small["coefficients"]) / 2**20 / point["peak_rss_mib"]
            - 1,
        }
        for point, work in zip(large, works, strict=True)
    }
    return {
        "fit": fit,
        "small_points_only": {"fit": small, "gpu_preset_128": extrapolation},
    }


def main(argv: list[str] | None = None) -> None:
    """Measure every point, each in a child process, save them, then fit the model (with
    ``--fit``: refit the points saved before; ``--missing``: measure only points not saved)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(ONE_FLAG, nargs=1)
    parser.add_argument("--fit", action="store_true", help="refit the saved points only")
    parser.add_argument("--missing", action="store_true", help="measure unsaved points only")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(training_step_peak(json.loads(args.one[0]))))
        return
    saved = json.loads(RESULTS.read_text(encoding="utf-8")).get("memory", {}).get("points", [])
    points = saved if args.fit or args.missing else []
    if not args.fit:
        known = [point["settings"] for point in points]
        for point in POINTS:
            settings = point_settings(*point)
            if settings not in known:
                points.append(in_child("bench.memory", json.dumps(settings)))
                print(json.dumps(points[-1]), flush=True)
        save("memory", {"points": points})
    save("memory", {"points": points, **fit_report(points)})


if __name__ == "__main__":
    main()
