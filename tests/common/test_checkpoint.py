"""Model files and checkpoints: round trips, and typed errors for missing or altered files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from model_support import tiny_config

from common.models.checkpoint import (
    CheckpointError,
    UnsafeFileError,
    load_checkpoint,
    load_model,
    load_payload,
    model_hash,
    save_checkpoint,
    save_model,
)
from common.models.registry import build_model

CONFIG = tiny_config(**{"model.family": "diffusion", "model.channels": "8"})


def test_model_file_round_trip_and_hash(tmp_path: Path) -> None:
    model = build_model(CONFIG)
    digest = save_model(tmp_path / "model.pt", model, CONFIG)
    loaded, config = load_model(tmp_path / "model.pt")
    assert config == CONFIG
    assert model_hash(loaded) == digest == model_hash(model)
    assert (
        model_hash(
            build_model(
                tiny_config(**{"seed": 1, "model.family": "diffusion", "model.channels": "8"})
            )
        )
        != digest
    )


def test_same_seed_builds_the_same_weights() -> None:
    assert model_hash(build_model(CONFIG)) == model_hash(build_model(CONFIG))


def test_altered_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    model = build_model(CONFIG)
    path = tmp_path / "model.pt"
    save_model(path, model, CONFIG)
    payload = torch.load(path, weights_only=False)
    first = next(iter(payload["networks"]["generator"]))
    payload["networks"]["generator"][first] = payload["networks"]["generator"][first] + 1
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(CheckpointError, match="do not match their hash"):
        load_model(tmp_path / "altered.pt")
    with pytest.raises(CheckpointError, match="no model file here"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fedsynth model file"):
        load_model(tmp_path / "other.pt")


def test_checkpoint_restores_weights_optimisers_and_state(tmp_path: Path) -> None:
    model = build_model(CONFIG)
    net = model.nets["generator"]
    optimizer = model.optimizers["generator"]
    loss = sum(p.sum() for p in net.parameters())
    loss.backward()  # type: ignore[union-attr]
    optimizer.step()
    save_checkpoint(tmp_path / "c.pt", model, {"step": 7})
    fresh = build_model(CONFIG)
    assert model_hash(fresh) != model_hash(model)
    assert load_checkpoint(tmp_path / "c.pt", fresh) == {"step": 7}
    assert model_hash(fresh) == model_hash(model)
    assert fresh.optimizers["generator"].state_dict()["state"].keys() == (
        optimizer.state_dict()["state"].keys()
    )


class _RunsCode:
    """Unpickling this would call ``os.system``: a model file must never be read so."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch /nonexistent-fedsynth-marker",))


@pytest.mark.parametrize(
    ("loader", "file_format"),
    [
        (load_model, "fedsynth-model/1"),
        (lambda path: load_checkpoint(path, build_model(CONFIG)), "fedsynth-checkpoint/1"),
        (lambda path: load_payload(path, "fedsynth-server-checkpoint/1", "x"), "any"),
    ],
)
def test_a_file_carrying_code_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any, file_format: str
) -> None:
    import os

    path = tmp_path / "model.pt"
    torch.save({"format": file_format, "payload": _RunsCode()}, path)
    calls: list[str] = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    with pytest.raises(UnsafeFileError, match=r"refused unread: .* carries Python objects") as info:
        loader(path)
    assert str(path) in str(info.value)
    assert calls == []


def _saved_payload(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "model.pt"
    save_model(path, build_model(CONFIG), CONFIG)
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model.channels": "0,16"}, "settings are invalid .*model.channels"),
        ({"model.chanels": "8"}, "settings are invalid .*unknown setting 'model.chanels'"),
        ({"model.family": "gan"}, "says family 'diffusion' but its settings say"),
    ],
)
def test_the_settings_inside_a_model_file_are_checked(
    tmp_path: Path, change: dict[str, str], match: str
) -> None:
    path, payload = _saved_payload(tmp_path)
    payload["run_config"] = {**payload["run_config"], **change}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("key", ["networks", "run_config", "family", "hash"])
def test_a_model_file_missing_a_field_is_refused(tmp_path: Path, key: str) -> None:
    path, payload = _saved_payload(tmp_path)
    payload[key] = None
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"incomplete: '{key}' is missing"):
        load_model(path)


def test_a_checkpoint_for_another_model_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", build_model(CONFIG), {"step": 1})
    other = build_model(tiny_config(**{"model.family": "diffusion", "model.channels": "16"}))
    with pytest.raises(CheckpointError, match=r"does not fit this model .*without --resume"):
        load_checkpoint(tmp_path / "c.pt", other)
