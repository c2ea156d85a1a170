"""Shared by the benchmark scripts: timing, peak memory, and merging into bench/results.json."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).with_name("results.json")


def time_call(func: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and min wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return {"median_s": float(np.median(times)), "min_s": float(min(times)), "repeats": repeats}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def save(section: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` under ``section`` of bench/results.json, keeping other sections."""
    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    payload["machine"] = {"python": platform.python_version(), "cpu": platform.processor()}
    payload["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results[section] = payload
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({section: payload}, indent=2))


ONE_FLAG = "--one"
"""Argument that makes a benchmark script measure one thing in this process and print JSON."""


def in_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module --one ARGS`` in a fresh process (its own peak memory) and return
    the JSON object it printed last; its stderr (a failure's traceback) goes to ours."""
    output = subprocess.run(
        [sys.executable, "-m", module, ONE_FLAG, *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))
