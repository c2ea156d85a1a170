"""`fedsynth audit` on tiny phantoms: planted copies of training cases flagged, fresh phantoms
not; outputs name no real case; the central report holds no real image; every bad input is a
message (exit 2) naming the path, with nothing written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from audit_support import (
    PLANTS,
    SMALL_GRID,
    plant,
    stacked,
    write_case_release,
    write_phantom_site,
)
from typer.testing import CliRunner

from common.audit.calibration import HOLDOUT, LEAVE_ONE_OUT
from common.audit.folder import AUDIT_FILE, CENTRAL_FILE, REPORT_FILE
from common.audit.inputs import load_real_cases
from common.audit.membership import attack_scores, roc_auc
from common.config import Scalar, load_config
from common.models.checkpoint import load_model, save_model
from common.models.registry import build_model
from common.release import MANIFEST_FILE
from simulations.cli import app

RUNNER = CliRunner()
CONFIG = load_config({**SMALL_GRID, "seed": 1})
SOURCE = 0
"""The training case every plant copies (train-001)."""
FRESH = 4
IMG = re.compile(r'<img alt="([^"]*)"')


def _audit(*args: str | Path) -> tuple[int, str]:
    result = RUNNER.invoke(app, ["audit", *(str(a) for a in args)])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 training and 3 held-out phantoms (seeds 1, 2); a release of the 4 plants of training
    case 0 (synth_0000-0003) then 4 fresh phantoms of seed 3 (synth_0004-0007)."""
    root = tmp_path_factory.mktemp("audit-world")
    paths = {
        "root": root,
        "train": write_phantom_site(root / "train", 1, 6),
        "holdout": write_phantom_site(root / "holdout", 2, 3),
        "fresh": write_phantom_site(root / "fresh", 3, FRESH),
        "one": write_phantom_site(root / "one", 4, 1),
    }
    train, _ = load_real_cases(paths["train"], CONFIG)
    fresh, _ = load_real_cases(paths["fresh"], CONFIG)
    planted = [plant(train, fresh, kind, SOURCE, seed=SOURCE) for kind in PLANTS]
    new = [(fresh.images[i].numpy(), fresh.labels[i].numpy()) for i in range(FRESH)]
    write_case_release(stacked(planted + new), root / "release", CONFIG)
    write_case_release(stacked([planted[0], *new[:2]]), root / "small", CONFIG)
    return {**paths, "release": root / "release", "small": root / "small"}


@pytest.fixture(scope="module")
def flagged_run(world: dict[str, Path]) -> tuple[int, str, Path]:
    """The audit of the planted release with --fail-on-flag, 3 held-out cases (the fallback)
    and one closest unflagged case in the on-site report."""
    out = world["root"] / "audit"
    code, output = _audit(
        "--synthetic", world["release"], "--train", world["train"],
        "--holdout", world["holdout"], "--out", out, "--fail-on-flag",
        "--run-config", "audit.report-closest=1",
    )  # fmt: skip
    return code, output, out


def test_planted_copies_are_flagged_and_fresh_phantoms_are_not(
    flagged_run: tuple[int, str, Path],
) -> None:
    code, output, out = flagged_run
    assert code == 1, output  # --fail-on-flag: some case is flagged
    result = json.loads((out / AUDIT_FILE).read_text(encoding="utf-8"))
    cases = {case["case"]: case for case in result["cases"]}
    planted = [f"synth_{i:04d}" for i in range(len(PLANTS))]
    assert [name for name, case in cases.items() if case["flagged"]] == planted
    for name in planted:
        assert cases[name]["neighbours"]["voxels"][0]["id"] == "train-001"
        assert "< threshold" in cases[name]["reason"]
    for kind, name in zip(PLANTS[:3], planted, strict=False):  # label maps copied, shift undone
        assert cases[name]["nearest"]["labels"] == 0.0, kind
    for name in cases.keys() - set(planted):
        assert cases[name]["reason"] == "farther than every threshold"
    assert result["counts"] == {"synthetic": 8, "train": 6, "holdout": 3, "flagged": 4}
    calibration = result["calibration"]
    assert (calibration["source"], calibration["cases"]) == (LEAVE_ONE_OUT, 6)
    assert "fallback: 3 held-out cases, fewer than audit.min-holdout = 10" in calibration["note"]
    assert result["release"] == {"family": "gan", "model_hash": "ab" * 32, "seed": 5, "cases": 8}


