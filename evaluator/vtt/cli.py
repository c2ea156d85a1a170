"""``fedsynth vtt create | serve | score``: the visual Turing test's commands."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli.support import ConfigFileOption, RunConfigOption, console, progress, user_errors
from common.config import Scalar, parse_run_config_args
from evaluator.cli import StepBars
from evaluator.vtt.create import DEFAULT_READERS, create_study, parse_readers
from evaluator.vtt.score import REPORT_HTML, write_scores
from evaluator.vtt.server import DEFAULT_HOST, DEFAULT_PORT, create_app, serve
from evaluator.vtt.study import ADMIN, TOKENS_FILE

vtt_app = typer.Typer(
    help="Visual Turing test: readers tell real from synthetic cases, blinded.",
    no_args_is_help=True,
)


@vtt_app.command("create")
@user_errors
def create_command(
    real: Path = typer.Option(..., "--real", help="Real cases (any layout fedsynth reads)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="The release folder."),
    n: int = typer.Option(..., "--n", help="Cases drawn from each source (n real + n synthetic)."),
    out: Path = typer.Option(..., "--out", help="The study folder to write."),
    readers: str = typer.Option(
        DEFAULT_READERS, "--readers", help="Reader names, comma-separated."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the draw (default: the release's)."
    ),
    labels: bool = typer.Option(
        False,
        "--labels",
        help="Let readers show each case's label map over its image (the study showed images "
        "only, the default: a label map's look may give a synthetic case away).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing study."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Draw a balanced, blinded study of real and synthetic cases and issue reader tokens."""
    names = parse_readers(readers)
    overrides: dict[str, Scalar] = dict(parse_run_config_args(run_config, config_file))
    if seed is not None:
        overrides["seed"] = seed
    with progress() as bars:
        steps = StepBars(bars)
        created = create_study(
            real,
            synthetic,
            n,
            out,
            names,
            labels=labels,
            overrides=overrides,
            overwrite=overwrite,
            on_progress=steps,
        )
        steps.finish()
    study = created.study
    shown = "images and label maps" if labels else "images only"
    console.print(
        f"study of {len(study.cases)} cases ({n} real, {n} synthetic, {study.modality}, "
        f"{shown}) for {len(names)} readers in {out}; tokens (shown once, also in "
        f"{out / TOKENS_FILE}, mode 600):"
    )
    for name, token in created.tokens.items():
        role = "admin page" if name == ADMIN else "reader"
        console.print(f"  {name} ({role}): /login#{token}", markup=False, highlight=False)
    console.print(
        f"serve it with `fedsynth vtt serve {out}`; each link goes after http://HOST:PORT"
    )


@vtt_app.command("score")
@user_errors
def score_command(
    study: Path = typer.Argument(..., help="The study folder (with its answers)."),
    out: Path = typer.Option(..., "--out", help="Folder for the CSV files and report.html."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Score the readers: accuracy, sensitivity, specificity, binomial test, Fleiss' kappa."""
    result = write_scores(study, out, overwrite=overwrite)
    pooled = result.pooled
    console.print(
        f"{pooled.answers} answers by {len(result.readers)} readers: pooled accuracy "
        f"{pooled.accuracy:.3f} (p = {pooled.p_value:.3g} against chance), Fleiss' kappa "
        f"{result.kappa:.3f}; {out / REPORT_HTML}"
    )


@vtt_app.command("serve")
@user_errors
def serve_command(
    study: Path = typer.Argument(..., help="The study folder made by `vtt create`."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port to listen on."),
) -> None:
    """Serve the reading app: readers open their links, the admin the admin link."""
    app = create_app(study)
    console.print(
        f"serving {study} on http://{host}:{port} (links: http://{host}:{port}/login#TOKEN, "
        f"tokens in {study / TOKENS_FILE}); Ctrl-C stops it, answers are kept"
    )
    serve(app, host, port)
