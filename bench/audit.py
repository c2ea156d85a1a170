"""Audit speed: the nearest-neighbour search at 32^3, its growth in each count, and its memory.

    .venv/bin/python -m bench.audit            # writes "audit" in bench/results.json
    .venv/bin/python -m bench.audit --counts 50,100,200 --fixed 200   # smaller, same report

Times ``common.audit.search.search`` with the default audit settings for synthetic x real
counts of 250, 500 and 1,000 synthetic cases against 1,000 real ones, and 1,000 synthetic cases
against 250, 500 and 1,000 real ones, each in its own process (its own peak memory), and
``run_audit`` once (1,000 synthetic, 1,000 training, 100 held-out cases: four searches). The
cases are smooth random volumes with label maps (what the search costs does not depend on
anatomy), a few of them planted copies of real cases, which the search must find. Reports the
target (1,000 x 1,000 in under ``TARGET_S`` seconds), a straight-line fit of time against each
count (linear growth: every point within ``LINEAR_TOLERANCE`` of the line), the peak resident
memory over the cases' own size, and the machine's load average, since timings on a shared
machine are taken under whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from bench.common import ONE_FLAG, in_child, peak_rss_mib, save

SIZE = 32
TARGET_S = 5.0
LINEAR_TOLERANCE = 0.15
"""Largest relative distance of a measured time from the fitted line still called linear."""
COUNTS = "250,500,1000"
FIXED = 1000
PLANTED = 8
HOLDOUT = 100
VALUES = (1, 2)


def cases(count: int, seed: int) -> Any:
    """``count`` smooth random 32^3 cases with two structures, as a CaseSet."""
    import torch

    from common.audit.search import CaseSet

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 2, SIZE // 4, SIZE // 4, SIZE // 4, generator=generator)
    fields = torch.nn.functional.interpolate(coarse, size=(SIZE,) * 3, mode="trilinear")
    noise = 0.05 * torch.randn(count, SIZE, SIZE, SIZE, generator=generator)
    images = torch.tanh(fields[:, 0] + noise)
    labels = (fields[:, 1] > 0.8).to(torch.uint8) + (fields[:, 1] > 1.4).to(torch.uint8)
    return CaseSet(images.contiguous(), labels.contiguous())


def with_copies(synthetic: Any, real: Any) -> Any:
    """``synthetic`` with its first ``PLANTED`` cases replaced by noisy real cases 0, 1, ..."""
    import torch

    from common.audit.search import CaseSet

    images, labels = synthetic.images.clone(), synthetic.labels.clone()
    generator = torch.Generator().manual_seed(1)
    count = min(PLANTED, len(real), len(synthetic))
    noise = 0.02 * torch.randn(count, SIZE, SIZE, SIZE, generator=generator)
    images[:count] = real.images[:count] + noise
    labels[:count] = real.labels[:count]
    return CaseSet(images, labels)


def one_search(n_synthetic: int, n_real: int) -> dict[str, Any]:
    """Time one search of ``n_synthetic`` against ``n_real`` cases."""
    import torch

    from common.audit.search import search
    from common.config import AuditConfig

    real = cases(n_real, seed=2)
    synthetic = with_copies(cases(n_synthetic, seed=3), real)
    settings = AuditConfig()
    before = peak_rss_mib()
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    found = search(synthetic, real, VALUES, settings)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    copies = min(PLANTED, n_real)
    caught = all(
        bool(np.all(found.index[space][:copies, 0] == np.arange(copies)))
        for space in ("voxels", "labels")
    )
    return {
        "synthetic": n_synthetic,
        "real": n_real,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_search_mib": before,
        "cases_mib": (n_real + n_synthetic) * SIZE**3 * 5 / 2**20,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": load,
        "planted_copies_found": caught,
        "shortlist": settings.shortlist,
        "chunk_cases": settings.chunk_cases,
        "spectra_cache_mib": settings.spectra_cache_mib,
    }


def one_audit(fixed: int) -> dict[str, Any]:
    """Time ``run_audit`` (four searches) at ``fixed`` synthetic and training cases, 100 held
    out."""
    from common.audit.run import run_audit
    from common.config import AuditConfig

    train = cases(fixed, seed=2)
    synthetic = with_copies(cases(fixed, seed=3), train)
    holdout = cases(HOLDOUT, seed=4)
    ids = [f"case-{i}" for i in range(len(synthetic))]
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    audit = run_audit(synthetic, ids, train, holdout, VALUES, AuditConfig())
    return {
        "synthetic": fixed,
        "train": fixed,
        "holdout": HOLDOUT,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": peak_rss_mib(),
        "load_average_1min_at_start": load,
        "planted_flagged": int(audit.flagged[:PLANTED].sum()),
        "flagged": int(audit.flagged.sum()),
    }


def linearity(points: list[dict[str, Any]], axis: str) -> dict[str, Any]:
    """A least-squares line of seconds against ``axis`` and how far the points lie from it."""
    counts = np.array([p[axis] for p in points], dtype=float)
    seconds = np.array([p["seconds"] for p in points], dtype=float)
    slope, intercept = np.polyfit(counts, seconds, 1)
    fitted = slope * counts + intercept
    deviation = float(np.max(np.abs(seconds - fitted) / seconds))
    return {
        "seconds_per_case": float(slope),
        "intercept_s": float(intercept),
        "largest_relative_deviation": deviation,
        "linear": bool(deviation <= LINEAR_TOLERANCE),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure everything, each in a child process, and save it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(ONE_FLAG, nargs="+")
    parser.add_argument("--counts", default=COUNTS, help="the three varied counts")
    parser.add_argument("--fixed", type=int, default=FIXED, help="the count held fixed")
    args = parser.parse_args(argv)
    if args.one:
        kind, *rest = args.one
        result = one_audit(int(rest[0])) if kind == "audit" else one_search(*map(int, rest))
        print(json.dumps(result))
        return
    counts, fixed = [int(n) for n in args.counts.split(",")], args.fixed
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    for n_synthetic, n_real in [(n, fixed) for n in counts] + [(fixed, n) for n in counts]:
        if (n_synthetic, n_real) not in runs:
            runs[n_synthetic, n_real] = in_child(
                "bench.audit", "search", str(n_synthetic), str(n_real)
            )
    by_synthetic = [runs[n, fixed] for n in counts]
    by_real = [runs[fixed, n] for n in counts]
    largest = runs.get((fixed, fixed))
    at_target = largest is not None and fixed == FIXED
    results = {
        "size": SIZE,
        "searches": list(runs.values()),
        "growth": {
            "synthetic": linearity(by_synthetic, "synthetic"),
            "real": linearity(by_real, "real"),
        },
        "target": {
            "cases": f"{FIXED} synthetic x {FIXED} real at {SIZE}^3",
            "seconds": largest["seconds"] if at_target and largest else None,
            "limit_s": TARGET_S,
            "met": bool(largest["seconds"] < TARGET_S) if at_target and largest else None,
        },
        "run_audit": in_child("bench.audit", "audit", str(fixed)),
        "cpu_count": os.cpu_count(),
    }
    save("audit", results)


if __name__ == "__main__":
    main()
