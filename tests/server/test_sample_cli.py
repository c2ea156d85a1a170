"""`fedsynth sample`: a release from a run folder, with the run's privacy in its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_support import tiny_config
from typer.testing import CliRunner

from common.config import Scalar
from common.models.checkpoint import save_model
from common.models.diffusion import DiffusionModel
from common.models.interface import SyntheticPairs
from common.models.registry import build_model
from common.release import SiteRecord
from common.runs import RunSummary, write_summary
from simulations.cli import app

RUNNER = CliRunner()


def _run(folder: Path, diffusion_steps: int = 1000, **extra: Scalar) -> None:
    config = tiny_config(
        **{
            "model.family": "diffusion",
            "model.channels": "8",
            "model.sampling-steps": 2,
            "model.diffusion-steps": diffusion_steps,
            **extra,
        }
    )
    model = build_model(config)
    digest = save_model(folder / "model.pt", model, config)
    write_summary(folder, RunSummary("diffusion", digest, 1, 10, [SiteRecord("site", 1.5, 1e-5)]))


def test_sample_writes_a_release_with_provenance(tmp_path: Path) -> None:
    _run(tmp_path)
    out = tmp_path / "release"
    result = RUNNER.invoke(app, ["sample", "--run", str(tmp_path), "--n", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 synthetic ct cases" in result.output
    assert len(list((out / "imagesTr").iterdir())) == 3
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sites"] == [{"name": "site", "epsilon": 1.5, "delta": 1e-5}]
    assert (manifest["sampler"], manifest["sampling_steps"]) == ("ddim", 2)
    assert manifest["cases"] == 3


def test_sample_run_config_changes_the_sampler_and_the_manifest_says_so(tmp_path: Path) -> None:
    _run(tmp_path, diffusion_steps=10)  # DDPM walks every diffusion step
    out = tmp_path / "release"
    args = ["sample", "--run", str(tmp_path), "--n", "2", "--out", str(out)]
    result = RUNNER.invoke(app, [*args, "--run-config", 'model.sampler="ddpm"'])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sampler"] == "ddpm"
    result = RUNNER.invoke(app, [*args, "--overwrite", "--run-config", "model.sampling-steps=3"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["sampler"], manifest["sampling_steps"]) == ("ddim", 3)


def test_sample_run_config_shifts_the_tumour_logits_and_the_manifest_records_it(
    tmp_path: Path,
) -> None:
    _run(tmp_path, **{"model.denoiser-output": "class-probabilities"})
    out = tmp_path / "release"
    args = ["sample", "--run", str(tmp_path), "--n", "1", "--out", str(out)]
    result = RUNNER.invoke(app, [*args, "--run-config", "model.tumour-logit-shift=-0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["run_config"]["model.tumour-logit-shift"] == -0.5


def test_sample_run_config_draws_the_tumour_presence_first_and_the_manifest_records_it(
    tmp_path: Path,
) -> None:
    """An untrained class-probabilities model draws air only: with a tumour wanted in every
    case, each of the 2 cases is drawn 1 + 3 times (and still has none)."""
    _run(tmp_path, **{"model.denoiser-output": "class-probabilities"})
    out = tmp_path / "release"
    args = ["sample", "--run", str(tmp_path), "--n", "2", "--out", str(out), "--run-config"]
    calls: list[int] = []
    sample = DiffusionModel.sample

    def counted(model: DiffusionModel, n: int, generator: torch.Generator) -> SyntheticPairs:
        calls.append(n)
        return sample(model, n, generator)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DiffusionModel, "sample", counted)
        result = RUNNER.invoke(app, [*args, "model.tumour-presence-redraws=3"])
    assert result.exit_code == 0, result.output
    assert calls == [2, 2, 2, 2]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["run_config"]["model.tumour-presence-redraws"] == 3
    assert manifest["run_config"]["model.tumour-presence"] == 1.0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.channels='16'", "only the sampling settings"),
        ("model.sampling-steps=0", "model.sampling-steps"),
        ("model.sampler='euler'", "model.sampler"),
        ("model.tumour-logit-shift=1", "needs model.family = gan or model.denoiser-output"),
        ("model.tumour-presence=1.5", "model.tumour-presence"),
    ],
)
def test_sample_run_config_refuses_other_or_bad_settings(
    tmp_path: Path, setting: str, message: str
) -> None:
    _run(tmp_path)
    out = tmp_path / "release"
    args = ["sample", "--run", str(tmp_path), "--n", "1", "--out", str(out)]
    result = RUNNER.invoke(app, [*args, "--run-config", setting])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()


def test_sample_from_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app, ["sample", "--run", str(tmp_path), "--n", "1", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "no model file here" in result.output
    assert not (tmp_path / "r").exists()


class _Payload:
    """Unpickling this would run ``os.system``."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo owned",))


def test_sample_refuses_a_model_file_carrying_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    _run(tmp_path)
    torch.save({"format": "fedsynth-model/1", "hook": _Payload()}, tmp_path / "model.pt")
    calls: list[str] = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    out = tmp_path / "release"
    result = RUNNER.invoke(app, ["sample", "--run", str(tmp_path), "--n", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "refused unread" in result.output
    assert "Traceback" not in result.output
    assert calls == []
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model.chanels": "8"}, "unknown setting 'model.chanels'"),
        ({"model.sampling-steps": 0}, "model.sampling-steps"),
    ],
    ids=["unknown-key", "out-of-range"],
)
def test_sample_refuses_a_model_file_whose_settings_are_invalid(
    tmp_path: Path, change: dict[str, Scalar], named: str
) -> None:
    _run(tmp_path)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["run_config"] = {**payload["run_config"], **change}
    torch.save(payload, tmp_path / "model.pt")
    out = tmp_path / "release"
    result = RUNNER.invoke(app, ["sample", "--run", str(tmp_path), "--n", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'model.pt'}:" in result.output.replace("\n", "")  # a path wraps anywhere
    text = " ".join(result.output.split())
    assert "the model file's settings are invalid" in text
    assert named in text
    assert "altered or written by another fedsynth version" in text
    assert "Traceback" not in result.output
    assert not out.exists()
