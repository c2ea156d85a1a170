"""Starting and stopping daemons by process id, and waiting for them.

Each daemon runs in a session (process group) of its own, its output in a log file. Stopping
one sends SIGTERM to its group, waits, then SIGKILLs the group and every descendant that left
it (Flower's SuperLink starts its SuperExec in a new session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import DaemonError, PortInUseError

# Seconds a daemon gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0
# How often waits poll.
POLL_INTERVAL_S = 0.2
# Lines of a daemon's log quoted in an error.
LOG_TAIL_LINES = 25
# Where Linux lists processes; elsewhere descendants outside the group are not tracked.
PROC = Path("/proc")


@dataclass
class Daemon:
    """A started daemon: its name, command, process and log file."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Its process id (also its process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """Everything it has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Its last ``lines`` log lines."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def failure(self, what: str) -> DaemonError:
        """A :class:`DaemonError` saying ``what`` went wrong, with its exit status and log."""
        status = self.process.poll()
        state = "still running" if status is None else f"exited with status {status}"
        return DaemonError(f"{self.name} {what} ({state}; log {self.log_path}):\n{self.log_tail()}")


def start_daemon(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path
) -> Daemon:
    """Start ``argv`` in a new session with its output in ``log_path``.

    Raises:
        DaemonError: the executable cannot be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as err:
            raise DaemonError(
                f"{name}: cannot start {argv[0]} ({err}); is flwr installed (make install)?"
            ) from None
    return Daemon(name, list(argv), process, log_path)


def descendants(pid: int) -> list[int]:
    """Process ids of every live descendant of ``pid`` (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_daemon(daemon: Daemon, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop ``daemon``: SIGTERM to its process group, then SIGKILL after ``timeout`` seconds.

    Descendants that left its group are killed by process id. Safe to call twice. Returns
    the ids of the daemon and of the descendants it had.
    """
    family = descendants(daemon.pid)
    _signal_group(daemon.pid, signal.SIGTERM)
    try:
        daemon.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(daemon.pid, signal.SIGKILL)
        daemon.process.wait()
    _signal_group(daemon.pid, signal.SIGKILL)  # helpers left in its group
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S / 10)
    return [daemon.pid, *family]


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists and is not a zombie."""
    if PROC.is_dir():
        try:
            state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_port_free(host: str, port: int, setting: str) -> None:
    """Raise :class:`PortInUseError` (naming ``setting``) when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUseError(setting, host, port) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    watched: Sequence[Daemon],
    what: str,
) -> None:
    """Poll ``condition`` until true; fail early if a ``watched`` daemon exits.

    Raises:
        DaemonError: a watched daemon exited, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        for daemon in watched:
            if not daemon.alive():
                raise daemon.failure(f"exited while waiting for {what}")
        if time.monotonic() > deadline:
            culprit = watched[0] if watched else None
            if culprit is not None:
                raise culprit.failure(f"did not get to {what} within {timeout:.0f} s")
            raise DaemonError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(POLL_INTERVAL_S)
