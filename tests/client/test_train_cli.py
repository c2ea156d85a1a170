"""`fedsynth train` as a site runs it: prepared, trained with DP-SGD, refused over budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model_support import tiny_config
from typer.testing import CliRunner

from common.run_state import RUN_STATE_FILE, RunRecord
from simulations.cli import app
from simulations.phantoms import write_cohort

RUNNER = CliRunner()
SETTINGS = (
    'data.target-shape="16,16,16" data.target-spacing="12.5,12.5,12.5" model.channels="8,16" '
    "model.norm-groups=4 training.max-steps=2 privacy.noise-multiplier=3.0"
)


def _site(tmp_path: Path) -> Path:
    return write_cohort(tiny_config(), tmp_path / "sites").sites[0]


def test_train_then_sample(tmp_path: Path) -> None:
    site = _site(tmp_path)
    args = ["train", "--data", str(site), "--model", "gan", "--out", str(tmp_path / "run")]
    result = RUNNER.invoke(app, [*args, "--ledger", str(tmp_path / "l"), "--run-config", SETTINGS])
    assert result.exit_code == 0, result.output
    assert "trained gan for 2 steps; epsilon" in result.output
    assert len(list((tmp_path / "l").glob("*.json"))) == 1
    lines = result.output.splitlines()  # output not on a terminal: progress as lines
    assert [line.split(" (")[0] for line in lines if line.startswith("training gan: ")] == [
        "training gan: started",
        "training gan: 1/2",
        "training gan: 2/2",
    ]
    result = RUNNER.invoke(
        app, ["sample", "--run", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "sampling synthetic cases: 2/2" in result.output
    assert len(list((tmp_path / "r" / "labelsTr").iterdir())) == 2


def test_over_budget_training_is_a_message(tmp_path: Path) -> None:
    site = _site(tmp_path)
    args = ["train", "--data", str(site), "--out", str(tmp_path / "run")]
    settings = f"{SETTINGS} privacy.budget-epsilon=0.1"
    result = RUNNER.invoke(app, [*args, "--ledger", str(tmp_path / "l"), "--run-config", settings])
    assert result.exit_code == 2
    assert "over the budget" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.pt").exists()


def test_resume_with_other_settings_is_a_message_naming_the_key(tmp_path: Path) -> None:
    site = _site(tmp_path)
    args = ["train", "--data", str(site), "--out", str(tmp_path / "run")]
    args += ["--ledger", str(tmp_path / "l"), "--model", "gan"]
    settings = f"{SETTINGS} training.checkpoint-every=1"
    assert RUNNER.invoke(app, [*args, "--run-config", settings]).exit_code == 0
    other = settings.replace("training.max-steps=2", "training.max-steps=5")
    result = RUNNER.invoke(app, [*args, "--resume", "--run-config", other])
    assert result.exit_code == 2, result.output
    assert "other settings (training.max-steps)" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_training_that_would_not_fit_in_memory_is_a_message_before_any_charge(
    tmp_path: Path,
) -> None:
    site = _site(tmp_path)
    args = ["train", "--data", str(site), "--out", str(tmp_path / "run")]
    settings = f"{SETTINGS} training.memory-limit-gib=0.01"
    result = RUNNER.invoke(app, [*args, "--ledger", str(tmp_path / "l"), "--run-config", settings])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "training the diffusion model on 16x16x16 voxels needs an estimated" in text
    assert "only 0.01 GiB may be used (training.memory-limit-gib = 0.01)" in text
    assert "training.batch-size 2 would need" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "l").exists()
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_folder_a_live_run_trains_in_is_refused_before_its_cache_is_touched(
    tmp_path: Path,
) -> None:
    site, run = _site(tmp_path), tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunRecord(run, {}, 0, 4)
        state = json.loads((run / RUN_STATE_FILE).read_text(encoding="utf-8"))
        (run / RUN_STATE_FILE).write_text(json.dumps({**state, "pid": sleeper.pid}))
        args = ["train", "--data", str(site), "--out", str(run), "--run-config", SETTINGS]
        result = RUNNER.invoke(app, [*args, "--ledger", str(tmp_path / "l")])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"a run is still going on in this folder (process {sleeper.pid}," in text
    assert sorted(p.name for p in run.iterdir()) == [RUN_STATE_FILE]  # no cache prepared
    assert not (tmp_path / "l").exists()
