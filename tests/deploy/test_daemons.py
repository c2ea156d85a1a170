"""Daemons start in a group of their own and are stopped by process id, descendants included."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from deploy.certificates import CertificateLayout
from deploy.commands import SuperLinkSpec
from deploy.daemons import (
    Daemon,
    check_port_free,
    free_port,
    pid_alive,
    start_daemon,
    stop_daemon,
    wait_for,
)
from deploy.errors import DaemonError, PortInUseError
from deploy.federation import Federation

# A daemon that starts a helper in a session of its own (as the SuperLink does) and sleeps.
SPAWNING = """
import subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                          start_new_session=True)
print(helper.pid, flush=True)
time.sleep(600)
"""
# A daemon that ignores SIGTERM.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""
# A daemon that fails at once.
FAILING = "import sys; print('cannot open the key file', flush=True); sys.exit(3)"


def _start(tmp_path: Path, code: str) -> Daemon:
    return start_daemon(
        "test-daemon", [sys.executable, "-c", code], tmp_path / "d.log", dict(os.environ), tmp_path
    )


def _first_line(daemon: Daemon) -> str:
    wait_for(lambda: daemon.log_text().strip() != "", 30.0, [daemon], "its first line")
    return daemon.log_text().split()[0]


def test_stopping_a_daemon_ends_helpers_that_left_its_group(tmp_path: Path) -> None:
    daemon = _start(tmp_path, SPAWNING)
    helper = int(_first_line(daemon))
    assert pid_alive(helper)
    assert os.getpgid(helper) != daemon.pid

    stopped = stop_daemon(daemon)

    assert set(stopped) >= {daemon.pid, helper}
    assert not pid_alive(daemon.pid)
    assert not pid_alive(helper)
    assert stop_daemon(daemon) == [daemon.pid]  # a second stop is harmless


def test_a_daemon_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    daemon = _start(tmp_path, STUBBORN)
    _first_line(daemon)
    started = time.monotonic()

    stop_daemon(daemon, timeout=0.5)

    assert time.monotonic() - started < 10.0
    assert daemon.process.returncode == -9


def test_a_missing_executable_is_a_daemon_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DaemonError, match="cannot start no-such-flower-binary"):
        start_daemon("x", ["no-such-flower-binary"], tmp_path / "x.log", {}, tmp_path)


def test_waiting_fails_early_with_the_log_when_a_daemon_exits(tmp_path: Path) -> None:
    daemon = _start(tmp_path, FAILING)

    with pytest.raises(DaemonError, match=r"exited with status 3.*\n.*cannot open the key file"):
        wait_for(lambda: False, 30.0, [daemon], "listening")


def test_waiting_too_long_is_a_daemon_error(tmp_path: Path) -> None:
    daemon = _start(tmp_path, STUBBORN)
    try:
        with pytest.raises(DaemonError, match=r"did not get to listening within 0 s \(still"):
            wait_for(lambda: False, 0.3, [daemon], "listening")
    finally:
        stop_daemon(daemon, timeout=0.5)


def test_a_port_in_use_is_an_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"SuperLink port: port {port} on 127.0.0.1"):
            check_port_free("127.0.0.1", port, "SuperLink port")
    check_port_free("127.0.0.1", free_port(), "SuperLink port")


def test_a_daemon_started_again_under_its_name_keeps_the_first_one_s_log(tmp_path: Path) -> None:
    federation = Federation(SuperLinkSpec(CertificateLayout(tmp_path), "127.0.0.1", 1), tmp_path)
    try:
        first, again = (
            federation.start("site-01", [sys.executable, "-c", f"print('run {n}')"]) for n in (1, 2)
        )
        for daemon in (first, again):
            daemon.process.wait(timeout=60)
    finally:
        federation.stop()
    assert first.log_text() == "run 1\n"
    assert again.log_text() == "run 2\n"
    assert again.log_path == tmp_path / "logs" / "site-01-2.log"
