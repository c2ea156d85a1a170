"""Seconds per 3D MS-SSIM pair (evaluator.realism.msssim) at 32^3, 64^3 and 128^3, and peak memory.

Each size runs in its own process, so its peak resident memory is its own. Every size uses the
settings msssim_settings() chooses for it (recorded with the figures) and a CT window in HU.

Run: .venv/bin/python -m bench.msssim   (writes the "msssim" section of bench/results.json)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import torch

from bench.common import in_child, peak_rss_mib, save, time_call
from evaluator.realism import msssim, msssim_settings

SIZES = (32, 64, 128)
REPEATS = 5
WARMUP = 1
CT_WINDOW_HU = (-1024.0, 2048.0)  # data.ct-window-min/-max defaults
AIR_HU, TISSUE_HU, NOISE_HU = -1000.0, 40.0, 50.0  # a body in air, and the pair's difference


def _pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(size)
    centre = (size - 1) / 2
    z, y, x = np.ogrid[:size, :size, :size]
    body = (z - centre) ** 2 + (y - centre) ** 2 + (x - centre) ** 2 <= (0.4 * size) ** 2
    real = np.where(body, TISSUE_HU, AIR_HU).astype(np.float32)
    synthetic = real + rng.normal(0.0, NOISE_HU, real.shape).astype(np.float32)
    return real, synthetic


def measure(size: int) -> dict[str, Any]:
    """Median seconds per MS-SSIM pair at ``size``^3 after a warm-up, and this process's peak."""
    imports_only = peak_rss_mib()  # torch and MONAI loaded, no volume yet
    real, synthetic = _pair(size)
    settings = msssim_settings(real.shape, CT_WINDOW_HU)
    for _ in range(WARMUP):
        value = msssim(real, synthetic, settings)
    timing = time_call(lambda: msssim(real, synthetic, settings), REPEATS)
    return {
        "seconds_per_pair": timing["median_s"],
        "min_s": timing["min_s"],
        "repeats": REPEATS,
        "msssim": value,
        "settings": settings.to_json(),
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_after_imports_mib": imports_only,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    """Measure every size in its own process and save the figures."""
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    load_before = os.getloadavg()[0]
    sizes = {f"{size}^3": in_child("bench.msssim", str(size)) for size in SIZES}
    save(
        "msssim",
        {
            "sizes": sizes,
            "window_hu": list(CT_WINDOW_HU),
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "cpu_count": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
