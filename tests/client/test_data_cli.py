"""`fedsynth data check` and `data prepare` as a hospital engineer runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import tiny_ct, write_pattern_case
from typer.testing import CliRunner

import common.cli.support as support
from client.cli import data_app

RUNNER = CliRunner()
SMALL = 'data.target-shape="16,16,16" data.target-spacing="2.0,2.0,2.0"'


def _bad_site(site: Path) -> None:
    """Add a case with NaN voxels and an image whose label map is missing."""
    image, label = tiny_ct()
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    values[0, 0, 0] = np.nan
    with_nan = sitk.GetImageFromArray(values)
    with_nan.CopyInformation(image)
    write_pattern_case(site, "nan", with_nan, label)
    sitk.WriteImage(image, str(site / "orphan_image.nii.gz"))


def test_check_accepts_a_valid_site(ct_site: Path) -> None:
    result = RUNNER.invoke(data_app, ["check", str(ct_site)])
    assert result.exit_code == 0, result.output
    assert "all 2 cases are valid" in result.output
    assert "12x12x12" in result.output


def test_check_lists_every_problem_and_fails(ct_site: Path) -> None:
    _bad_site(ct_site)
    result = RUNNER.invoke(data_app, ["check", str(ct_site)])
    assert result.exit_code == 1
    assert "non-finite" in result.output
    assert "missing-partner" in result.output
    assert "orphan_label" in result.output.replace("\n", "")
    assert "2 problems in 2 cases" in result.output
    assert "Traceback" not in result.output


def _cut_case(site: Path) -> Path:
    """Add case 'cut' whose image is a .nii.gz cut at two thirds (a copy that stopped)."""
    write_pattern_case(site, "cut", *tiny_ct())
    path = site / "cut_image.nii.gz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    return path


def test_check_shows_a_truncated_file_in_the_table(
    ct_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support.console, "width", 80)  # the terminal
    cut = _cut_case(ct_site)
    result = RUNNER.invoke(data_app, ["check", str(ct_site)])
    assert result.exit_code == 1, result.output
    assert "Aborted" not in result.output
    assert "Traceback" not in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    assert max(len(row) for row in rows) <= 80
    assert [row.split("│")[1].strip() for row in rows if row.split("│")[1].strip()] == [
        "a",
        "b",
        "cut",
    ]
    problems = [row.split("│")[-2].strip() for row in rows]
    assert [cell for cell in problems if cell] == ["ok", "ok", "unreadable"]  # one line each
    assert "unreadable" in result.output
    below = result.output.split("┘")[-1]  # problems in full under the 80-column table
    prose = " ".join(line.strip() for line in below.splitlines())
    assert "cut unreadable:" in prose
    assert "compressed voxel data is truncated or corrupt" in prose
    assert len(below.splitlines()) <= 8  # not one word a line
    assert "1 problem in 1 case (2 valid)" in result.output
    prepared = RUNNER.invoke(data_app, ["prepare", str(ct_site), "--out", str(ct_site / "out")])
    assert prepared.exit_code == 2, prepared.output
    assert str(cut) in prepared.output.replace("\n", "")
    assert not (ct_site / "out").exists()


def test_check_with_skip_bad_says_how_many(ct_site: Path) -> None:
    _bad_site(ct_site)
    result = RUNNER.invoke(data_app, ["check", str(ct_site), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "2 bad cases would be skipped; 2 cases valid" in result.output


def test_config_mistakes_are_messages(ct_site: Path) -> None:
    result = RUNNER.invoke(data_app, ["check", str(ct_site), "--run-config", "data.modalty='ct'"])
    assert result.exit_code == 2
    assert "unknown setting 'data.modalty'" in result.output
    result = RUNNER.invoke(data_app, ["check", str(ct_site), "--modality", "pet"])
    assert result.exit_code == 2
    assert "is not one of ct, mri" in result.output


def test_check_of_a_missing_folder(tmp_path: Path) -> None:
    result = RUNNER.invoke(data_app, ["check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "folder not found" in result.output


def test_prepare_writes_the_cache(ct_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    result = RUNNER.invoke(
        data_app, ["prepare", str(ct_site), "--out", str(out), "--run-config", SMALL]
    )
    assert result.exit_code == 0, result.output
    assert "prepared 2 cases" in result.output
    index = json.loads((out / "index.json").read_text())
    assert index["case_ids"] == ["a", "b"]


def test_prepare_refuses_a_bad_site_and_writes_nothing(ct_site: Path, tmp_path: Path) -> None:
    _bad_site(ct_site)
    out = tmp_path / "cache"
    args = ["prepare", str(ct_site), "--out", str(out), "--run-config", SMALL]
    result = RUNNER.invoke(data_app, args)
    assert result.exit_code == 2
    assert "2 problems found" in result.output
    assert "--skip-bad" in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    result = RUNNER.invoke(data_app, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad cases" in result.output
    assert json.loads((out / "index.json").read_text())["case_ids"] == ["a", "b"]
