"""`fedsynth train` stopped by a real SIGINT or SIGTERM: every finished step is saved, the
message says how to continue, no model is left half written, and --resume finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_support import tiny_config

from simulations.phantoms import write_cohort

FEDSYNTH = str(Path(sys.executable).with_name("fedsynth"))
STEPS = 20
SETTINGS = (
    'data.target-shape="16,16,16" data.target-spacing="12.5,12.5,12.5" model.channels="8,16" '
    f"model.norm-groups=4 training.max-steps={STEPS} training.local-epochs=1000 "
    "training.checkpoint-every=100000 privacy.noise-multiplier=3.0"  # saved by the stop only
)
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _train(tmp_path: Path, site: Path, *extra: str) -> list[str]:
    return [
        FEDSYNTH, "train", "--data", str(site), "--model", "gan", "--out", str(tmp_path / "run"),
        "--ledger", str(tmp_path / "ledger"), "--run-config", SETTINGS, *extra,
    ]  # fmt: skip


def _steps(run: Path) -> list[int]:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_resumes_where_it_stopped(tmp_path: Path, signum: int) -> None:
    site = write_cohort(tiny_config(), tmp_path / "sites").sites[0]
    run = tmp_path / "run"
    process = subprocess.Popen(
        _train(tmp_path, site), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    deadline = time.monotonic() + 300
    while len(_steps(run)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[0]
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output
    message = " ".join(output.split())
    assert f"interrupted (stopped by {signal.Signals(signum).name})" in message
    assert "run the same command with --resume to continue" in message
    assert "Traceback" not in output
    assert not (run / "model.pt").exists()
    stopped_at = _steps(run)[-1]
    assert 3 <= stopped_at < STEPS
    assert f"{stopped_at} of {STEPS} steps are saved" in message
    if signum == signal.SIGINT:
        return  # both signals take one path; resuming once (after SIGTERM) keeps the suite fast
    resumed = subprocess.run(
        _train(tmp_path, site, "--resume"), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _steps(run) == list(range(1, STEPS + 1))  # each step once, none lost or repeated
    assert (run / "model.pt").exists()
    ledgers = list((tmp_path / "ledger").glob("*.json"))
    assert len(ledgers) == 1
    assert len(json.loads(ledgers[0].read_text())["runs"]) == 1  # charged once, not twice
