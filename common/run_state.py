"""``run-state.json``: a run folder's record of the run in it, so that one killed outright
(SIGKILL, the kernel's out-of-memory killer) is reported by the next attempt.

A run writes ``running`` (its process id, start time, settings and estimated peak memory) when
it starts, the step it reached as it goes, and ``finished`` at its end, each atomically. A
``running`` record whose process is gone is a run that died without a word. A run that ends
by an error or Ctrl-C reports that itself: its record says ``stopped`` (``train``,
``simulate``), or is removed with the folder it alone was in (``evaluate``, whose output
appears whole or not at all).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.config import Scalar
from common.errors import FedsynthError
from common.memory.estimate import gib

RUN_STATE_FILE = "run-state.json"
RUNNING, FINISHED, STOPPED = "running", "finished", "stopped"
"""``stopped``: the run ended by an error or an interruption, which it reported itself."""


class RunInUseError(FedsynthError):
    """Another live process is running in the same run folder."""


@dataclass(frozen=True)
class RunState:
    """What ``run-state.json`` holds."""

    status: str
    pid: int
    started: float
    """Seconds since the epoch."""
    updated: float
    step: int = 0
    steps: int = 0
    estimated_peak: int = 0
    """Bytes."""
    settings: dict[str, Scalar] = field(default_factory=dict)
    stage: str = ""
    """What the run was doing, for runs whose steps have names (an evaluation's parts)."""


def read_state(run: Path) -> RunState | None:
    """The folder's record, or None when there is none or it cannot be read."""
    try:
        data: dict[str, Any] = json.loads((run / RUN_STATE_FILE).read_text(encoding="utf-8"))
        return RunState(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write(run: Path, state: RunState) -> None:
    atomic_write_text(run / RUN_STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def refuse_if_in_use(run: Path) -> None:
    """Check that no other live process runs in ``run``, before anything there is touched.

    Raises:
        RunInUseError: one does.
    """
    state = read_state(run)
    if state is None or state.status != RUNNING:
        return
    if state.pid != os.getpid() and _alive(state.pid):
        raise RunInUseError(
            f"{run}: a run is still going on in this folder (process {state.pid}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state.started))}); wait for "
            "it or stop it, or choose another --out"
        )


def previous_run_notice(run: Path) -> str | None:
    """What to tell the user about an earlier run in ``run`` that did not finish, or None.

    Raises:
        RunInUseError: that run's process is still alive (and is not this one).
    """
    refuse_if_in_use(run)
    state = read_state(run)
    if state is None or state.status != RUNNING:
        return None
    lasted = max(0.0, state.updated - state.started)
    where = f"after step {state.step} of {state.steps}"
    if state.step == 0:
        where = f"during its first step (of {state.steps})"
    if state.stage:
        where = f"during {state.stage} (step {state.step + 1} of {state.steps})"
    peak = f"; its estimated peak memory was {gib(state.estimated_peak)}"
    if state.estimated_peak <= 0:
        peak = ""
    return (
        f"the previous run in {run} died (killed?) after {lasted:.0f} s {where}{peak}; if "
        "the machine ran out of memory, lower the settings that memory planning names "
        "(training.memory-limit-gib makes the plan stricter)"
    )


class RunRecord:
    """The live record of this process's run in a folder."""

    def __init__(
        self, run: Path, settings: dict[str, Scalar], estimated_peak: int, steps: int
    ) -> None:
        now = time.time()
        self.run = run
        self.state = RunState(RUNNING, os.getpid(), now, now, 0, steps, estimated_peak, settings)
        _write(run, self.state)

    def reached(self, step: int, stage: str = "") -> None:
        """Record that ``step`` steps are done (and that the next, ``stage``, has begun)."""
        self.state = replace(self.state, step=step, stage=stage, updated=time.time())
        _write(self.run, self.state)

    @contextlib.contextmanager
    def stopped_on_error(self) -> Iterator[None]:
        """Mark the run stopped when the block raises (an error or Ctrl-C speaks for itself:
        only a run killed outright stays ``running``)."""
        try:
            yield
        except BaseException:
            self.state = replace(self.state, status=STOPPED, updated=time.time())
            _write(self.run, self.state)
            raise

    @contextlib.contextmanager
    def removed_on_error(self) -> Iterator[None]:
        """Remove the record when the block raises, and the folder when that leaves it empty:
        for a command whose output appears whole or not at all, an error or Ctrl-C (which
        speak for themselves) leave nothing behind; only a run killed outright leaves a
        record."""
        try:
            yield
        except BaseException:
            (self.run / RUN_STATE_FILE).unlink(missing_ok=True)
            if not any(self.run.iterdir()):
                self.run.rmdir()
            raise

    def finish(self, step: int) -> None:
        """Mark the run finished after ``step`` steps."""
        self.state = replace(self.state, status=FINISHED, step=step, updated=time.time())
        _write(self.run, self.state)
