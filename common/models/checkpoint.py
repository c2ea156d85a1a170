"""Saving and loading models and resumable training state, atomically.

A *model file* holds what sampling needs: the family, the settings it was built with and every
network's weights. A *checkpoint* adds what resuming needs: optimiser states, the step, and the
random generators' states. Both are written through a temporary file and a rename.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write_bytes
from common.config import FedsynthConfig, load_config, to_run_config
from common.errors import FedsynthError
from common.models.interface import GenerativeModel
from common.models.registry import build_model

MODEL_FORMAT = "fedsynth-model/1"
CHECKPOINT_FORMAT = "fedsynth-checkpoint/1"


class CheckpointError(FedsynthError, ValueError):
    """A model file or checkpoint is missing, corrupt, or of another format."""


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


def load_payload(path: Path, expected_format: str, what: str) -> dict[str, Any]:
    """Read a dict written by :func:`save_payload` whose ``format`` is ``expected_format``.

    Raises:
        CheckpointError: missing, corrupt, or of another format (``what`` names it).
    """
    if not path.exists():
        raise CheckpointError(f"{path}: no {what} here; train first or check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: the {what} is corrupt ({err}); train again") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a fedsynth {what} ({expected_format} expected)")
    return payload


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
    payload = load_payload(path, MODEL_FORMAT, "model file")
    config = load_config(payload["run_config"])
    model = build_model(config)
    try:
        model.load_network_state(payload["networks"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model ({err})") from None
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
    payload = load_payload(path, CHECKPOINT_FORMAT, "checkpoint")
    model.load_network_state(payload["networks"])
    for name, optimizer in model.optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][name])
    return dict(payload["state"])
