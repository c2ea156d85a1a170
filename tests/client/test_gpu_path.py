"""The gpu preset's code path (bfloat16 autocast, DP-SGD, sampling) run on the CPU at 16^3."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_support import TINY

from client.training import train_site
from common.config import load_config
from common.data.site import prepare_site
from common.models.checkpoint import load_model
from simulations.phantoms import write_cohort
from simulations.presets import preset

TINY_GPU = {
    **TINY,
    "training.device": "cpu",
    "training.amp": "bf16",  # what "auto" does on CUDA
    "training.max-steps": 2,
    "phantoms.cases-per-site": 4,
    "phantoms.sites": 1,
    "model.sampling-steps": 2,
}


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_the_gpu_preset_trains_and_samples_in_bfloat16(family: str, tmp_path: Path) -> None:
    config = load_config({**preset("gpu", family), **TINY_GPU})
    assert config.privacy.enabled
    cohort = write_cohort(config, tmp_path / "sites")
    prepare_site(cohort.sites[0], tmp_path / "cache", config.data)
    summary = train_site(
        config, tmp_path / "cache", tmp_path / "run", site_name="a", ledger_dir=tmp_path / "ledger"
    )
    assert summary.steps == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in summary.final_losses.values())
    model, _ = load_model(tmp_path / "run" / "model.pt")
    dtypes: list[torch.dtype] = []
    for net in model.nets.values():
        for layer in net.modules():
            if isinstance(layer, torch.nn.Conv3d):
                layer.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    for average in model.averages.values():
        for layer in average.modules():
            if isinstance(layer, torch.nn.Conv3d):
                layer.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    pairs = model.sample(1, torch.Generator().manual_seed(0))
    assert torch.bfloat16 in dtypes  # the convolutions ran under autocast
    assert pairs.image.dtype == torch.float32
    assert torch.isfinite(pairs.image).all()
