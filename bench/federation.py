"""Federation overhead and how the simulation engine scales with virtual sites.

    .venv/bin/python -m bench.federation            # writes "federation" in bench/results.json
    .venv/bin/python -m bench.federation --quick    # 3 and 10 sites only

Overhead: the demo preset (3 sites of 8 phantom CT cases at 32^3, DP-SGD, 3 rounds) simulated
with one site training at a time (``simulation.cpus-per-site`` = all cores, so Ray runs the
sites one after another): the rounds' wall time divided by the sum of the sites' own training
time (each site measures its round from receiving the message to replying). It is also run
with one core per site (sites in parallel), where the ratio drops below 1.

Scale: 1 round of the smoke settings (16^3, 2 cases per site) with 3, 10 and 30 virtual sites:
wall time of the whole simulation (Ray start to release) and the peak memory of the driver and
every Ray process together, sampled every ``SAMPLE_S`` seconds.

Each measurement runs in its own process, side by side in one run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.common import in_child, save
from common.config import load_config
from server.federation import round_reports
from simulations.presets import preset
from simulations.simulate import simulate

SAMPLE_S = 0.5
SCALE_SITES = (3, 10, 30)
QUICK_SCALE_SITES = (3, 10)
MIB = 1024 * 1024


class PeakMemory:
    """Samples the summed resident memory of this process and all its descendants."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_overhead(cpus_per_site: float) -> dict[str, float]:
    """Rounds' wall time over the sites' summed training time, at the demo size."""
    settings = {**preset("demo"), "simulation.cpus-per-site": cpus_per_site}
    with tempfile.TemporaryDirectory() as folder, PeakMemory() as memory:
        started = time.perf_counter()
        outcome = simulate(load_config(settings), Path(folder) / "sim")
        total = time.perf_counter() - started
        rounds = round_reports(outcome.server_dir)
    rounds_wall = sum(r["seconds"] for r in rounds)
    site_seconds = sum(r["metrics"]["seconds"] * r["accepted"] for r in rounds)
    return {
        "cpus_per_site": cpus_per_site,
        "sites": outcome.sites,
        "rounds": len(rounds),
        "rounds_wall_s": rounds_wall,
        "sites_training_s": site_seconds,
        "overhead_ratio": rounds_wall / site_seconds,
        "simulation_wall_s": total,
        "peak_rss_mib": memory.peak / MIB,
    }


def measure_scale(sites: int) -> dict[str, float]:
    """Wall time and peak memory of a one-round smoke federation of ``sites`` sites."""
    settings = {
        **preset("smoke"),
        "phantoms.sites": sites,
        "federation.num-rounds": 1,
        "federation.min-sites": sites,
    }
    with tempfile.TemporaryDirectory() as folder, PeakMemory() as memory:
        started = time.perf_counter()
        outcome = simulate(load_config(settings), Path(folder) / "sim")
        wall = time.perf_counter() - started
        (report,) = round_reports(outcome.server_dir)
    return {
        "sites": sites,
        "accepted": report["accepted"],
        "wall_s": wall,
        "round_s": report["seconds"],
        "peak_rss_mib": memory.peak / MIB,
    }


def main() -> None:
    """Run every measurement in its own process and save the figures."""
    if sys.argv[1:2] == ["--one"]:
        kind, value = sys.argv[2:4]
        result = measure_overhead(float(value)) if kind == "overhead" else measure_scale(int(value))
        print(json.dumps(result))
        return
    cores = float(os.cpu_count() or 1)
    sites = QUICK_SCALE_SITES if "--quick" in sys.argv else SCALE_SITES
    save(
        "federation",
        {
            "overhead_sequential": in_child("bench.federation", "overhead", str(cores)),
            "overhead_parallel": in_child("bench.federation", "overhead", "1"),
            "scale": [in_child("bench.federation", "scale", str(count)) for count in sites],
        },
    )


if __name__ == "__main__":
    main()
