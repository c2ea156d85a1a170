"""Generator step time and peak memory with and without DP-SGD, and sampler speed.

Each measurement runs in a fresh process (so peak memory is its own), side by side in one run:

    .venv/bin/python -m bench.generators            # writes "generators" in bench/results.json
    .venv/bin/python -m bench.generators --quick    # 16^3 and 32^3 only

DP steps use the family's own per-sample gradient mode (``privacy.grad-sample-mode = auto``) and
are also measured in the other Opacus mode. Step time: median of ``STEPS`` optimisation steps
after ``WARMUP`` (batch of ``BATCH`` real phantom-like volumes). Sampling: one volume,
DDIM-50 against DDPM-1000.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch

from bench.common import in_child, peak_rss_mib, save
from common.config import load_config
from common.models.interface import Batch
from common.models.registry import build_model, model_family

STEPS = 5
WARMUP = 2
BATCH = 2
SIZES = (32, 64)
QUICK_SIZES = (16, 32)
SAMPLING_SIZE = 16
OTHER_MODES = {"gan": ("functorch",), "diffusion": ("hooks",)}
"""Opacus modes measured beside each family's own ("auto") mode, to show why it was chosen."""


def _config(family: str, size: int, dp: bool, **extra: Any) -> Any:
    return load_config(
        {
            "model.family": family,
            "data.target-shape": size,
            "model.channels": "16,32,32",
            "training.batch-size": BATCH,
            "privacy.enabled": dp,
            **extra,
        }
    )


def _batch(size: int, generator: torch.Generator) -> Batch:
    image = torch.rand(BATCH, 1, size, size, size, generator=generator) * 2 - 1
    label = torch.randint(0, 3, (BATCH, size, size, size), generator=generator)
    return Batch(image, label)


def measure_step(family: str, size: int, mode: str) -> dict[str, float]:
    """Median seconds per training step (in this process) and the process's peak memory;
    ``mode`` "plain" trains without DP, else it is ``privacy.grad-sample-mode``."""
    from torch.utils.data import DataLoader, TensorDataset

    from common.privacy.engine import make_private

    dp = mode != "plain"
    extra: dict[str, Any] = {"privacy.noise-multiplier": 1.0}
    if dp:
        extra["privacy.grad-sample-mode"] = mode
    config = _config(family, size, dp, **extra)
    model = build_model(config)
    generator = torch.Generator().manual_seed(0)
    batch = _batch(size, generator)
    if dp:
        data = TensorDataset(batch.image.repeat(4, 1, 1, 1, 1), batch.label.repeat(4, 1, 1, 1))
        loader = DataLoader(data, batch_size=BATCH, generator=torch.Generator().manual_seed(1))
        make_private(model, loader, config.privacy, noise_generator=generator, planned_steps=100)
    times = []
    for index in range(WARMUP + STEPS):
        started = time.perf_counter()
        model.train_step(batch, generator)
        if index >= WARMUP:
            times.append(time.perf_counter() - started)
    times.sort()
    return {"step_s": times[len(times) // 2], "peak_rss_mib": peak_rss_mib()}


def measure_sampling(sampler: str, steps: int) -> dict[str, float]:
    """Seconds to sample one volume with the diffusion model's ``sampler``."""
    config = _config(
        "diffusion",
        SAMPLING_SIZE,
        False,
        **{"model.sampler": sampler, "model.sampling-steps": steps},
    )
    model = build_model(config)
    model.train_mode(False)
    started = time.perf_counter()
    model.sample(1, torch.Generator().manual_seed(0))
    return {"seconds_per_volume": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    """Run every measurement in its own process and save the figures with the ratios."""
    if sys.argv[1:2] == ["--one"]:
        kind, *args = sys.argv[2:]
        result = (
            measure_step(args[0], int(args[1]), args[2])
            if kind == "step"
            else measure_sampling(args[0], int(args[1]))
        )
        print(json.dumps(result))
        return
    sizes = QUICK_SIZES if "--quick" in sys.argv else SIZES
    steps: dict[str, Any] = {}
    for family in ("gan", "diffusion"):
        for size in sizes:
            plain = in_child("bench.generators", "step", family, str(size), "plain")
            private = in_child("bench.generators", "step", family, str(size), "auto")
            figures = {
                "plain": plain,
                "dp": private,
                "dp_mode": model_family(family).grad_sample_mode,
                "dp_over_plain_time": private["step_s"] / plain["step_s"],
                "dp_over_plain_memory": private["peak_rss_mib"] / plain["peak_rss_mib"],
            }
            for other in OTHER_MODES[family]:
                measured = in_child("bench.generators", "step", family, str(size), other)
                figures[f"dp_{other}"] = measured
                figures[f"dp_{other}_over_plain_time"] = measured["step_s"] / plain["step_s"]
            steps[f"{family}-{size}"] = figures
    ddim = in_child("bench.generators", "sample", "ddim", "50")
    ddpm = in_child("bench.generators", "sample", "ddpm", "1000")
    save(
        "generators",
        {
            "batch": BATCH,
            "steps": steps,
            "sampling": {
                "size": SAMPLING_SIZE,
                "ddim50": ddim,
                "ddpm1000": ddpm,
                "ddpm_over_ddim": ddpm["seconds_per_volume"] / ddim["seconds_per_volume"],
            },
        },
    )


if __name__ == "__main__":
    main()