def test_the_console_shows_counts_calibration_and_the_flagged_line(
    flagged_run: tuple[int, str, Path],
) -> None:
    _, output, out = flagged_run
    assert re.search(r"8 .* 6 .* 3 .* 4 .* train-leave-one-out", output)
    assert "calibration: fallback: 3 held-out cases" in output
    for search, cases in (
        ("synthetic cases -> training cases", 8),
        ("training cases -> other training cases", 6),
        ("held-out cases -> training cases", 3),
        ("synthetic cases -> held-out cases", 8),
    ):
        assert f"{search}: {cases}/{cases}" in output  # one progress line per search
    assert output.endswith("4 synthetic cases flagged")
    assert str(out / CENTRAL_FILE) in output


def test_no_output_names_a_real_case_or_path(
    world: dict[str, Path], flagged_run: tuple[int, str, Path]
) -> None:
    out = flagged_run[2]
    for name in (AUDIT_FILE, REPORT_FILE, CENTRAL_FILE):
        text = (out / name).read_text(encoding="utf-8")
        assert "phantom-ct" not in text, name  # the real case ids
        assert str(world["root"]) not in text, name
        assert "site-01" not in text, name  # the real cases' folder
    ids = re.findall(r'"id": "([^"]+)"', (out / AUDIT_FILE).read_text(encoding="utf-8"))
    assert len(ids) == 8 * 3 * 3  # 8 cases x 3 spaces x top-3 neighbours, every one a pseudonym
    assert set(ids) <= {f"train-{i:03d}" for i in range(1, 7)}


def test_the_onsite_report_shows_each_flagged_and_the_closest_case_beside_neighbours(
    flagged_run: tuple[int, str, Path],
) -> None:
    page = (flagged_run[2] / REPORT_FILE).read_text(encoding="utf-8")
    alts = IMG.findall(page)
    histograms = [alt for alt in alts if "distance histogram" in alt]
    galleries = [alt for alt in alts if alt.startswith("tri-planar views of")]
    assert len(alts) == 3 + 4 + 1  # 3 spaces, 4 flagged cases, 1 closest unflagged
    assert [alt.split(" distance")[0] for alt in histograms] == ["voxels", "labels", "features"]
    assert all("marked" in alt for alt in histograms)
    shown = [alt.split()[3] for alt in galleries]
    assert shown[:4] == [f"synth_{i:04d}" for i in range(4)]
    assert shown[4] in {f"synth_{i:04d}" for i in range(4, 8)}
    assert "train-leave-one-out" in page


def test_the_central_report_holds_histograms_only(flagged_run: tuple[int, str, Path]) -> None:
    central = (flagged_run[2] / CENTRAL_FILE).read_text(encoding="utf-8")
    alts = IMG.findall(central)
    assert len(alts) == 3
    assert all(alt.endswith("marked") and "distance histogram" in alt for alt in alts)
    assert central.count("<img") == 3  # nothing else embedded: no real voxel
    assert "tri-planar" not in central
    assert "synth_0003" in central  # the flagged list


