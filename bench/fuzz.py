"""A long fuzz run over every reader and layout: cases tried, how they ended, failures by type.

Run: .venv/bin/python -m bench.fuzz --examples 20000 [--seed 0] [--minutes 10]   (writes the
"fuzz" section of bench/results.json). The strategies are the suite's
(``bench.fuzz_strategies``); the suite runs a few hundred cases with a fixed seed, this runs as
many as asked, with no shrinking, and keeps the first case of each failure type so that it can
become a regression test. Each case runs in a forked process, so that a reader crashing the
interpreter is counted, not the end of the run.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from bench.common import save
from bench.fuzz_files import FuzzCase
from bench.fuzz_property import FUZZ_MAX_VOXELS, run_isolated
from bench.fuzz_strategies import fuzz_cases


class _OutOfTime(BaseException):
    """The time allowed is spent. Not an ``Exception``: hypothesis lets it through at once,
    drawing no further case and reporting nothing."""


def fuzz(
    examples: int,
    seed: int,
    minutes: float = 0.0,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run ``examples`` fuzz cases drawn from ``seed``, or fewer when ``minutes`` (if > 0) run
    out: no case is drawn or tried after that; the figures of the run (seconds by ``clock``)."""
    statuses: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    first: dict[str, str] = {}
    started = clock()

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(fuzz_cases())
    def one(case: FuzzCase) -> None:
        if minutes and clock() - started > 60.0 * minutes:
            raise _OutOfTime
        outcome = run_isolated(case)
        statuses[outcome.status] += 1
        formats[f"{case.layout}/{case.format}"] += 1
        if outcome.failed:
            failures[outcome.kind] += 1
            first.setdefault(outcome.kind, f"{case!r}: {outcome.detail}")

    out_of_time = False
    try:
        one()
    except _OutOfTime:
        out_of_time = True
    return {
        "examples_asked": examples,
        "cases_tried": sum(statuses.values()),
        "outcomes": dict(statuses),
        "cases_by_layout_and_format": dict(sorted(formats.items())),
        "failures_found": sum(failures.values()),
        "failures_by_type": dict(failures),
        "first_failure_of_each_type": first,
        "seconds": round(clock() - started, 1),
        "seed": seed,
        "minutes_allowed": minutes or None,
        "out_of_time": out_of_time,
        "max_voxels": FUZZ_MAX_VOXELS,
    }


def main() -> None:
    """Parse the command line, fuzz, and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="fuzz cases to try")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draws")
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="stop trying cases after this long (0: never)"
    )
    args = parser.parse_args()
    save("fuzz", fuzz(args.examples, args.seed, args.minutes))


if __name__ == "__main__":
    main()
