"""The ``fedsynth`` command line: the composition root that mounts every role's commands.

Site commands (``data check``, ``data prepare``) live in ``client.cli``; the phantom cohorts and
the demo are researchers' tools and live here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import typer

from client.audit_cli import audit_command
from client.cli import data_app, train_command
from client.training import planned_steps
from common.cli.support import (
    ConfigFileOption,
    RunConfigOption,
    build_config,
    console,
    progress,
    setup_logging,
    user_errors,
)
from common.config import parse_run_config_args
from common.errors import ConfigError
from common.interrupts import Interrupted
from evaluator.cli import evaluate_command
from evaluator.radiomics_cli import radiomics_command
from evaluator.vtt.cli import vtt_app
from server.cli import sample_command
from simulations.demo import print_outcome, run_demo, simulate_with_progress
from simulations.phantoms import write_cohort
from simulations.presets import PRESETS, preset
from simulations.prior import make_prior

app = typer.Typer(
    name="fedsynth",
    help="Federated synthesis of 3D CT and MRI with label maps, evaluated and audited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(vtt_app, name="vtt")
app.command("train")(train_command)
app.command("sample")(sample_command)
app.command("radiomics")(radiomics_command)
app.command("evaluate")(evaluate_command)
app.command("audit")(audit_command)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every setting and step."),
) -> None:
    setup_logging(verbose)


def chosen_family(
    run_config: str | None, config_file: Path | None, flags: Mapping[str, object]
) -> str | None:
    """The generator family the user asked for (a flag, --run-config or --config), if any:
    a preset then adds that family's settings."""
    family = flags.get("model.family") or parse_run_config_args(run_config, config_file).get(
        "model.family"
    )
    return str(family) if family else None


@app.command("phantoms")
@user_errors
def phantoms_command(
    out: Path = typer.Option(..., "--out", help="Folder to write, one sub-folder per site."),
    modality: str | None = typer.Option(None, "--modality", help="ct or mri (data.modality)."),
    cases: int | None = typer.Option(None, "--cases", help="Cases per site."),
    first_case: int | None = typer.Option(
        None,
        "--first-case",
        help="Each site's first case index: the same seed and --sites with --first-case N "
        "draw other patients of the same hospitals (a held-out cohort).",
    ),
    sites: int | None = typer.Option(None, "--sites", help="Number of sites."),
    size: int | None = typer.Option(None, "--size", help="Voxels per side."),
    layout: str | None = typer.Option(None, "--layout", help="nnunet or brats (MRI only)."),
    seed: int | None = typer.Option(None, "--seed", help="The run's seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Write a deterministic phantom cohort (head-and-neck CT or brain glioma MRI)."""
    flags = {
        "data.modality": modality,
        "phantoms.cases-per-site": cases,
        "phantoms.first-case": first_case,
        "phantoms.sites": sites,
        "phantoms.size": size,
        "phantoms.layout": layout,
        "seed": seed,
    }
    config = build_config(run_config, config_file, flags)
    total = config.phantoms.sites * config.phantoms.cases_per_site
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"{config.data.modality} phantoms", total=total)
        summary = write_cohort(
            config, out, overwrite=overwrite, on_case=lambda _: bar.advance(task)
        )
    elapsed = time.perf_counter() - started
    console.print(
        f"wrote {total} {config.data.modality} cases for {config.phantoms.sites} sites "
        f"({config.phantoms.layout} layout) to {summary.out} in {elapsed:.1f} s"
    )


@app.command("simulate")
@user_errors
def simulate_command(
    out: Path = typer.Option(..., "--out", help="The simulation folder to write."),
    preset_name: str | None = typer.Option(
        None, "--preset", help=f"Start from a preset: {', '.join(sorted(PRESETS))}."
    ),
    sites: Path | None = typer.Option(
        None, "--sites", help="One sub-folder per site (default: a phantom cohort is made)."
    ),
    rounds: int | None = typer.Option(None, "--rounds", help="federation.num-rounds"),
    model: str | None = typer.Option(None, "--model", help="gan or diffusion (model.family)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed simulation."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Federated training of many sites on this machine (Flower's simulation engine)."""
    if preset_name is None and config_file is None:
        raise ConfigError("give --preset NAME or --config FILE (or both) to say what to simulate")
    flags = {"federation.num-rounds": rounds, "model.family": model}
    base = None
    if preset_name is not None:
        base = preset(preset_name, chosen_family(run_config, config_file, flags))
    config = build_config(run_config, config_file, flags, base=base)
    console.print(
        f"simulating {config.federation.num_rounds} rounds of {config.model.family} training "
        f"in Flower's simulation engine (DP-SGD {'on' if config.privacy.enabled else 'off'})"
    )
    try:
        outcome = simulate_with_progress(config, out, sites_dir=sites, resume=resume)
    except Interrupted as err:
        raise err.with_hint(
            "the rounds finished so far are saved; run the same command with --resume to continue"
        ) from None
    print_outcome(outcome)


@app.command("prior")
@user_errors
def prior_command(
    out: Path = typer.Option(..., "--out", help="The prior file to write (model.prior takes it)."),
    preset_name: str = typer.Option(
        "prior-ct", "--preset", help=f"Settings to start from: {', '.join(sorted(PRESETS))}."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """Train a public prior on phantoms alone (no site data, no privacy cost) for training
    to start from (model.prior)."""
    family = chosen_family(run_config, config_file, {})
    config = build_config(run_config, config_file, {}, base=preset(preset_name, family))
    started = time.perf_counter()
    steps = planned_steps(config.phantoms.cases_per_site, config)
    with progress() as bar:
        task = bar.add_task("training the public prior", total=steps)
        provenance = make_prior(
            config,
            out,
            overwrite=overwrite,
            on_step=lambda step, _: bar.update(task, completed=step),
        )
    elapsed = time.perf_counter() - started
    console.print(
        f"wrote the public prior {out}: {config.model.family} trained {provenance['steps']} "
        f"steps on {provenance['cases']} public phantom cases in {elapsed:.0f} s"
    )


@app.command("demo")
@user_errors
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for everything it makes."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Replace an earlier demo."),
    run_config: str | None = RunConfigOption,
    config_file: Path | None = ConfigFileOption,
) -> None:
    """The main job on embedded phantoms: three hospitals train a generator together with
    DP-SGD, and the server releases synthetic CT."""
    config = build_config(run_config, config_file, {}, base=preset("demo"))
    run_demo(config, out, overwrite=overwrite)


def main() -> None:
    """Entry point of the ``fedsynth`` console script."""
    app()
