"""The `fedsynth` console script end to end: phantoms, site checks, the demo, simulate."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.cli.support import FLOWER_LOGGER, setup_logging
from common.interrupts import Interrupted, stop_on_signals
from common.run_state import RUN_STATE_FILE
from simulations.cli import app

RUNNER = CliRunner()
SMALL_DEMO = (
    "phantoms.sites=2 phantoms.cases-per-site=2 phantoms.size=16 "
    'data.target-shape="16,16,16" data.target-spacing="12.5,12.5,12.5" '
    'model.channels="8,16" model.norm-groups=4 model.sampling-steps=3 training.max-steps=2 '
    "federation.num-rounds=2 federation.min-sites=2 federation.release-cases=2 "
    'model.prior=""'  # the shipped prior is for the demo's own sizes (tests/simulations/test_prior)
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


def test_a_full_disk_while_writing_images_keeps_the_old_cohort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ITK ignores a failed write (a file cut short on a full disk, no error: seen with
    /dev/full): the read-back check finds it, the command names the folder, the old stays."""
    out = tmp_path / "ct"
    small = ("--modality", "ct", "--cases", "1", "--sites", "1", "--size", "16")
    assert _invoke("phantoms", *small, "--out", str(out))[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def cut_short(image: object, name: str, **_: object) -> None:
        Path(name).write_bytes(b"\x1f\x8b")  # a gzip stream's first two bytes

    monkeypatch.setattr("common.data.imageio.sitk.WriteImage", cut_short)
    monkeypatch.setattr(
        "common.data.imageio.shutil.disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 0)
    )
    code, output = _invoke("phantoms", *small, "--out", str(out), "--overwrite")
    assert code == 2, output
    assert "is full" in output
    assert str(out.resolve()) in " ".join(output.split())
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]


def _stopped_demo(out: Path, status: str, pid: int) -> None:
    """What a demo stopped in its first round leaves: its sites and the run's record."""
    (out / "sites" / "site-01").mkdir(parents=True)
    record = {"status": status, "pid": pid, "started": 1.0, "updated": 2.0, "step": 1}
    (out / RUN_STATE_FILE).write_text(json.dumps(record), encoding="utf-8")


def test_demo_trains_a_federation_and_releases_synthetic_cases(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    _stopped_demo(out, "stopped", pid=1)  # an earlier demo, stopped: replaced
    code, output = _invoke("demo", "--out", str(out), "--run-config", SMALL_DEMO)
    assert code == 0, output
    release = out / "server" / "release"
    assert f"release (synthetic cases only): {release}" in " ".join(output.split())
    manifest = json.loads((release / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rounds"] == 2
    assert [site["name"] in output for site in manifest["sites"]] == [True, True]
    assert all(0 < site["epsilon"] <= 8.0 + 1e-6 for site in manifest["sites"])
    assert len(list((release / "imagesTr").glob("*.nii.gz"))) == 2
    audit = manifest["audit"]  # the federated audit ran in Flower's simulation engine
    assert audit["federated"] is True
    assert sorted(audit["sites"]) == sorted(site["name"] for site in manifest["sites"])
    assert audit["released"] + audit["withheld"] == audit["candidates"]
    assert [case["case"] for case in audit["cases"]] == ["synth_0000", "synth_0001"]
    for site in audit["sites"].values():  # 2 cases a site, none held out: leave-one-out
        assert site["calibration"]["source"] == "train-leave-one-out"
        assert sorted(site["thresholds"]) == ["features", "labels", "voxels"]
        assert site["train_cases"] == 2
    assert (out / "real-vs-synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "done in" in output


def test_simulate_needs_a_preset_or_a_config_and_a_fresh_folder(tmp_path: Path) -> None:
    code, output = _invoke("simulate", "--out", str(tmp_path / "a"))
    assert code == 2
    assert "give --preset NAME or --config FILE" in output
    code, output = _invoke("simulate", "--preset", "nope", "--out", str(tmp_path / "a"))
    assert code == 2
    assert "unknown preset 'nope': choose one of demo, gpu, prior-ct, quality-ct" in output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x", encoding="utf-8")
    code, output = _invoke("simulate", "--preset", "smoke", "--out", str(tmp_path / "used"))
    assert code == 2
    assert "resume that simulation (--resume)" in output
    assert not (tmp_path / "a").exists()


def test_verbose_logs_every_setting(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["-v", "data", "check", str(tmp_path)])
    assert "config data.modality = 'ct'" in result.output
    assert "config phantoms.site-tumour-scale" in result.output


def _shown(message: str, level: int = logging.WARNING) -> bool:
    """Whether Flower's logger lets ``message`` through its filters."""
    flower = logging.getLogger(FLOWER_LOGGER)
    record = flower.makeRecord(FLOWER_LOGGER, level, "x", 1, message, (), None)
    return all(f.filter(record) for f in flower.filters if isinstance(f, logging.Filter))


def _shown_before_any_stop(message: str, level: int = logging.WARNING) -> bool:
    """:func:`_shown` in a fresh stop_on_signals block (a stop signal of an earlier test in
    this process would hold otherwise)."""
    with stop_on_signals():
        return _shown(message, level)


def test_flower_lines_users_cannot_act_on_are_filtered_and_the_rest_kept() -> None:
    setup_logging(False)
    flower = logging.getLogger(FLOWER_LOGGER)
    assert flower.level == logging.WARNING
    assert flower.propagate is False
    assert not _shown_before_any_stop("fraction_evaluate is set to 0.0. Federated evaluation ...")
    assert not _shown_before_any_stop("The `run_simulation` function is deprecated and ...")
    assert _shown_before_any_stop("Received error in reply from node 7")
    setup_logging(True)
    assert flower.level == logging.INFO


def test_after_a_stop_signal_flower_reports_nothing() -> None:
    """Its threads would report each Ray actor the stop ends as an error with a traceback."""
    setup_logging(False)
    died = "The actor died unexpectedly before finishing this task."
    assert _shown_before_any_stop(died, logging.ERROR)
    with pytest.raises(Interrupted), stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
    assert not _shown(died, logging.ERROR)  # after the block too: the process is ending
    assert _shown_before_any_stop(died, logging.ERROR)  # a new block starts afresh


def test_demo_does_not_replace_the_folder_of_a_demo_still_running(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            _stopped_demo(out, "running", pid=other.pid)
            code, output = _invoke("demo", "--out", str(out), "--run-config", SMALL_DEMO)
        finally:
            other.kill()
    assert code == 2, output
    assert f"process {other.pid}" in " ".join(output.split())
    assert (out / "sites" / "site-01").is_dir()  # nothing of it removed
