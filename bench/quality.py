"""Quality of the generators as users measure it: ``fedsynth evaluate`` on a held-out cohort.

    .venv/bin/python -m bench.quality                          # every setting, family and seed
    .venv/bin/python -m bench.quality --settings quality-ct --families diffusion --seeds 0

Each run simulates a preset (``fedsynth simulate --preset NAME``) on phantom sites drawn from
the run's seed, samples as many synthetic cases as the evaluation's real arm trains on, and
evaluates them (``fedsynth evaluate --run``) against held-out real patients of the same
hospitals: the training sites' seed and scanners, cases none of them trained on. (Against
another hospital, drawn from another seed, even the sites' own real cases are told apart by
the radiomics classifier: bone AUC 1.0 on the quality-ct validation split, against 0.49 for
new patients of the same site; each run records that site gap too.) A run's figures: the
synthetic-only over real-only Dice ratio per structure with both Dice, the radiomics
real-vs-synthetic classifier AUC, diversity (within-set MS-SSIM) against the real cases',
mean structure volumes against the real ones, the site gap, the privacy spent, the training
wall time (the rounds) and the whole run's (with the calibration, the release and its
audit). Seeds give mean and spread; each setting's targets (issue 10) are
checked on the means. Each run is one child process; results are merged into
bench/results.json "quality" (runs measured earlier on the same protocol and not asked for
now are kept).

For the first seed of each setting and family, every round's global model is sampled and its
synthetic-only Dice measured (bench/quality-curve.png), and middle slices of synthetic and real
cases are drawn side by side (bench/quality-gallery-SETTING-FAMILY.png, redrawn when that
setting and family are run and the first seed's release is on disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ONE_FLAG, RESULTS, in_child, save
from common.config import FedsynthConfig, Scalar, load_config
from common.data.schema import schema_for

SETTINGS_ORDER = ("quality-ct", "quality-mri", "quality-ct-dp", "quality-ct-dp-no-prior", "demo")
FAMILIES = ("diffusion", "gan")
SEEDS = (0, 1, 2)
TRAINING_SEED_BASE = 1000
"""Training sites of bench seed k are drawn with seed TRAINING_SEED_BASE + k."""
OTHER_SITE_SEED_BASE = 5000
"""Another hospital of bench seed k (seed OTHER_SITE_SEED_BASE + k, its own scanner and
protocol): only for the site gap, how well the radiomics classifier tells two real hospitals
apart (on the quality-ct validation split, bone AUC 1.0: a 10% brighter bone at the other
hospital)."""
HELDOUT_CASES = 24
"""Held-out real cases: other patients of the training hospitals (the sites' seed and profiles,
cases after the sites' own), spread evenly over the sites; half train the real arm, half test
every arm."""
EVALUATION: dict[str, Scalar] = {
    "evaluation.utility-seeds": 1,
    "evaluation.utility-arms": "synthetic",
    "training.device": "cpu",
}
"""A run's evaluation: the synthetic arm only; the real arm is trained once per held-out
cohort and grid (:func:`real_arm`), since it depends on nothing else."""
REAL_ARM_EVALUATION: dict[str, Scalar] = {
    **EVALUATION,
    "evaluation.parts": "utility",
    "evaluation.utility-arms": "real",
}
CURVE_EVALUATION: dict[str, Scalar] = {**EVALUATION, "evaluation.parts": "utility"}
WORK = Path(__file__).with_name("work") / "quality"
CURVE_PNG = Path(__file__).with_name("quality-curve.png")
GALLERY_DIR = Path(__file__).parent
GALLERY_WINDOWS: dict[str, tuple[float, float]] = {"ct": (-250.0, 350.0), "mri": (0.0, 1000.0)}
"""The grey-value window of the gallery's slices per modality (CT: a soft-tissue window in HU)."""
SECTION = "quality"


@dataclass(frozen=True)
class Target:
    """One figure a setting must reach: ``figure`` is a key of a run's summary."""

    figure: str
    low: float | None = None
    high: float | None = None

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` lies within the bounds (None when it was not measured)."""
        if value is None or not np.isfinite(value):
            return None
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass(frozen=True)
class BenchSetting:
    """A preset as the benchmark runs it, and the targets it must reach."""

    preset: str
    overrides: dict[str, Scalar] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    families: tuple[str, ...] = FAMILIES


VOLUMES = 0.25
BENCH_SETTINGS: dict[str, BenchSetting] = {
    "quality-ct": BenchSetting(
        "quality-ct",
        targets=(
            Target("dice_ratio.bone", low=0.8),
            Target("dice_ratio.tumour", low=0.5),
            Target("classifier_auc.bone", high=0.75),
            Target("diversity_ratio", low=0.7, high=1.3),
            Target("volume_ratio.tumour", low=1 - VOLUMES, high=1 + VOLUMES),
            Target("volume_ratio.bone", low=1 - VOLUMES, high=1 + VOLUMES),
        ),
    ),
    "quality-mri": BenchSetting(
        "quality-mri",
        targets=(
            Target("dice_ratio.tumour", low=0.8),
            *(
                Target(f"volume_ratio.{name}", low=1 - VOLUMES, high=1 + VOLUMES)
                for name in ("necrotic_core", "oedema", "enhancing_tumour")
            ),
        ),
    ),
    "quality-ct-dp": BenchSetting(
        "quality-ct-dp",
        targets=(Target("dice_ratio.bone", low=0.6), Target("epsilon_max", high=8.0)),
    ),
    "quality-ct-dp-no-prior": BenchSetting(
        "quality-ct-dp",
        overrides={"model.prior": ""},
        targets=(Target("dice_ratio.bone", low=0.6), Target("epsilon_max", high=8.0)),
    ),
    "demo": BenchSetting(
        "demo",
        targets=(Target("dice_ratio.bone", low=0.5),),
        families=("diffusion",),
    ),
}


def run_settings(name: str, family: str, seed: int) -> FedsynthConfig:
    """The run settings of one benchmark run: the preset for the family, the bench's
    overrides, the training seed."""
    from simulations.presets import preset

    setting = BENCH_SETTINGS[name]
    return load_config(
        {
            **preset(setting.preset, family),
            **setting.overrides,
            "seed": TRAINING_SEED_BASE + seed,
        }
    )


def _phantom_settings(name: str) -> dict[str, Scalar]:
    """The preset's modality and phantom settings: how its sites are drawn."""
    from simulations.presets import preset

    return {
        key: value
        for key, value in preset(BENCH_SETTINGS[name].preset).items()
        if key.startswith("phantoms.") or key == "data.modality"
    }


def heldout_settings(name: str, seed: int) -> FedsynthConfig:
    """The held-out cohort's settings: the training sites' seed and sites, each site's cases
    after its own training cases, HELDOUT_CASES in all (new patients of the same hospitals)."""
    drawn = _phantom_settings(name)
    sites = load_config(drawn).phantoms
    return load_config(
        {
            **drawn,
            "phantoms.first-case": sites.cases_per_site,
            "phantoms.cases-per-site": math.ceil(HELDOUT_CASES / sites.sites),
            "seed": TRAINING_SEED_BASE + seed,
        }
    )


def other_site_settings(name: str, seed: int) -> FedsynthConfig:
    """Another hospital drawn like the preset's sites from another seed (the site gap)."""
    return load_config(
        {
            **_phantom_settings(name),
            "phantoms.sites": 1,
            "phantoms.first-case": 0,
            "phantoms.cases-per-site": HELDOUT_CASES,
            "seed": OTHER_SITE_SEED_BASE + seed,
        }
    )


def write_heldout(config: FedsynthConfig, out: Path) -> Path:
    """Write the held-out cohort as one nnU-Net folder (``out/site-01``) of every site's
    held-out cases, the first HELDOUT_CASES of them; returns that folder."""
    from common.data.nnunet import case_ids, case_paths
    from simulations.phantoms import write_cohort
    from simulations.phantoms.writers import write_dataset_json

    drawn = write_cohort(config, out / "sites")
    folder = out / "site-01"
    ids = sorted((case, site) for site in drawn.sites for case in case_ids(site))[:HELDOUT_CASES]
    for case, site in ids:
        for source, target in zip(case_paths(site, case), case_paths(folder, case), strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
    write_dataset_json(folder, config.data.modality, "heldout", len(ids))
    shutil.rmtree(out / "sites")
    return folder


# -- one run, in a child process ---------------------------------------------------------------
def run_one(name: str, family: str, seed: int, curve: bool) -> dict[str, Any]:
    """Simulate, sample, evaluate; the run's summary (JSON-ready)."""
    from common.runs import read_summary
    from evaluator.evaluate import evaluate
    from server.federation import round_reports
    from server.sampling import release_from_run
    from simulations.simulate import SERVER_DIR, simulate

    work = WORK / name / family / f"seed-{seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    config = run_settings(name, family, seed)
    real_site = write_heldout(heldout_settings(name, seed), work / "heldout")
    real_train = HELDOUT_CASES - round(HELDOUT_CASES * config.evaluation.real_test_fraction)
    snapshots: list[tuple[int, Path]] = []

    def keep_round(report: Any) -> None:
        if curve:
            snapshots.append((report.round, _snapshot(work / "sim" / SERVER_DIR, work, report)))

    started = time.perf_counter()
    outcome = simulate(config, work / "sim", on_round=keep_round)
    run_seconds = time.perf_counter() - started
    server = work / "sim" / SERVER_DIR
    train_seconds = sum(report["seconds"] for report in round_reports(server))
    release = work / "release"
    release_from_run(server, real_train, release)
    evaluation = evaluate(release, real_site, work / "eval", run=server, overrides=EVALUATION)
    real = real_arm(release, real_site, heldout_settings(name, seed), work / "real-arm")
    summary = summarise(evaluation.results, real, release, real_site, config)
    summary["site_gap_auc"] = site_gap(release, real_site, name, seed, work / "other-site")
    summary.update(
        {
            "setting": name,
            "family": family,
            "seed": seed,
            "training_seed": config.seed,
            "heldout_first_case": heldout_settings(name, seed).phantoms.first_case,
            "train_seconds": train_seconds,
            "run_seconds": run_seconds,
            "steps": outcome.summary.steps,
            "rounds": outcome.summary.rounds,
            "epsilon_per_site": [s.epsilon for s in outcome.summary.sites],
            "prior": config.model.prior,
            "calibration": read_summary(server).calibration,
        }
    )
    eps = [e for e in summary["epsilon_per_site"] if e is not None]
    summary["epsilon_max"] = max(eps) if eps else None
    if curve:
        # the last round's model is the released one, already evaluated above
        final = {"round": outcome.summary.rounds, "steps": outcome.summary.steps}
        summary["curve"] = [
            *_curve(snapshots[:-1], server, real_site, real_train, work, outcome),
            {**final, "dice": summary["synthetic_dice"]},
        ]
    summary["gallery"] = str(release)
    summary["gallery_real"] = str(real_site)
    return summary


def _snapshot(server_dir: Path, work: Path, report: Any) -> Path:
    """Keep the server checkpoint of a finished round (its global arrays)."""
    from server.federation import SERVER_CHECKPOINT_FILE

    target = work / "rounds" / f"round-{report.round}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server_dir / SERVER_CHECKPOINT_FILE, target)
    return target


def _curve(
    snapshots: list[tuple[int, Path]],
    server: Path,
    real_site: Path,
    real_train: int,
    work: Path,
    outcome: Any,
) -> list[dict[str, Any]]:
    """Synthetic-only Dice of the global model after each of the given rounds."""
    import torch

    from common.models.checkpoint import load_model, load_payload, save_model
    from evaluator.evaluate import evaluate
    from server.federation import CHECKPOINT_FORMAT
    from server.sampling import release_from_run

    model, config = load_model(server / "model.pt")
    steps_per_round = outcome.summary.steps / max(1, outcome.summary.rounds)
    points = []
    for round_number, path in snapshots:
        arrays = load_payload(path, CHECKPOINT_FORMAT, "server checkpoint")["arrays"]
        state: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in arrays.items():
            network, _, parameter = key.partition("/")
            state.setdefault(network, {})[parameter] = tensor
        model.load_network_state(state)
        run = work / "rounds" / f"run-{round_number}"
        run.mkdir(parents=True, exist_ok=True)
        save_model(run / "model.pt", model, config)
        shutil.copyfile(server / "run.json", run / "run.json")
        release_from_run(run, real_train, run / "release")
        result = evaluate(run / "release", real_site, run / "eval", overrides=CURVE_EVALUATION)
        arm = result.results["utility"]["arms"]["synthetic"]
        points.append(
            {
                "round": round_number,
                "steps": round(steps_per_round * round_number),
                "dice": {s: v["dice_mean"] for s, v in arm["structures"].items()},
            }
        )
    return points


def _cached(
    kind: str,
    cohorts: dict[str, FedsynthConfig],
    settings: FedsynthConfig,
    compute: Callable[[], Mapping[str, Any]],
) -> dict[str, Any]:
    """``compute()``'s figures, kept in work/quality/KIND/ per real cohorts, grid and
    evaluation settings (they depend on nothing else), computed only when not kept yet."""
    from common.config import to_run_config

    key = {
        **{name: to_run_config(cohort) for name, cohort in cohorts.items()},
        "data": dataclasses.asdict(settings.data),
        "evaluation": dataclasses.asdict(settings.evaluation),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    cached = WORK / kind / f"{digest[:16]}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text(encoding="utf-8")))
    figures = dict(compute())
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(figures), encoding="utf-8")
    return figures


def real_arm(
    release: Path, real_site: Path, heldout: FedsynthConfig, work: Path
) -> dict[str, float]:
    """The real arm's Dice per structure on a held-out cohort, trained once per cohort, grid
    and recipe (``release`` gives only the grid)."""
    from evaluator.cases import release_settings
    from evaluator.evaluate import evaluate

    def train() -> dict[str, float]:
        results = evaluate(release, real_site, work, overrides=REAL_ARM_EVALUATION).results
        structures = results["utility"]["arms"]["real"]["structures"]
        return {name: float(figures["dice_mean"]) for name, figures in structures.items()}

    settings = release_settings(release, REAL_ARM_EVALUATION)
    return _cached("real-arms", {"heldout": heldout}, settings, train)


def site_gap(
    release: Path, real_site: Path, name: str, seed: int, work: Path
) -> dict[str, float | None]:
    """The radiomics classifier's AUC per structure between the held-out patients of the
    training hospitals and another hospital's (:func:`other_site_settings`), both real and
    prepared on the release's grid: what the classifier sees between two real hospitals."""
    from evaluator.cases import load_real, release_settings
    from evaluator.radiomics_section import radiomics
    from simulations.phantoms import write_cohort

    settings = release_settings(release)
    other = other_site_settings(name, seed)

    def compare() -> dict[str, float | None]:
        drawn = write_cohort(other, work)
        real = load_real(real_site, settings)
        figures = radiomics(settings, real, load_real(drawn.sites[0], settings))
        return {s: _number(e.get("classifier_auc")) for s, e in figures["structures"].items()}

    cohorts = {"heldout": heldout_settings(name, seed), "other": other}
    return _cached("site-gaps", cohorts, settings, compare)


def summarise(
    results: dict[str, Any],
    real_dice: dict[str, float],
    release: Path,
    real_site: Path,
    config: FedsynthConfig,
) -> dict[str, Any]:
    """The figures the targets are about, from evaluation.json (the synthetic arm), the real
    arm's Dice and the label maps. A ratio is None where the real arm did not learn (under
    ``evaluation.min-real-dice``), as the evaluator's own report says."""
    arm = results["utility"]["arms"]["synthetic"]["structures"]
    synthetic = {name: float(figures["dice_mean"]) for name, figures in arm.items()}
    floor = config.evaluation.min_real_dice
    summary: dict[str, Any] = {
        "real_dice": real_dice,
        "synthetic_dice": synthetic,
        "dice_ratio": {
            name: synthetic[name] / real_dice[name] if real_dice[name] >= floor else None
            for name in synthetic
        },
    }
    radiomics = results["radiomics"]
    summary["classifier_auc"] = {
        s: _number(v.get("classifier_auc")) for s, v in radiomics.get("structures", {}).items()
    }
    diversity = results["realism"]["diversity"]
    real_div = diversity["real"]["mean_pairwise_msssim"]
    synthetic_div = diversity["synthetic"]["mean_pairwise_msssim"]
    summary["diversity"] = {"real": real_div, "synthetic": synthetic_div}
    summary["diversity_ratio"] = synthetic_div / real_div
    summary["paired_mae"] = results["realism"]["paired_mae"].get("mean")
    summary["volumes"] = structure_volumes(release, real_site, config)
    summary["volume_ratio"] = {
        name: (v["synthetic"] / v["real"] if v["real"] else None)
        for name, v in summary["volumes"].items()
    }
    return summary


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def structure_volumes(
    release: Path, real_site: Path, config: FedsynthConfig
) -> dict[str, dict[str, float]]:
    """Mean voxel counts per structure (and, for MRI, per BraTS subregion) of the release and
    of the real cases prepared on the release's grid."""
    from evaluator.cases import load_real, load_release, release_settings

    settings = release_settings(release)
    synthetic = load_release(release, settings)
    real = load_real(real_site, settings)
    schema = schema_for(config.data.modality)
    groups: dict[str, tuple[int, ...]] = {
        name: tuple(values) for name, values in schema.regions.items()
    }
    if config.data.modality == "mri":
        groups.update({name: (value,) for name, value in schema.labels.items()})
    return {
        name: {
            "synthetic": float(np.mean([np.isin(c.label, values).sum() for c in synthetic])),
            "real": float(np.mean([np.isin(c.label, values).sum() for c in real])),
        }
        for name, values in groups.items()
    }


# -- aggregation, figures ----------------------------------------------------------------------
def figure(run: dict[str, Any], key: str) -> float | None:
    """A run's figure by dotted key, e.g. ``dice_ratio.bone``."""
    value: Any = run
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return _number(value)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setting and family: mean and spread of every target figure over seeds, the real
    arm beside every ratio, and whether each target is met by the mean."""
    table: dict[str, Any] = {}
    for name in SETTINGS_ORDER:
        setting = BENCH_SETTINGS[name]
        for family in setting.families:
            chosen = [r for r in runs if r["setting"] == name and r["family"] == family]
            if not chosen:
                continue
            keys = sorted(
                {t.figure for t in setting.targets}
                | {f"real_dice.{s}" for s in chosen[0]["real_dice"]}
                | {f"synthetic_dice.{s}" for s in chosen[0]["synthetic_dice"]}
                | {f"site_gap_auc.{s}" for s in chosen[0].get("site_gap_auc", {})}
                | {"train_seconds", "run_seconds", "steps"}
            )
            figures: dict[str, dict[str, Any]] = {}
            means: dict[str, float | None] = {}
            for key in keys:
                values = [v for r in chosen if (v := figure(r, key)) is not None]
                means[key] = float(np.mean(values)) if values else None
                figures[key] = {
                    "mean": means[key],
                    "std": float(np.std(values)) if values else None,
                    "per_seed": values,
                }
            targets = {
                t.figure: {"low": t.low, "high": t.high, "met": t.met(means[t.figure])}
                for t in setting.targets
            }
            table[f"{name}/{family}"] = {
                "seeds": [r["seed"] for r in chosen],
                "figures": figures,
                "targets": targets,
            }
    return table


def draw_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Synthetic-only Dice against training steps, one panel per setting."""
    from matplotlib.figure import Figure

    with_curves = [r for r in runs if r.get("curve")]
    if not with_curves:
        return
    names = [n for n in SETTINGS_ORDER if any(r["setting"] == n for r in with_curves)]
    fig = Figure(figsize=(4.5 * len(names), 3.6))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        for run in (r for r in with_curves if r["setting"] == name):
            steps = [p["steps"] for p in run["curve"]]
            for structure in run["curve"][0]["dice"]:
                ax.plot(
                    steps,
                    [p["dice"][structure] for p in run["curve"]],
                    marker="o",
                    label=f"{run['family']} {structure}",
                )
                ax.axhline(run["real_dice"][structure], linestyle=":", color="grey")
        ax.set_title(f"{name} (dotted: real-only Dice)")
        ax.set_xlabel("training steps")
        ax.set_ylabel("synthetic-only Dice")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def gallery_path(setting: str, family: str) -> Path:
    """Where the gallery of one setting and family is drawn."""
    return GALLERY_DIR / f"quality-gallery-{setting}-{family}.png"


def draw_gallery(runs: list[dict[str, Any]], setting: str, family: str) -> Path | None:
    """Middle axial slices of the first seed's run of one setting and family: three synthetic
    cases, then three held-out real cases prepared on the same grid. None, and the gallery
    left as it is, when there is no such run or its release is no longer on disk (a gallery is
    never drawn from another seed than the one it names)."""
    from matplotlib.figure import Figure

    from evaluator.cases import load_real, load_release, release_settings

    mine = [r for r in runs if r["setting"] == setting and r["family"] == family]
    if not mine:
        return None
    run = min(mine, key=lambda r: int(r["seed"]))
    if not Path(run["gallery"]).is_dir():
        return None
    settings = release_settings(Path(run["gallery"]))
    synthetic = load_release(Path(run["gallery"]), settings)[:3]
    real = load_real(Path(run["gallery_real"]), settings)[:3]
    fig = Figure(figsize=(12, 2.5))
    row = fig.subplots(1, 6)
    cases = [("synthetic", c) for c in synthetic] + [("real", c) for c in real]
    for ax, (kind, case) in zip(row, cases, strict=False):
        image = case.image[case.image.shape[0] // 2]
        low, high = GALLERY_WINDOWS[settings.data.modality]
        ax.imshow(image, cmap="gray", vmin=low, vmax=high)
        ax.contour(case.label[case.image.shape[0] // 2] > 0, colors="red", linewidths=0.5)
        ax.set_title(f"{setting} {family} seed {run['seed']}\n{kind}", fontsize=7)
    for ax in row:
        ax.axis("off")
    fig.tight_layout()
    path = gallery_path(setting, family)
    fig.savefig(path, dpi=80)
    return path


# -- entry point -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Run the asked settings, families and seeds; merge into bench/results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(ONE_FLAG, nargs=4, metavar=("SETTING", "FAMILY", "SEED", "CURVE"))
    parser.add_argument("--settings", default=",".join(SETTINGS_ORDER))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--no-curve", action="store_true", help="skip the per-round curve")
    args = parser.parse_args(argv)
    if args.one:
        name, family, seed, curve = args.one
        print(json.dumps(run_one(name, family, int(seed), curve == "curve")))
        return
    runs = earlier_runs(RESULTS)
    for name in args.settings.split(","):
        setting = BENCH_SETTINGS[name]
        for family in (f for f in args.families.split(",") if f in setting.families):
            for seed in (int(s) for s in args.seeds.split(",")):
                curve = "curve" if seed == SEEDS[0] and not args.no_curve else "no-curve"
                print(f"[bench.quality] {name} {family} seed {seed}", file=sys.stderr)
                run = in_child("bench.quality", name, family, str(seed), curve)
                runs = [r for r in runs if _key(r) != _key(run)] + [run]
                save(SECTION, {"runs": runs, "summary": aggregate(runs)})
    draw_curves(runs, CURVE_PNG)
    for name in args.settings.split(","):
        for family in args.families.split(","):
            draw_gallery(runs, name, family)


def _key(run: dict[str, Any]) -> tuple[str, str, int]:
    return (run["setting"], run["family"], run["seed"])


def earlier_runs(results: Path) -> list[dict[str, Any]]:
    """The runs kept in ``results`` that were scored like the runs made now: on held-out
    patients of the training sites (they record ``heldout_first_case``). Runs scored on a
    cohort from another seed are dropped: averaged with these they would mix two protocols
    (they stay in the history of bench/results.json)."""
    if not results.exists():
        return []
    section = json.loads(results.read_text(encoding="utf-8")).get(SECTION, {})
    return [run for run in section.get("runs", []) if "heldout_first_case" in run]


if __name__ == "__main__":
    main()
