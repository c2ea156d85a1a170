"""Phantom generation time per case (CT and MRI, 32^3 to 128^3) and for the demo cohort.

Run: .venv/bin/python -m bench.phantoms   (writes the "phantoms" section of bench/results.json)
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from bench.common import peak_rss_mib, save, time_call
from common.config import load_config
from simulations.phantoms import make_case, site_profiles, write_cohort
from simulations.presets import preset

SIZES = (32, 64, 128)
REPEATS = 3


def main() -> None:
    """Time phantom generation and save the figures."""
    per_case: dict[str, dict[str, float]] = {}
    for modality in ("ct", "mri"):
        for size in SIZES:
            config = load_config({"data.modality": modality, "phantoms.size": size})
            profile = site_profiles(modality, config)[0]
            timing = time_call(functools.partial(make_case, modality, profile, 0, config), REPEATS)
            per_case[f"{modality}-{size}"] = timing
    demo = load_config(preset("demo"))
    with tempfile.TemporaryDirectory() as folder:
        cohort = time_call(lambda: write_cohort(demo, Path(folder) / "c", overwrite=True), 1)
    save(
        "phantoms",
        {
            "per_case_seconds": per_case,
            "demo_cohort_seconds": cohort["median_s"],
            "demo_cohort_cases": demo.phantoms.sites * demo.phantoms.cases_per_site,
            "peak_rss_mib": peak_rss_mib(),
        },
    )


if __name__ == "__main__":
    main()
