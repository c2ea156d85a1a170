"""Radiomics throughput (cases per minute) with 1 and 2 worker processes, on the same cases.

Run: .venv/bin/python -m bench.radiomics   (writes the "radiomics" section of bench/results.json)

The cases are head-and-neck CT phantoms with study-sized tumours (radius 15 to 30 mm): tiny
tumours take ~50 ms each, and the benchmark would time process start-up instead of radiomics.
Parallel efficiency is throughput_2 / (2 x throughput_1) (target >= 0.8 on 2 cores). The
figures are only meaningful on an otherwise quiet machine: the load average before and after
is saved with them.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.common import peak_rss_mib, save, time_call
from common.config import load_config
from common.data.nnunet import case_ids, case_paths
from evaluator.radiomics import CaseFeatures, RadiomicsCase, extract_many

CASES = 16  # enough that the last case's length hardly matters (an evaluation has dozens)
SIZE = 128  # voxels per side of the phantoms' grid
TUMOUR_RADIUS_MM = (15.0, 30.0)
LABEL = 1  # tumour in the CT schema
WORKERS = (1, 2)
REPEATS = 5  # this VM's CPU speed drifts by +-30 % from run to run
EFFICIENCY_TARGET = 0.8


def _cases(site: Path) -> list[RadiomicsCase]:
    return [RadiomicsCase(case_id, *case_paths(site, case_id)) for case_id in case_ids(site)]


def _summary(seconds: list[float]) -> dict[str, float]:
    return {"median_s": float(np.median(seconds)), "min_s": min(seconds), "repeats": len(seconds)}


def main() -> None:
    """Time extraction of the same cases with 1 and 2 workers and save the figures."""
    # imported here: each worker process re-runs this module, and needs no phantom code
    from simulations.phantoms import write_cohort

    load_before = os.getloadavg()
    config = load_config(
        {
            "data.modality": "ct",
            "phantoms.sites": 1,
            "phantoms.cases-per-site": CASES,
            "phantoms.size": SIZE,
            "phantoms.tumour-radius-min-mm": TUMOUR_RADIUS_MM[0],
            "phantoms.tumour-radius-max-mm": TUMOUR_RADIUS_MM[1],
        }
    )
    settings = {"binWidth": config.evaluation.radiomics_bin_width}
    with tempfile.TemporaryDirectory() as folder:
        cases = _cases(write_cohort(config, Path(folder) / "cohort").sites[0])
        run = functools.partial(extract_many, cases, LABEL, settings)
        first = time_call(functools.partial(run, max(WORKERS)), 1)  # starts the fork server
        seconds: dict[int, list[float]] = {w: [] for w in WORKERS}
        for _ in range(REPEATS):  # interleaved, so that a slow spell of the VM hits both
            for workers in WORKERS:
                seconds[workers].append(time_call(functools.partial(run, workers), 1)["min_s"])
        serial, parallel = run(1), run(max(WORKERS))
    timings = {w: _summary(s) for w, s in seconds.items()}
    if parallel != serial or not all(isinstance(r, CaseFeatures) for r in serial):
        raise SystemExit("parallel and serial extraction differ, or a case failed")
    throughput = {str(w): CASES / t["median_s"] * 60.0 for w, t in timings.items()}
    efficiency = throughput["2"] / (2 * throughput["1"])
    paired = [one / (2 * two) for one, two in zip(seconds[1], seconds[2], strict=True)]
    save(
        "radiomics",
        {
            "cases": CASES,
            "phantom": {"modality": "ct", "size": SIZE, "tumour_radius_mm": TUMOUR_RADIUS_MM},
            "features_per_case": len(serial[0].features),  # type: ignore[union-attr]
            "seconds": {str(w): t for w, t in timings.items()},
            "first_parallel_call_s": first["median_s"],
            "throughput_cases_per_minute": throughput,
            "parallel_efficiency": efficiency,
            "parallel_efficiency_per_repeat": paired,  # each from a serial and a parallel run
            "efficiency_target": EFFICIENCY_TARGET,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "peak_rss_mib": peak_rss_mib(),
        },
    )


if __name__ == "__main__":
    main()
