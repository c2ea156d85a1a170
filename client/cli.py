"""Site commands a hospital runs on its own data: data check, data prepare and train."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from client.site_data import DEFAULT_LEDGER_DIR
from client.training import planned_steps, train_site
from common.cli.support import (
    ConfigFileOption,
    RunConfigOption,
    build_config,
    console,
    error_console,
    plural,
    progress,
    user_errors,
    warn,
)
from common.data.layouts import list_cases
from common.data.site import SiteReport, check_site, prepare_site
from common.run_state import refuse_if_in_use

data_app = typer.Typer(help="Check and prepare a site's images.", no_args_is_help=True)

ModalityOption = typer.Option(None, "--modality", help="ct or mri (data.modality).")
LayoutOption = typer.Option(None, "--layout", help="auto, nnunet, brats or pattern (data.layout).")
SkipBadOption = typer.Option(
    None,
    "--skip-bad/--no-skip-bad",
    help="Leave out cases with problems, and say how many (data.skip-bad-cases).",
)


def _range(report_range: tuple[float, float] | None) -> str:
    return "-" if report_range is None else f"{report_range[0]:.5g} .. {report_range[1]:.5g}"


def site_table(report: SiteReport) -> Table:
    """A table of every case: shape, spacing, intensity range, label voxel counts and the kinds
    of its problems (:func:`problem_lines` gives each problem in full)."""
    table = Table(title=f"{report.listing.root} ({report.listing.layout} layout)")
    for column in ("case", "shape (x,y,z)", "spacing mm", "intensity", "label voxels", "problems"):
        table.add_column(column, overflow="fold")
    for case in report.cases:
        counts = ", ".join(f"{name} {count}" for name, count in case.label_counts.items())
        if case.bone_source == "threshold":
            counts += " (bone by HU threshold)"
        problems = ", ".join(dict.fromkeys(f"[red]{p.kind.value}[/]" for p in case.problems))
        table.add_row(
            case.case_id,
            "x".join(str(s) for s in case.shape) or "-",
            "x".join(f"{s:.3g}" for s in case.spacing) or "-",
            _range(case.intensity_range),
            counts or "-",
            problems or "[green]ok[/]",
        )
    return table


def problem_lines(report: SiteReport) -> list[str]:
    """Every problem of every case in full, one line each (long lines wrap as prose)."""
    return [
        f"[bold]{case.case_id}[/] [red]{problem.kind.value}[/]: {problem}"
        for case in report.cases
        for problem in case.problems
    ]


@data_app.command("check")
@user_errors
def check_command(
    path: Path = typer.Argument(..., help="A site folder, or one case's folder."),
    modality: str | None = ModalityOption,
    layout: str | None = LayoutOption,
    skip_bad: bool | None = SkipBadOption,
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Check every case of a site; exit 0 when all are valid, 1 with every problem listed."""
    flags = {"data.modality": modality, "data.layout": layout, "data.skip-bad-cases": skip_bad}
    config = build_config(run_config, config_file, flags)
    total = len(list_cases(path, config.data).cases)
    with progress() as bar:
        task = bar.add_task("checking cases", total=total)
        report = check_site(path, config.data, on_case=lambda _: bar.advance(task))
    console.print(site_table(report))
    for line in problem_lines(report):
        console.print(line, highlight=False)
    for problem in report.listing.problems:
        error_console.print(f"[red]{problem.kind.value}[/]: {problem}", highlight=False)
    good, bad = len(report.good_cases), report.bad_case_count
    if report.ok:
        console.print(f"[green]all {good} cases are valid[/]")
        return
    if config.data.skip_bad_cases and good:
        console.print(
            f"[yellow]{plural(bad, 'bad case')} would be skipped; {plural(good, 'case')} valid[/]"
        )
        return
    error_console.print(
        f"[red]{plural(len(report.problems), 'problem')} in {plural(bad, 'case')}[/] "
        f"({good} valid); "
        "fix them or pass --skip-bad to leave those cases out"
    )
    raise typer.Exit(1)


@data_app.command("prepare")
@user_errors
def prepare_command(
    path: Path = typer.Argument(..., help="A site folder."),
    out: Path = typer.Option(..., "--out", help="The site's cache folder to write."),
    modality: str | None = ModalityOption,
    layout: str | None = LayoutOption,
    skip_bad: bool | None = SkipBadOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Check, preprocess (orient, resample, crop, normalise) and cache a site's cases."""
    flags = {"data.modality": modality, "data.layout": layout, "data.skip-bad-cases": skip_bad}
    config = build_config(run_config, config_file, flags)
    with progress() as bar:
        task = bar.add_task("preparing cases", total=None)
        summary = prepare_site(
            path, out, config.data, overwrite=overwrite, on_case=lambda _: bar.advance(task)
        )
    if summary.skipped:
        console.print(f"[yellow]skipped {plural(summary.skipped, 'bad case')}[/]")
    fingerprint = summary.index.fingerprint[:12]
    console.print(f"prepared {summary.prepared} cases into {out} (fingerprint {fingerprint})")


@user_errors
def train_command(
    data: Path = typer.Option(..., "--data", help="The site's data folder."),
    model: str | None = typer.Option(None, "--model", help="gan or diffusion (model.family)."),
    out: Path = typer.Option(..., "--out", help="The run folder to write."),
    ledger: Path = typer.Option(
        DEFAULT_LEDGER_DIR, "--ledger", help="The site's privacy ledger folder (kept for good)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    skip_bad: bool | None = SkipBadOption,
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Train a generator at one site (also the study's centralised baseline)."""
    flags = {"model.family": model, "data.skip-bad-cases": skip_bad}
    config = build_config(run_config, config_file, flags)
    refuse_if_in_use(out)  # before the cache in it is replaced
    cache = out / "cache"
    with progress() as bar:
        task = bar.add_task("preparing cases", total=None)
        prepared = prepare_site(
            data, cache, config.data, overwrite=True, on_case=lambda _: bar.advance(task)
        )
        dataset_size = prepared.prepared
        bar.update(task, total=dataset_size, completed=dataset_size)
        steps = planned_steps(dataset_size, config)
        task = bar.add_task(f"training {config.model.family}", total=steps)
        summary = train_site(
            config,
            cache,
            out,
            site_name="site",
            ledger_dir=ledger,
            resume=resume,
            on_step=lambda step, _: bar.update(task, completed=step),
            on_notice=warn,
        )
    site = summary.sites[0]
    privacy = (
        f"epsilon {site.epsilon:.3g} at delta {site.delta:g} (ledger {ledger})"
        if site.epsilon is not None
        else "no DP-SGD (privacy.enabled=false)"
    )
    losses = ", ".join(f"{k} {v:.4g}" for k, v in summary.final_losses.items())
    console.print(f"trained {summary.family} for {summary.steps} steps; {privacy}; {losses}")
    console.print(f"model: {out / 'model.pt'} (hash {summary.model_hash[:12]})")
