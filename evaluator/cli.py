"""``fedsynth evaluate``: the central evaluator's command."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli.support import ConfigFileOption, RunConfigOption, console, user_errors
from common.config import Scalar, parse_run_config_args
from evaluator.evaluate import EVALUATION_FILE, REPORT_FILE, evaluate


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
    with console.status("evaluating") as status:
        outcome = evaluate(
            synthetic,
            real,
            out,
            run=run,
            overrides=overrides,
            overwrite=overwrite,
            on_progress=lambda step: status.update(step),
        )
    results = outcome.results
    console.print(
        f"evaluated {results['release']['cases']} synthetic against {results['real']['cases']} "
        f"real cases in {results['seconds']:.1f} s"
    )
    console.print(f"numbers: {out / EVALUATION_FILE}; report: {out / REPORT_FILE}")