def test_enough_held_out_cases_calibrate_and_flags_exit_zero(
    world: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    code, output = _audit(
        "--synthetic", world["small"], "--train", world["train"], "--holdout",
        world["holdout"], "--out", out, "--run-config", "audit.min-holdout=3",
    )  # fmt: skip
    assert code == 0, output
    assert output.endswith("1 synthetic case flagged")
    result = json.loads((out / AUDIT_FILE).read_text(encoding="utf-8"))
    assert (result["calibration"]["source"], result["calibration"]["cases"]) == (HOLDOUT, 3)
    assert result["settings"]["min_holdout"] == 3
    assert [case["flagged"] for case in result["cases"]] == [True, False, False]
    assert "3 held-out cases: threshold = 0.5 x percentile 1.0" in output


def _empty_release(world: dict[str, Path], folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(world["release"] / MANIFEST_FILE, folder / MANIFEST_FILE)
    return folder


def _other_grid_release(world: dict[str, Path], folder: Path) -> Path:
    config = load_config({**SMALL_GRID, "data.target-shape": "12,12,12"})
    train, _ = load_real_cases(world["one"], config)
    write_case_release(train, folder, config)
    shutil.copy(world["release"] / MANIFEST_FILE, folder / MANIFEST_FILE)  # says 16^3
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-release", "no such folder; give a release folder"),
        ("missing-train", "no such folder; give a folder of real cases"),
        ("missing-holdout", "no such folder; give a folder of real cases"),
        ("no-manifest", "no manifest.json"),
        ("empty-release", "no synthetic images here"),
        ("other-grid", "grid (12, 12, 12) (x, y, z), but the audit's data.target-shape is (16,"),
        ("contradicting-grid", "data.target-shape = '12,12,12' but the release was made with"),
        ("contradicting-modality", "data.modality = 'mri' but the release was made with 'ct'"),
        ("one-training-case", "1 usable training case(s); the audit needs at least 2"),
        ("holdout-is-train", "the --train folder given again as --holdout"),
        ("out-exists", "already exists and is not empty"),
    ],
)
def test_bad_inputs_exit_2_naming_the_path_and_write_nothing(
    world: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    release, train, holdout = world["release"], world["train"], None
    settings = ""
    out = tmp_path / "audit"
    named = {
        "missing-release": tmp_path / "nowhere",
        "missing-train": tmp_path / "no-train",
        "missing-holdout": tmp_path / "no-holdout",
        "no-manifest": world["train"],
        "empty-release": tmp_path / "empty" / "imagesTr",
        "other-grid": tmp_path / "grid" / "imagesTr" / "synth_0000_0000.nii.gz",
        "contradicting-grid": world["release"] / MANIFEST_FILE,
        "contradicting-modality": world["release"] / MANIFEST_FILE,
        "one-training-case": world["one"],
        "holdout-is-train": world["train"],
        "out-exists": out,
    }[case]
    if case in ("missing-release", "no-manifest"):
        release = named
    elif case == "missing-train":
        train = named
    elif case in ("missing-holdout", "holdout-is-train"):
        holdout = named
    elif case == "empty-release":
        release = _empty_release(world, tmp_path / "empty")
    elif case == "other-grid":
        release = _other_grid_release(world, tmp_path / "grid")
    elif case == "contradicting-grid":
        settings = 'data.target-shape="12,12,12"'
    elif case == "contradicting-modality":
        settings = 'data.modality="mri"'
    elif case == "one-training-case":
        train = named
    else:
        out.mkdir()
        (out / "kept.txt").write_text("earlier audit")
    args: list[str | Path] = ["--synthetic", release, "--train", train, "--out", out]
    if holdout is not None:
        args += ["--holdout", holdout]
    if settings:
        args += ["--run-config", settings]
    code, output = _audit(*args)
    assert code == 2, output
    assert message in output
    assert str(named) in output.replace(" ", "")  # rich may wrap a long path
    assert "Traceback" not in output
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["kept.txt"]
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".audit.*"))  # no staging folder left behind


SMALL_MODEL: dict[str, Scalar] = {
    **SMALL_GRID,
    "seed": 1,
    "model.channels": "8,16",
    "model.norm-groups": 4,
}
"""A tiny model on the command tests' grid (untrained: the wiring is under test here; the
attack's power is tests/common/test_membership.py's)."""


