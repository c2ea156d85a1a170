"""``fedsynth audit``: a site's memorization audit of a release, run on its own (the auditor's
tool). It reads the site's real training cases and writes an on-site report of real images,
so it is a site command; the maths and the reports are ``common.audit``'s.

Exit status 0 when the audit ran, flagged cases or not (the audit's finding is in its outputs
and its last line); 1 with ``--fail-on-flag`` when any case is flagged, for scripts that gate
a release on it; 2 for unusable inputs, with nothing written.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from common.audit.folder import AUDIT_FILE, CENTRAL_FILE, REPORT_FILE, AuditOutcome, audit_folder
from common.cli.support import (
    ConfigFileOption,
    RunConfigOption,
    console,
    plural,
    progress,
    user_errors,
)
from common.config import parse_run_config_args

FLAGGED_EXIT = 1


class SearchBars:
    """One progress bar per nearest-neighbour search, over its query cases."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, search: str, done: int, total: int) -> None:
        """Show that ``done`` of ``total`` query cases of ``search`` are searched."""
        if search not in self._tasks:
            self._tasks[search] = self._bars.add_task(search, total=total)
        self._bars.update(self._tasks[search], completed=done, total=total)


def counts_table(outcome: AuditOutcome) -> Table:
    """The audit's counts and its calibration method, one row."""
    counts = outcome.result["counts"]
    table = Table(title="memorization audit")
    for column in ("synthetic", "train", "holdout", "flagged", "calibration"):
        table.add_column(column)
    table.add_row(
        str(counts["synthetic"]),
        str(counts["train"]),
        str(counts["holdout"]),
        str(counts["flagged"]),
        outcome.audit.calibration.source,
    )
    return table


@user_errors
def audit_command(
    synthetic: Path = typer.Option(..., "--synthetic", help="The release folder to audit."),
    train: Path = typer.Option(..., "--train", help="The site's training cases (any layout)."),
    out: Path = typer.Option(..., "--out", help="Folder for audit.json and the reports."),
    holdout: Path | None = typer.Option(
        None, "--holdout", help="Real cases not trained on, to calibrate the thresholds."
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="The model file that made the release (RUN/server/model.pt): adds a "
        "membership-inference attack, --train cases as members, --holdout as non-members.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    fail_on_flag: bool = typer.Option(
        False, "--fail-on-flag", help="Exit with status 1 when any synthetic case is flagged."
    ),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Audit a release for memorised training cases: nearest neighbours in voxels, label maps
    and features, thresholds calibrated on the site's own patients."""
    with progress() as bars:
        searches = SearchBars(bars)
        outcome = audit_folder(
            synthetic,
            train,
            out,
            holdout=holdout,
            model=model,
            overrides=parse_run_config_args(run_config, config_file),
            overwrite=overwrite,
            on_step=lambda step: bars.console.print(f"{step} ...", highlight=False),
            on_search=searches,
        )
    console.print(counts_table(outcome))
    console.print(f"calibration: {outcome.audit.calibration.note}", highlight=False)
    if outcome.membership is not None:
        console.print(outcome.membership.sentence(), highlight=False)
    flagged = outcome.result["counts"]["flagged"]
    console.print(
        f"numbers: {out / AUDIT_FILE}; on-site report (real images, keep at the site): "
        f"{out / REPORT_FILE}; central report (distances only): {out / CENTRAL_FILE}"
    )
    colour = "red" if flagged else "green"
    console.print(f"[{colour}]{plural(flagged, 'synthetic case')} flagged[/]")
    if flagged and fail_on_flag:
        raise typer.Exit(FLAGGED_EXIT)
