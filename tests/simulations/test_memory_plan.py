"""A simulation plans its sites' memory before the federation starts, and reports a killed one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.config import load_config
from common.run_state import RUN_STATE_FILE, RunRecord
from simulations.cli import app
from simulations.simulate import SERVER_DIR, STATE_DIR, sites_at_once

RUNNER = CliRunner()


def test_as_many_sites_train_at_once_as_the_cores_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert sites_at_once(load_config({}), 3) == 3  # 1 core per site
    assert sites_at_once(load_config({"simulation.cpus-per-site": 2.0}), 3) == 2
    assert sites_at_once(load_config({"simulation.cpus-per-site": 8.0}), 3) == 1


def test_a_simulation_that_would_not_fit_is_refused_before_any_site_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "sim"
    tight = "training.memory-limit-gib=0.01"
    result = RUNNER.invoke(
        app, ["simulate", "--preset", "smoke", "--out", str(out), "--run-config", tight]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "training the diffusion model on 16x16x16 voxels needs an estimated" in text
    # the smoke preset: batch 1 of 2 cases per site, Poisson-sampled: a step may hold both
    assert "(2 cases per step, 2 sites at once)" in text
    assert "nothing was charged or trained" in text
    assert "Traceback" not in result.output
    assert not (out / STATE_DIR).exists()  # no cache, no ledger
    assert not (out / SERVER_DIR).exists()
    assert not (out / RUN_STATE_FILE).exists()


def test_the_next_attempt_reports_a_simulation_that_was_killed(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    RunRecord(out, {}, 3 * 2**30, 5).reached(2)
    state = json.loads((out / RUN_STATE_FILE).read_text(encoding="utf-8"))
    state["pid"] = int(gone.stdout)  # a process that has ended
    (out / RUN_STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    result = RUNNER.invoke(app, ["simulate", "--preset", "smoke", "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"the previous run in {out} died (killed?) after" in text
    assert "after step 2 of 5; its estimated peak memory was 3.0 GiB" in text
    assert "resume that simulation (--resume)" in text