def _model_file(folder: Path, **overrides: Scalar) -> Path:
    """A model file (``model.pt``) of an untrained model built from ``overrides``."""
    config = load_config({**SMALL_MODEL, **overrides})
    folder.mkdir(parents=True)
    save_model(folder / "model.pt", build_model(config), config)
    return folder / "model.pt"


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_a_model_adds_its_membership_inference_to_the_audit(
    world: dict[str, Path], tmp_path: Path, family: str
) -> None:
    model_path = _model_file(tmp_path / "run", **{"model.family": family})
    out = tmp_path / "audit"
    code, output = _audit(
        "--synthetic", world["small"], "--train", world["train"], "--holdout",
        world["holdout"], "--out", out, "--model", model_path,
    )  # fmt: skip
    assert code == 0, output
    section = json.loads((out / AUDIT_FILE).read_text(encoding="utf-8"))["membership"]
    model, _ = load_model(model_path)
    train, _ = load_real_cases(world["train"], CONFIG)
    holdout, _ = load_real_cases(world["holdout"], CONFIG)
    settings = CONFIG.audit
    members = attack_scores(model, train, settings, seed=CONFIG.seed)
    non_members = attack_scores(model, holdout, settings, seed=CONFIG.seed)
    assert section["auc"] == roc_auc(members, non_members)  # the release's seed, 6 v 3
    low, high = section["interval"]
    assert low <= section["auc"] <= high
    assert (section["family"], section["members"], section["non_members"]) == (family, 6, 3)
    assert (section["bootstrap"], section["level"]) == (1000, 0.95)
    assert section["timesteps"] == ([50, 200, 500] if family == "diffusion" else None)
    line = f"membership inference ({family}: "
    assert line in output
    for page in (REPORT_FILE, CENTRAL_FILE):
        text = (out / page).read_text(encoding="utf-8")
        assert line in text, page
        assert f"ROC AUC {section['auc']:.3f}" in text, page


def test_without_a_model_the_membership_section_is_null(
    flagged_run: tuple[int, str, Path],
) -> None:
    out = flagged_run[2]
    assert json.loads((out / AUDIT_FILE).read_text(encoding="utf-8"))["membership"] is None
    assert "membership inference: not run" in (out / REPORT_FILE).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-holdout", "membership inference (--model) needs --holdout"),
        ("missing-model", "no model file here"),
        ("other-shape", "the model works on ct cases of shape (8, 8, 8)"),
        ("other-modality", "the model works on mri cases of shape (16, 16, 16) with 4 classes"),
        ("timestep-too-late", "audit.membership-timesteps = 50,200,500: give timesteps below"),
    ],
)
def test_bad_model_inputs_exit_2_naming_the_file_and_write_nothing(
    world: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    run = tmp_path / "run"
    model_path = {
        "no-holdout": lambda: _model_file(run),
        "missing-model": lambda: run / "model.pt",
        "other-shape": lambda: _model_file(run, **{"data.target-shape": "8,8,8"}),
        "other-modality": lambda: _model_file(run, **{"data.modality": "mri"}),
        "timestep-too-late": lambda: _model_file(
            run, **{"model.family": "diffusion", "model.diffusion-steps": 100}
        ),
    }[case]()
    out = tmp_path / "audit"
    args: list[str | Path] = ["--synthetic", world["small"], "--train", world["train"]]
    args += ["--out", out, "--model", model_path]
    if case != "no-holdout":
        args += ["--holdout", world["holdout"]]
    code, output = _audit(*args)
    assert code == 2, output
    assert message in output
    if case != "timestep-too-late":  # a setting's error names the setting
        assert str(model_path) in output.replace(" ", "")
    assert "Traceback" not in output
    assert not out.exists()
    assert not list(tmp_path.glob(".audit.*"))
