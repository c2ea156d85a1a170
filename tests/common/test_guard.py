"""The CLI's last line of defence: every exception type ends as a short message, never a
traceback or "Aborted.", and a bug leaves its traceback in a log file."""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import torch
import typer
from typer.testing import CliRunner

import common.cli.guard as guard
from common.cli.support import user_errors
from common.errors import DataError
from common.interrupts import Interrupted
from simulations.cli import app as fedsynth_app

RUNNER = CliRunner()


def _library_error() -> None:
    torch.zeros(2) @ torch.zeros(3)  # torch's own RuntimeError


def _decode_error() -> None:
    b"\xff\xfe".decode("utf-8")


def _app(failure: Callable[[], None]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @user_errors
    def run() -> None:
        failure()

    return app


def _raise(err: BaseException) -> Callable[[], None]:
    def failure() -> None:
        raise err

    return failure


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (_raise(EOFError("Compressed file ended")), "ended early, it may be truncated"),
        (_raise(MemoryError()), "out of memory; lower training.batch-size"),
        (
            _raise(OSError(errno.ENOSPC, "No space left on device", "/data/out/model.pt")),
            "the disk is full (/data/out/model.pt): free some space",
        ),
        (
            _raise(PermissionError(errno.EACCES, "Permission denied", "/secure/ledger")),
            "permission denied (/secure/ledger)",
        ),
        (_decode_error, "not UTF-8 text (invalid start byte at byte 0)"),
        (_raise(OSError(errno.EIO, "Input/output error", "/mnt/disk")), "Input/output error"),
        (_raise(DataError("/x.nii", "unreadable", "is truncated")), "/x.nii: is truncated"),
    ],
)
def test_machine_and_input_trouble_is_a_message(
    failure: Callable[[], None], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "CRASH_LOG_DIR", tmp_path / "logs")
    result = RUNNER.invoke(_app(failure), [])
    assert result.exit_code == guard.USER_ERROR_EXIT, result.output
    assert expected in result.output.replace("\n", " ")
    assert "Traceback" not in result.output
    assert "Aborted" not in result.output
    assert not (tmp_path / "logs").exists()  # not a bug: no crash log


@pytest.mark.parametrize("failure", [_library_error, _raise(KeyError("oops"))])
def test_a_bug_says_where_its_traceback_is(
    failure: Callable[[], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "CRASH_LOG_DIR", tmp_path / "logs")
    result = RUNNER.invoke(_app(failure), [])
    assert result.exit_code == guard.BUG_EXIT, result.output
    text = result.output.replace("\n", "")  # a long path wraps anywhere
    words = " ".join(result.output.split())  # a sentence wraps at a space
    assert "fedsynth failed unexpectedly" in words
    assert "please report it to" in words
    assert "Traceback" not in result.output
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in text
    assert log.read_text(encoding="utf-8").startswith("Traceback (most recent call last)")
    assert "failure()" in log.read_text(encoding="utf-8")


def test_a_bug_whose_log_cannot_be_written_still_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(guard, "CRASH_LOG_DIR", blocker / "logs")
    result = RUNNER.invoke(_app(_raise(ValueError("bad"))), [])
    assert result.exit_code == guard.BUG_EXIT
    assert "the traceback could not be written" in result.output.replace("\n", " ")


def test_ctrl_c_is_a_message_with_the_shell_status() -> None:
    result = RUNNER.invoke(_app(_raise(KeyboardInterrupt())), [])
    assert result.exit_code == guard.INTERRUPTED_EXIT
    text = " ".join(result.output.split())
    assert "interrupted; nothing partial was kept; run the same command again to start" in text
    assert "Aborted" not in result.output


@pytest.mark.parametrize(
    ("stop", "continuing"),
    [
        (Interrupted(signal.SIGTERM), "run the same command again to start over"),
        (Interrupted(signal.SIGTERM, "run it with --resume"), "run it with --resume"),
    ],
)
def test_a_stop_by_signal_says_how_to_continue(stop: Interrupted, continuing: str) -> None:
    result = RUNNER.invoke(_app(_raise(stop)), [])
    assert result.exit_code == 128 + signal.SIGTERM
    text = " ".join(result.output.split())
    assert f"interrupted (stopped by SIGTERM); nothing partial was kept; {continuing}" in text


def test_data_check_of_a_reader_raising_eof_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import client.cli

    def cut(*args: object, **kwargs: object) -> None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(client.cli, "check_site", cut)
    (tmp_path / "site").mkdir()
    result = RUNNER.invoke(fedsynth_app, ["data", "check", str(tmp_path / "site")])
    assert result.exit_code == guard.USER_ERROR_EXIT, result.output
    assert "ended early" in result.output
    assert "Aborted" not in result.output


def _commands(group: click.Group) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in _commands(command)]
        else:
            found.append((name, command))
    return found


def test_every_fedsynth_command_has_the_last_line_of_defence() -> None:
    root = typer.main.get_command(fedsynth_app)
    assert isinstance(root, click.Group)
    commands = _commands(root)
    assert len(commands) >= 10
    unguarded = [
        name
        for name, command in commands
        if not getattr(getattr(command.callback, "__wrapped__", None), "guarded", False)
        and not getattr(command.callback, "guarded", False)
    ]
    assert unguarded == []
