"""``fedsynth evaluate``: the central evaluator's command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress, TaskID

from common.cli.support import (
    ConfigFileOption,
    RunConfigOption,
    console,
    progress,
    user_errors,
    warn,
)
from common.config import Scalar, parse_run_config_args
from evaluator.evaluate import EVALUATION_FILE, REPORT_FILE, ProgressEvent, evaluate


class StepBars:
    """One progress line per evaluation step; a step without count is shown as a spinner-like
    bar without total, and is marked done when the next step starts."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars
        self._step = ""
        self._task: TaskID | None = None

    def __call__(self, event: ProgressEvent) -> None:
        """Show ``event``: a new line for a new step, else move the current one."""
        task = self._task
        if task is None or event.step != self._step:
            self.finish()
            self._step = event.step
            task = self._task = self._bars.add_task(event.step, total=event.total or None)
        description = f"{event.step}: {event.detail}" if event.detail else event.step
        self._bars.update(
            task, description=description, completed=event.done, total=event.total or None
        )

    def finish(self) -> None:
        """Mark the current step done (a step without total: as many as it counted, or 1)."""
        if self._task is not None:
            task = self._bars.tasks[self._task]
            done = task.total if task.total is not None else max(task.completed, 1)
            self._bars.update(self._task, total=done, completed=done)


@user_errors
def evaluate_command(
    synthetic: Path = typer.Option(..., "--synthetic", help="The release folder to evaluate."),
    real: Path = typer.Option(..., "--real", help="Real evaluation cases (any layout)."),
    out: Path = typer.Option(..., "--out", help="Folder for evaluation.json and report.html."),
    run: Path | None = typer.Option(
        None, "--run", help="The run the release came from: enables the paired figures."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out real cases with problems (data.skip-bad-cases)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Evaluate a synthetic release against real cases: realism, radiomics, utility."""
    overrides: dict[str, Scalar] = dict(parse_run_config_args(run_config, config_file))
    if skip_bad:
        overrides["data.skip-bad-cases"] = True
    with progress() as bars:
        steps = StepBars(bars)
        outcome = evaluate(
            synthetic,
            real,
            out,
            run=run,
            overrides=overrides,
            overwrite=overwrite,
            on_progress=steps,
            on_notice=warn,
        )
        steps.finish()
    results = outcome.results
    console.print(
        f"evaluated {results['release']['cases']} synthetic against {results['real']['cases']} "
        f"real cases in {results['seconds']:.1f} s"
    )
    console.print(f"numbers: {out / EVALUATION_FILE}; report: {out / REPORT_FILE}")
