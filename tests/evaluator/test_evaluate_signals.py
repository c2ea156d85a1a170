"""`fedsynth evaluate` and `fedsynth data prepare` stopped by a real SIGTERM or SIGINT: the
stop message, exit 128 + signal, every process the command started (the radiomics workers
and their fork server) ended, and no output, not even a partial one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from model_support import TINY, release_of_cache

from common.config import load_config
from common.data.site import prepare_site
from simulations.phantoms import write_cohort

FEDSYNTH = str(Path(sys.executable).with_name("fedsynth"))
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
CASES = 24
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
"""How long a stopped command may take to exit: a case running in each worker finishes, the
queued ones are cancelled."""


def _world(root: Path, size: int) -> tuple[Path, Path]:
    """A site of ``CASES`` phantoms at ``size``^3 and a release copying its prepared cases."""
    config = load_config(
        {
            **TINY,
            "phantoms.cases-per-site": CASES,
            "phantoms.size": size,
            "data.target-shape": f"{size},{size},{size}",
            "data.target-spacing": "6.25,6.25,6.25",
        }
    )
    site = write_cohort(config, root / "sites").sites[0]
    prepare_site(site, root / "cache", config.data)
    release_of_cache(root / "cache", root / "release", config)
    return site, root / "release"


Ready = Callable[[psutil.Process, str], bool]


def _stop_when(
    command: list[str], log: Path, ready: Ready, signum: int
) -> tuple[subprocess.Popen[bytes], str, list[psutil.Process]]:
    """Start ``command`` (output into ``log``), wait until ``ready(process, output so far)``,
    send ``signum`` (SIGINT to its process group, as a terminal's Ctrl-C); the process, its
    whole output and the processes it had started."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if ready(psutil.Process(process.pid), log.read_text(errors="replace")):
                break
            time.sleep(0.05)
        assert process.poll() is None, log.read_text(errors="replace")
        descendants = psutil.Process(process.pid).children(recursive=True)
        if signum == signal.SIGINT:  # as Ctrl-C in a terminal: to the whole process group
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:  # only if the stop failed: the test fails below then
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process, log.read_text(errors="replace"), descendants


def _stopped_cleanly(process: subprocess.Popen[bytes], output: str, signum: int) -> None:
    assert process.returncode == 128 + signum, output
    message = " ".join(output.split())
    assert f"interrupted (stopped by {signal.Signals(signum).name})" in message
    assert "nothing partial was kept" in message
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_evaluation_ends_its_radiomics_workers_and_writes_nothing(
    tmp_path: Path, signum: int
) -> None:
    site, release = _world(tmp_path, 16)
    out = tmp_path / "eval"
    command = [
        FEDSYNTH, "evaluate", "--synthetic", str(release), "--real", str(site), "--out", str(out),
        "--run-config", 'evaluation.parts="radiomics" evaluation.radiomics-workers=2',
    ]  # fmt: skip

    def workers_busy(parent: psutil.Process, _: str) -> bool:  # the fork server, 2 workers
        return len(parent.children(recursive=True)) >= 3

    process, output, descendants = _stop_when(command, tmp_path / "log", workers_busy, signum)
    _stopped_cleanly(process, output, signum)
    assert len(descendants) >= 3
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert not out.exists()
    assert not list(tmp_path.glob(".eval.*"))  # no staging left beside it


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_prepare_leaves_no_cache_and_no_staging(tmp_path: Path, signum: int) -> None:
    site, _ = _world(tmp_path, 16)
    out = tmp_path / "prepared"
    command = [
        FEDSYNTH, "data", "prepare", str(site), "--out", str(out),
        "--run-config", 'data.target-shape="96,96,96" data.target-spacing="1.5,1.5,1.5"',
    ]  # fmt: skip

    def preparing(_: psutil.Process, output: str) -> bool:
        return "preparing cases" in output

    process, output, _ = _stop_when(command, tmp_path / "log", preparing, signum)
    _stopped_cleanly(process, output, signum)
    assert "run the same command again to start over" in " ".join(output.split())
    assert "cases into" not in output  # the line of a finished prepare
    assert not out.exists()
    assert not list(tmp_path.glob(".prepared.*"))
