"""Operator commands: ``fedsynth sample`` writes a release of synthetic pairs from a run."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli.support import console, progress, user_errors
from common.config import parse_run_config_args
from server.sampling import release_from_run


@user_errors
def sample_command(
    run: Path = typer.Option(..., "--run", help="A run folder (from fedsynth train or simulate)."),
    n: int = typer.Option(..., "--n", min=1, help="Synthetic cases to generate."),
    out: Path = typer.Option(..., "--out", help="The release folder to write (nnU-Net raw)."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default: the run's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing release."),
    run_config: str | None = typer.Option(
        None,
        "--run-config",
        help="Sampling settings as 'key=value' (model.sampler, model.sampling-steps).",
    ),
) -> None:
    """Generate N fully synthetic (image, label map) pairs and write them as a release."""
    sampling = parse_run_config_args(run_config, None)
    with progress() as bar:
        task = bar.add_task("sampling synthetic cases", total=n)
        config, case_ids = release_from_run(
            run,
            n,
            out,
            seed=seed,
            overwrite=overwrite,
            sampling=sampling,
            on_batch=lambda k: bar.advance(task, k),
        )
    console.print(
        f"wrote {len(case_ids)} synthetic {config.data.modality} cases to {out} "
        f"(imagesTr, labelsTr, dataset.json, manifest.json)"
    )
