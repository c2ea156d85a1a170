"""Saving and loading models and resumable training state, atomically.

A *model file* holds what sampling needs: the family, the settings it was built with and every
network's weights. A *checkpoint* adds what resuming needs: optimiser states, the step, and the
random generators' states. Both are written through a temporary file and a rename.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write_bytes
from common.config import FedsynthConfig, load_config, to_run_config
from common.errors import ConfigError, FedsynthError
from common.models.interface import GenerativeModel
from common.models.registry import build_model

MODEL_FORMAT = "fedsynth-model/1"
CHECKPOINT_FORMAT = "fedsynth-checkpoint/1"
CODE_MARKERS = ("GLOBAL", "Unsupported class")
"""What torch.load(weights_only=True) says when a file names a Python callable or class (a
corrupt file fails with another message)."""


class CheckpointError(FedsynthError, ValueError):
    """A model file or checkpoint is missing, corrupt, or of another format."""


class UnsafeFileError(CheckpointError):
    """A model file or checkpoint carries Python objects other than tensors and plain data:
    unpickling them could run code, so the file is refused unread."""


MODEL_FIELDS = {"family": str, "run_config": dict, "networks": dict, "hash": str}
"""What a model file (and a prior) must hold, and of which type."""
CHECKPOINT_FIELDS = {"networks": dict, "optimizers": dict, "state": dict}
"""What a checkpoint must hold, and of which type."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (torch lists every mismatched tensor after it)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def model_hash(model: GenerativeModel) -> str:
    """SHA-256 over every network's tensors, in name order: identifies released weights."""
    return weights_hash(model.network_state())


def weights_hash(networks: dict[str, dict[str, torch.Tensor]]) -> str:
    """SHA-256 over the tensors of ``networks`` (network name -> state dict), in name order."""
    digest = hashlib.sha256()
    for net_name, state in sorted(networks.items()):
        for name, tensor in sorted(state.items()):
            digest.update(f"{net_name}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_payload(path: Path, payload: dict[str, Any]) -> None:
    """Write a torch-serialised dict atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_payload(
    path: Path, expected_format: str, what: str, fields: Mapping[str, type] | None = None
) -> dict[str, Any]:
    """Read a dict written by :func:`save_payload` whose ``format`` is ``expected_format`` and
    that holds ``fields`` (key -> type), without unpickling anything but tensors and plain data.

    Raises:
        UnsafeFileError: the file carries other Python objects (code could run on opening).
        CheckpointError: missing, corrupt, incomplete or of another format (``what`` names it).
    """
    if not path.exists():
        raise CheckpointError(f"{path}: no {what} here; train first or check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if any(marker in str(err) for marker in CODE_MARKERS):
            raise UnsafeFileError(
                f"{path}: refused unread: the {what} carries Python objects other than tensors "
                "(opening it could run code); use only files fedsynth wrote, from people you "
                "trust"
            ) from None
        raise CheckpointError(f"{path}: the {what} is corrupt ({err}); train again") from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: the {what} is corrupt ({err}); train again") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a fedsynth {what} ({expected_format} expected)")
    for key, kind in (fields or {}).items():
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(
                f"{path}: the {what} is incomplete: {key!r} is missing or not a "
                f"{kind.__name__}; train again"
            )
    return payload


def payload_config(path: Path, payload: dict[str, Any], what: str) -> FedsynthConfig:
    """The run settings stored in a model file, checked like any config.

    Raises:
        CheckpointError: the settings are invalid (unknown key, wrong type, out of range) or
            name another family than the file's.
    """
    try:
        config = load_config(payload["run_config"])
    except ConfigError as err:
        raise CheckpointError(
            f"{path}: the {what}'s settings are invalid ({err}); the file was altered or "
            "written by another fedsynth version: use the file as its run wrote it, or train "
            "again"
        ) from None
    if config.model.family != payload["family"]:
        raise CheckpointError(
            f"{path}: the {what} says family {payload['family']!r} but its settings say "
            f"model.family = {config.model.family!r}; the file was altered"
        )
    return config


def model_payload(
    family: str, config: FedsynthConfig, networks: dict[str, dict[str, torch.Tensor]]
) -> dict[str, Any]:
    """A model file's content: ``family``, the settings and ``networks``' weights (on the
    CPU) with their hash."""
    weights = {k: {n: t.detach().cpu() for n, t in v.items()} for k, v in networks.items()}
    return {
        "format": MODEL_FORMAT,
        "family": family,
        "run_config": to_run_config(config),
        "networks": weights,
        "hash": weights_hash(weights),
    }


def save_model(path: Path, model: GenerativeModel, config: FedsynthConfig) -> str:
    """Write the model file; returns the model hash."""
    payload = model_payload(model.family, config, model.network_state())
    save_payload(path, payload)
    return str(payload["hash"])


def load_model(path: Path) -> tuple[GenerativeModel, FedsynthConfig]:
    """Rebuild a model from its file; the weights are checked against the stored hash."""
    payload = load_payload(path, MODEL_FORMAT, "model file", MODEL_FIELDS)
    config = payload_config(path, payload, "model file")
    model = build_model(config)
    try:
        model.load_network_state(payload["networks"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model ({first_line(err)})") from None
    if model_hash(model) != payload["hash"]:
        raise CheckpointError(f"{path}: weights do not match their hash; the file was altered")
    return model, config


def save_checkpoint(path: Path, model: GenerativeModel, state: dict[str, Any]) -> None:
    """Write a resumable checkpoint: networks, optimisers and the caller's ``state``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "networks": model.network_state(),
        "optimizers": {name: opt.state_dict() for name, opt in model.optimizers.items()},
        "state": state,
    }
    save_payload(path, payload)


def load_checkpoint(path: Path, model: GenerativeModel) -> dict[str, Any]:
    """Restore networks and optimisers from a checkpoint; return the caller's saved state."""
    payload = load_payload(path, CHECKPOINT_FORMAT, "checkpoint", CHECKPOINT_FIELDS)
    try:
        model.load_network_state(payload["networks"])
        for name, optimizer in model.optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][name])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: the checkpoint does not fit this model ({first_line(err)}); start "
            "without --resume"
        ) from None
    return dict(payload["state"])
