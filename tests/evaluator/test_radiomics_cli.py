"""`fedsynth radiomics`: one case's features as a feature,value CSV; every bad input is a message
naming the file, exit status 2, and nothing written."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import Result
from data_support import shared_case
from typer.testing import CliRunner

from evaluator.radiomics import baseline_features, extract_from_arrays
from evaluator.radiomics_cli import features_csv
from simulations.cli import app

RUNNER = CliRunner()
BASELINE_TOLERANCE = 1e-3  # relative, for every feature of every baseline file
FEATURES = 107  # first order, shape and the five texture classes
SPACING = (1.0, 2.0, 3.0)


def _run(*args: object) -> Result:
    return RUNNER.invoke(app, ["radiomics", *(str(a) for a in args)])


def _read_csv(path: Path) -> tuple[list[str], dict[str, float]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], {name: float(value) for name, value in rows[1:]}


def _assert_user_error(result: Result, *texts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in texts:
        assert text in result.output.replace("\n", ""), result.output


def _nothing_written(folder: Path) -> None:
    assert not (folder / "f.csv").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file


@pytest.fixture(scope="module")
def brain1_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    folder = shared_case("real", "pyradiomics-brain1")
    out = tmp_path_factory.mktemp("cli") / "brain1.csv"
    result = _run(
        folder / "brain1_image.nrrd",
        folder / "brain1_label.nrrd",
        "--settings",
        folder / "baseline_glcm.csv",
        "--out",
        out,
    )
    return result, out


def test_brain1_matches_every_baseline(brain1_csv: tuple[Result, Path]) -> None:
    result, out = brain1_csv
    assert result.exit_code == 0, result.output
    assert f"wrote 107 features of label 1 to {out}" in result.output.replace("\n", "")
    header, features = _read_csv(out)
    assert header == ["feature", "value"]
    assert len(features) == FEATURES
    compared = 0
    for csv_path in sorted(shared_case("real", "pyradiomics-brain1").glob("baseline_*.csv")):
        for name, expected in baseline_features(csv_path).items():
            assert features[name] == pytest.approx(expected, rel=BASELINE_TOLERANCE), name
            compared += 1
    assert compared == FEATURES


def _tiny_case(folder: Path, label: int = 1) -> tuple[Path, Path, dict[str, float]]:
    """A 6^3 ramp image with a 2x2x2 structure, written as NIfTI, and its features."""
    image = np.arange(216, dtype=np.float32).reshape(6, 6, 6)
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = label
    paths = folder / "image.nii.gz", folder / "mask.nii.gz"
    for array, path in zip((image, mask), paths, strict=True):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(SPACING)
        sitk.WriteImage(volume, str(path))
    features = extract_from_arrays(image, mask, SPACING, label, {"binWidth": 10})
    return paths[0], paths[1], features


def test_a_yaml_params_file_and_its_label(tmp_path: Path) -> None:
    image, mask, expected = _tiny_case(tmp_path, label=2)
    params = tmp_path / "params.yaml"
    params.write_text("setting:\n  binWidth: 10\n  label: 2\n", encoding="utf-8")
    out = tmp_path / "out" / "features.csv"
    result = _run(image, mask, "--settings", params, "--out", out)
    assert result.exit_code == 0, result.output
    _, features = _read_csv(out)
    assert features == expected  # repr round-trips every float exactly
    assert features["original_firstorder_Mean"] == pytest.approx(107.5)


def test_overwrite_replaces_an_existing_csv(tmp_path: Path) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    out = tmp_path / "features.csv"
    out.write_text("old", encoding="utf-8")
    result = _run(image, mask, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    _, features = _read_csv(out)
    assert features["original_shape_VoxelVolume"] == pytest.approx(48.0)


def test_features_csv_writes_nan_and_full_precision() -> None:
    text = features_csv({"original_glcm_Idmn": math.nan, "original_firstorder_Mean": 0.1 + 0.2})
    assert text == (
        "feature,value\noriginal_glcm_Idmn,nan\noriginal_firstorder_Mean,0.30000000000000004\n"
    )


def test_a_missing_image(tmp_path: Path) -> None:
    _, mask, _ = _tiny_case(tmp_path)
    missing = tmp_path / "nope.nii.gz"
    result = _run(missing, mask, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{missing}: file not found")
    _nothing_written(tmp_path)


def test_an_unreadable_image(tmp_path: Path) -> None:
    _, mask, _ = _tiny_case(tmp_path)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image")
    result = _run(garbage, mask, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{garbage}: is truncated or corrupt")
    _nothing_written(tmp_path)


def test_a_mask_off_the_image_grid(tmp_path: Path) -> None:
    image, _, _ = _tiny_case(tmp_path)
    other = tmp_path / "other_mask.nii.gz"
    sitk.WriteImage(sitk.Image([6, 6, 5], sitk.sitkUInt8), str(other))
    result = _run(image, other, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{other}: label map size (6, 6, 5) differs")
    _nothing_written(tmp_path)


def test_a_label_absent_from_the_mask(tmp_path: Path) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    result = _run(image, mask, "--label", 4, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{mask}: mask holds no voxel of label 4 (labels present: 1)")
    _nothing_written(tmp_path)


def test_a_2d_image(tmp_path: Path) -> None:
    _, mask, _ = _tiny_case(tmp_path)
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image([6, 6], sitk.sitkFloat32), str(flat))
    result = _run(flat, mask, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{flat}: image is not one scalar 3D volume")
    _nothing_written(tmp_path)


def test_an_existing_output_is_kept(tmp_path: Path) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    out = tmp_path / "features.csv"
    out.write_text("keep me", encoding="utf-8")
    result = _run(image, mask, "--out", out)
    _assert_user_error(result, f"{out} already exists", "pass --overwrite")
    assert out.read_text(encoding="utf-8") == "keep me"


def test_an_output_that_is_a_folder(tmp_path: Path) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    result = _run(image, mask, "--out", tmp_path, "--overwrite")
    _assert_user_error(result, f"{tmp_path} is a folder")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "setting:\n  binWidht: 10\n", "'binWidht' was not defined"),
        ("bad.csv", "featureName,x\n", "no diagnostics_Configuration_Settings row"),
        ("bad.toml", "binWidth = 3\n", "unknown settings file type"),
    ],
)
def test_bad_settings_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    settings = tmp_path / name
    settings.write_text(text, encoding="utf-8")
    result = _run(image, mask, "--settings", settings, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{settings}: ", message)
    _nothing_written(tmp_path)


def test_a_missing_settings_file(tmp_path: Path) -> None:
    image, mask, _ = _tiny_case(tmp_path)
    missing = tmp_path / "params.yaml"
    result = _run(image, mask, "--settings", missing, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{missing}: settings file not found")


def test_a_structure_pyradiomics_refuses(tmp_path: Path) -> None:
    image, _, _ = _tiny_case(tmp_path)
    single = np.zeros((6, 6, 6), dtype=np.uint8)
    single[3, 3, 3] = 1
    mask = tmp_path / "single.nii.gz"
    volume = sitk.GetImageFromArray(single)
    volume.SetSpacing(SPACING)
    sitk.WriteImage(volume, str(mask))
    result = _run(image, mask, "--out", tmp_path / "f.csv")
    _assert_user_error(result, f"{mask}: pyradiomics could not extract features", "single voxel")
    _nothing_written(tmp_path)
