"""Scale: sampling speed on the CPU, and the memory the gpu preset's training step needs.

    .venv/bin/python -m bench.scale            # writes "scale" in bench/results.json

Sampling: seconds per synthetic volume for the diffusion model (DDIM at the quality presets'
step count) and the GAN, at 32^3 and 64^3, with the quality presets' networks (speed does not
depend on the weights, so the models are untrained). Memory: peak resident memory of one
training step of the gpu preset's diffusion model at 128^3 (one case, bfloat16 autocast off: a
CPU has no GPU memory to measure; activations take the same room), without and with DP-SGD.
Each measurement runs in its own process, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import ONE_FLAG, in_child, peak_rss_mib, save

SIZES = (32, 64)
FAMILIES = ("diffusion", "gan")
SAMPLES = 2
GPU_SIZE = 128


def sampling(family: str, size: int) -> dict[str, Any]:
    """Seconds per volume of stand-alone sampling."""
    import torch

    from common.config import load_config
    from common.models.registry import build_model
    from simulations.presets import preset

    config = load_config(
        {
            **preset("quality-ct", family),
            "data.target-shape": f"{size},{size},{size}",
            "training.batch-size": 1,
        }
    )
    model = build_model(config)
    model.sample(1, torch.Generator().manual_seed(0))  # warm-up
    started = time.perf_counter()
    model.sample(SAMPLES, torch.Generator().manual_seed(1))
    seconds = (time.perf_counter() - started) / SAMPLES
    steps = config.model.sampling_steps if family == "diffusion" else 1
    return {"seconds_per_volume": seconds, "sampler_steps": steps, "peak_rss_mib": peak_rss_mib()}


def gpu_step(private: bool) -> dict[str, Any]:
    """Peak memory and time of one training step of the gpu preset at 128^3, one case."""
    import torch
    from torch.utils.data import TensorDataset

    from common.config import load_config
    from common.models.interface import Batch
    from common.models.registry import build_model
    from common.privacy.engine import make_private
    from simulations.presets import preset

    config = load_config({**preset("gpu"), "training.device": "cpu", "training.batch-size": 1})
    model = build_model(config)
    shape = (1, 1, GPU_SIZE, GPU_SIZE, GPU_SIZE)
    image = torch.rand(shape) * 2 - 1
    label = torch.randint(0, 3, shape[:1] + shape[2:])
    before = peak_rss_mib()
    if private:
        loader = torch.utils.data.DataLoader(
            TensorDataset(image, label), batch_size=1, generator=torch.Generator()
        )
        make_private(
            model,
            loader,
            config.privacy,
            noise_generator=torch.Generator().manual_seed(0),
            planned_steps=1,
        )
    started = time.perf_counter()
    model.train_step(Batch(image, label), torch.Generator().manual_seed(0))
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_step_mib": before,
        "channels": list(config.model.channels),
        "size": GPU_SIZE,
    }


def main(argv: list[str] | None = None) -> None:
    """Measure everything, each in a child process, and save it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(ONE_FLAG, nargs="+")
    args = parser.parse_args(argv)
    if args.one:
        kind, *rest = args.one
        if kind == "sampling":
            print(json.dumps(sampling(rest[0], int(rest[1]))))
        else:
            print(json.dumps(gpu_step(rest[0] == "dp")))
        return
    results: dict[str, Any] = {"sampling": {}, "gpu_step": {}}
    for family in FAMILIES:
        for size in SIZES:
            key = f"{family}-{size}"
            results["sampling"][key] = in_child("bench.scale", "sampling", family, str(size))
    for mode in ("plain", "dp"):
        results["gpu_step"][mode] = in_child("bench.scale", "gpu", mode)
    save("scale", results)


if __name__ == "__main__":
    main()
