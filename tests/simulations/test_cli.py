"""The `fedsynth` console script end to end: phantoms written, checked, prepared, shown."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from simulations.cli import app

RUNNER = CliRunner()
SMALL_DEMO = (
    "phantoms.sites=2 phantoms.cases-per-site=1 phantoms.size=16 "
    'data.target-shape="16,16,16" data.target-spacing="12.5,12.5,12.5"'
)


def _invoke(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, list(args))
    return result.exit_code, result.output


def test_ct_phantoms_pass_the_site_check(tmp_path: Path) -> None:
    out = tmp_path / "ct"
    code, output = _invoke(
        "phantoms", "--modality", "ct", "--cases", "2", "--sites", "2", "--size", "16",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert "wrote 4 ct cases for 2 sites (nnunet layout)" in output
    for site in ("site-01", "site-02"):
        code, output = _invoke("data", "check", str(out / site))
        assert code == 0, output
        assert "all 2 cases are valid" in output


def test_mri_phantoms_in_brats_layout_pass_the_site_check(tmp_path: Path) -> None:
    out = tmp_path / "mri"
    code, output = _invoke(
        "phantoms", "--modality", "mri", "--layout", "brats", "--cases", "2", "--sites", "1",
        "--size", "16", "--seed", "3", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert sorted(p.name for p in (out / "site-01").iterdir()) == [
        "phantom-mri-s01-000",
        "phantom-mri-s01-001",
    ]
    code, output = _invoke("data", "check", str(out / "site-01"), "--modality", "mri")
    assert code == 0, output
    assert "brats layout" in output


def test_phantoms_refuse_to_overwrite_and_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    code, output = _invoke("phantoms", "--out", str(tmp_path), "--size", "16")
    assert code == 2
    assert "already exists and is not empty" in output
    assert (tmp_path / "keep.txt").read_text(encoding="utf-8") == "mine"
    code, output = _invoke("phantoms", "--out", str(tmp_path / "x"), "--layout", "brats")
    assert code == 2
    assert "use phantoms.layout=" in output
    code, output = _invoke("phantoms", "--out", str(tmp_path / "y"), "--size", "2")
    assert code == 2
    assert "phantoms.size = 2 is below its minimum 8" in output
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "y").exists()


def test_demo_makes_checks_prepares_and_pictures_the_sites(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, output = _invoke("demo", "--out", str(out), "--run-config", SMALL_DEMO)
    assert code == 0, output
    assert "done in" in output
    for site in ("site-01", "site-02"):
        index = json.loads((out / "cache" / site / "index.json").read_text(encoding="utf-8"))
        assert index["case_ids"] == [f"phantom-ct-s0{site[-1]}-000"]
        assert index["target_shape"] == [16, 16, 16]
    assert (out / "phantoms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verbose_logs_every_setting(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["-v", "data", "check", str(tmp_path)])
    assert "config data.modality = 'ct'" in result.output
    assert "config phantoms.site-tumour-scale" in result.output
