"""What every fedsynth command shares: one console, user errors as messages, config from flags."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from common.cli.guard import (
    BUG_EXIT,
    INTERRUPTED_EXIT,
    USER_ERROR_EXIT,
    bug_message,
    environment_message,
    write_crash_log,
)
from common.config import FedsynthConfig, Scalar, load_config, log_config, parse_run_config_args
from common.interrupts import (
    Interrupted,
    exit_without_waiting_for_threads,
    stop_on_signals,
    stop_requested,
)

console = Console()
error_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

RunConfigOption = typer.Option(
    None,
    "--run-config",
    help="Settings as 'key=value key2=value2' (TOML values, strings quoted), as for flwr run.",
)
ConfigFileOption = typer.Option(
    None,
    "--config",
    help="A TOML file of settings (flat dotted keys, or a pyproject [tool.flwr.app.config]).",
    dir_okay=False,
)


AGAIN = "run the same command again to start over"
"""How to continue a stopped command that has nothing to resume from."""


def _error(text: str) -> None:
    error_console.print(Text.assemble(("error: ", "bold red"), text), highlight=False)


def _then(hint: str) -> str:
    return f"; {hint}" if hint else ""


def warn(text: str) -> None:
    """A warning the user should read (e.g. that an earlier run in the folder was killed)."""
    error_console.print(Text.assemble(("warning: ", "bold yellow"), text), highlight=False)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Every exception as a message, never a traceback or "Aborted.": typed errors and the
    machine's (disk, memory, permissions, truncated input) exit 2; SIGINT (Ctrl-C) and SIGTERM
    unwind cleanly (``common.interrupts``) and exit 130 and 143, saying how to continue;
    anything else is a bug, its traceback written to a log file, exit 3 (``common.cli.guard``)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with stop_on_signals():
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Interrupted as err:
            _error(f"interrupted ({err}); nothing partial was kept{_then(err.hint or AGAIN)}")
            exit_without_waiting_for_threads(err.exit_code)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            _error(f"interrupted; nothing partial was kept{_then(AGAIN)}")
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except Exception as err:  # the last line of defence: nothing escapes as a traceback
            message = environment_message(err)
            if message is not None:
                _error(message)
                raise typer.Exit(USER_ERROR_EXIT) from None
            _error(bug_message(err, write_crash_log(err)))
            raise typer.Exit(BUG_EXIT) from None

    wrapper.guarded = True  # type: ignore[attr-defined]
    return wrapper


def build_config(
    run_config: str | None,
    config_file: Path | None,
    flags: dict[str, Any],
    *,
    base: dict[str, Scalar] | None = None,
) -> FedsynthConfig:
    """Defaults, a preset (``base``), the config file, --run-config, then explicit flags."""
    merged: dict[str, Scalar] = dict(base or {})
    merged.update(parse_run_config_args(run_config, config_file))
    merged.update({key: value for key, value in flags.items() if value is not None})
    config = load_config(merged)
    log_config(config)
    return config


def plural(count: int, noun: str) -> str:
    """'1 case', '2 cases'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


PROGRESS_LINES_PER_TASK = 10
"""Off a terminal, a task prints a line each time it passes another tenth of its total."""


class LineProgress(Progress):
    """Progress for output sent to a file or a pipe, where rich draws nothing until the end:
    a plain line when a task starts and each time it passes another tenth of its total."""

    def __init__(self, output: Console) -> None:
        super().__init__(console=output, disable=True)
        self._reported: dict[TaskID, int] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self.console.print(f"{description}: started", markup=False, highlight=False)
        self._reported[task_id] = 0
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if not task.total:
            return
        tenth = int(PROGRESS_LINES_PER_TASK * min(task.completed, task.total) / task.total)
        if tenth <= self._reported[task_id]:
            return
        self._reported[task_id] = tenth
        elapsed = int(task.elapsed or 0)
        self.console.print(
            f"{task.description}: {task.completed:g}/{task.total:g} ({elapsed} s)",
            markup=False,
            highlight=False,
        )


def progress(output: Console | None = None) -> Progress:
    """A rich progress bar for steps over cases or rounds on a terminal; plain progress lines
    (:class:`LineProgress`) when the output goes to a file or a pipe."""
    output = output or console
    if not output.is_terminal:
        return LineProgress(output)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output,
        transient=False,
    )


def setup_logging(verbose: bool) -> None:
    """INFO logs (every resolved setting among them) with --verbose, warnings otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=error_console, show_path=False)],
        force=True,
    )
    flower = logging.getLogger(FLOWER_LOGGER)
    flower.setLevel(logging.INFO if verbose else logging.WARNING)
    flower.propagate = False  # Flower prints through its own handler; no second copy
    if not any(isinstance(f, _FlowerNoise) for f in flower.filters):
        flower.addFilter(_FlowerNoise())


FLOWER_LOGGER = "flwr"
FLOWER_NOISE = (
    "The `run_simulation` function is deprecated",
    "fraction_evaluate is set to 0.0",  # fedsynth evaluates centrally, never at the sites
)
"""Flower log lines fedsynth users cannot act on (fedsynth drives the simulation engine).
After a stop signal every Flower line is left out too: its threads report the Ray actors the
stop ends, mid-round, as errors with tracebacks."""


class _FlowerNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if stop_requested():
            return False
        return not any(text in record.getMessage() for text in FLOWER_NOISE)
