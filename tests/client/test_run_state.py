"""run-state.json: a run killed outright (SIGKILL) is reported by the next attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from model_support import TINY, tiny_config

from client.training import train_site
from common.data.site import prepare_site
from common.memory.estimate import gib
from common.run_state import (
    FINISHED,
    RUN_STATE_FILE,
    RUNNING,
    STOPPED,
    RunInUseError,
    RunRecord,
    previous_run_notice,
    read_state,
)
from simulations.phantoms import write_cohort

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {**TINY, "training.batch-size": 2, "training.checkpoint-every": 2}
KILLED_AT = 3
KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from client.training import train_site
    from common.config import load_config

    settings, cache, run, ledger, killed_at = sys.argv[1:]

    def step_done(step, _):
        if step == int(killed_at):
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does

    train_site(
        load_config(json.loads(settings)), Path(cache), Path(run), site_name="a",
        ledger_dir=Path(ledger), on_step=step_done,
    )
    """
)


def _cache(tmp_path: Path) -> Path:
    cohort = write_cohort(tiny_config(**SETTINGS), tmp_path / "sites")
    prepare_site(cohort.sites[0], tmp_path / "cache", tiny_config(**SETTINGS).data)
    return tmp_path / "cache"


def test_a_run_killed_by_sigkill_is_reported_by_the_next_attempt(tmp_path: Path) -> None:
    cache, run = _cache(tmp_path), tmp_path / "run"
    args = [json.dumps(SETTINGS), str(cache), str(run), str(tmp_path / "l"), str(KILLED_AT)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *args], cwd=ROOT, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = read_state(run)
    assert state is not None
    assert state.status == RUNNING
    assert state.pid != os.getpid()
    assert state.step == 2  # recorded after the first step and at each checkpoint (every 2)
    assert state.steps == 4  # 8 cases in batches of 2
    assert state.estimated_peak > 0
    assert state.settings["training.batch-size"] == 2
    notice = previous_run_notice(run)
    assert notice is not None
    assert f"the previous run in {run} died (killed?) after" in notice
    assert "after step 2 of 4" in notice
    assert f"its estimated peak memory was {gib(state.estimated_peak)}" in notice

    notices: list[str] = []
    config = tiny_config(**SETTINGS)
    train_site(
        config, cache, run, site_name="a", ledger_dir=tmp_path / "l", on_notice=notices.append
    )
    assert notices == [notice]
    finished = read_state(run)
    assert finished is not None
    assert finished.status == FINISHED
    assert finished.step == 4
    assert previous_run_notice(run) is None


def test_a_run_stopped_by_an_error_is_not_reported_as_killed(tmp_path: Path) -> None:
    cache, run = _cache(tmp_path), tmp_path / "run"
    config = tiny_config(**SETTINGS)

    def interrupt(step: int, _: dict[str, float]) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_site(config, cache, run, site_name="a", ledger_dir=tmp_path / "l", on_step=interrupt)
    state = read_state(run)
    assert state is not None
    assert state.status == STOPPED
    assert state.step == 1
    assert previous_run_notice(run) is None


def test_a_folder_another_live_process_runs_in_is_refused(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunRecord(tmp_path, {}, 0, 3)
        state = json.loads((tmp_path / RUN_STATE_FILE).read_text(encoding="utf-8"))
        state["pid"] = sleeper.pid
        (tmp_path / RUN_STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        with pytest.raises(RunInUseError, match=f"process {sleeper.pid}"):
            previous_run_notice(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    notice = previous_run_notice(tmp_path)  # now that process is gone
    assert notice is not None
    assert "during its first step (of 3)" in notice


def test_an_unreadable_record_is_no_record(tmp_path: Path) -> None:
    (tmp_path / RUN_STATE_FILE).write_text("{not json", encoding="utf-8")
    assert read_state(tmp_path) is None
    assert previous_run_notice(tmp_path) is None
