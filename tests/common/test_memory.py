"""Memory planning: the fitted estimate against measured peaks, the machine's free memory,
and refusals that name what to change."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_support import tiny_config

from bench.memory import point_settings
from common.config import load_config, to_run_config
from common.errors import ConfigError
from common.memory import plan as planning
from common.memory.estimate import GIB, Workload, estimate_bytes, features, gib
from common.memory.generators import generator_workload, parameter_counts
from common.memory.plan import MemoryPlanError, largest_batch, memory_limit, plan_memory
from common.models.interface import unwrap
from common.models.registry import build_model

ROOT = Path(__file__).resolve().parents[2]


def _measured_peak_bytes(settings: dict[str, object]) -> float:
    """Peak resident memory of two real training steps in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--one", json.dumps(settings)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1])["peak_rss_mib"]) * 2**20


@pytest.mark.parametrize(
    "point",
    [("diffusion", 16, 2, "8,16", True), ("gan", 32, 1, "8,16", False)],
    ids=["diffusion-16-dp", "gan-32"],
)
def test_the_estimate_is_within_30_percent_of_a_measured_peak(
    point: tuple[str, int, int, str, bool],
) -> None:
    settings = point_settings(*point)
    estimate = estimate_bytes(generator_workload(load_config(settings)))
    measured = _measured_peak_bytes(settings)
    assert abs(estimate / measured - 1) <= 0.30, (gib(estimate), gib(measured))


def test_features_are_the_counts_of_the_module_docstring() -> None:
    work = Workload(
        family="diffusion",
        cases=2,
        voxels=4096,
        widths=(8, 16),
        spatial_dims=3,
        parameters=1000,
        private_parameters=600,
        attention_tokens=512,
    )
    terms = features(work)
    assert terms["base"] == 1.0
    assert terms["activations-diffusion"] == 4 * 2 * 4096 * (8 + 16 / 8)  # 327,680 bytes
    assert terms["dp-activations-diffusion"] == terms["activations-diffusion"]
    assert terms["attention"] == 4 * 2 * 512**2
    assert terms["parameters"] == 4 * 1000
    assert terms["per-sample-gradients"] == 4 * 2 * 600
    assert terms["activations-gan"] == terms["dp-activations-gan"] == 0.0
    coefficients = {"base": 100.0, "parameters": 2.0, "attention": 0.5}
    assert estimate_bytes(work, coefficients) == 100 + 2 * 4000 + 0.5 * 4 * 2 * 512**2


def test_parameters_are_counted_without_building_the_networks() -> None:
    config = tiny_config(**{"model.family": "gan"})
    model = build_model(config)
    counts = {n: sum(p.numel() for p in unwrap(net).parameters()) for n, net in model.nets.items()}
    assert parameter_counts(config) == (sum(counts.values()), counts["discriminator"])
    plain = tiny_config(**{"model.family": "gan", "privacy.enabled": False})
    assert parameter_counts(plain) == (sum(counts.values()), 0)
    # a GAN at 128^3 holds a 4.3-billion-weight dense layer: counted, never allocated
    huge = load_config({"model.family": "gan", "data.target-shape": "128,128,128"})
    assert parameter_counts(huge)[0] > 4_000_000_000


def _binomial_tail(cases: int, rate: float, k: int) -> float:
    return sum(
        math.comb(cases, j) * rate**j * (1 - rate) ** (cases - j) for j in range(k + 1, cases + 1)
    )


def test_with_dp_the_plan_is_for_a_large_poisson_batch() -> None:
    assert largest_batch(4, 16, private=False) == 4
    assert largest_batch(4, 3, private=False) == 3
    assert largest_batch(4, 4, private=True) == 4  # every case in every step
    k = largest_batch(4, 16, private=True)
    # the smallest k that a Binomial(16, 1/4) step exceeds with probability <= 1e-3
    assert _binomial_tail(16, 0.25, k) <= 1e-3 < _binomial_tail(16, 0.25, k - 1)
    assert k == 10


def _fake_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_kib: int) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {free_kib} kB\n")
    monkeypatch.setattr(planning, "MEMINFO", meminfo)
    monkeypatch.setattr(planning, "CGROUP_LIMIT", tmp_path / "absent")
    monkeypatch.setattr(planning, "_own_resident", lambda: 0)


def test_available_memory_is_the_smaller_of_the_machine_and_its_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_machine(tmp_path, monkeypatch, free_kib=8 * 2**20)  # 8 GiB free
    assert planning.available_memory() == 8 * GIB
    (tmp_path / "memory.max").write_text(f"{3 * GIB}\n")
    (tmp_path / "memory.current").write_text(f"{GIB}\n")
    monkeypatch.setattr(planning, "CGROUP_LIMIT", tmp_path / "memory.max")
    monkeypatch.setattr(planning, "CGROUP_USAGE", tmp_path / "memory.current")
    assert planning.available_memory() == 2 * GIB  # 3 GiB limit, 1 GiB used
    (tmp_path / "memory.max").write_text("max\n")
    assert planning.available_memory() == 8 * GIB
    monkeypatch.setattr(planning, "_own_resident", lambda: GIB // 2)
    assert planning.available_memory() == 8 * GIB + GIB // 2
    assert planning.available_memory(here=False) == 8 * GIB
    assert memory_limit(1.5) == int(1.5 * GIB)  # the setting caps it
    assert memory_limit(0.0) == 8 * GIB + GIB // 2


def test_a_refusal_names_every_setting_and_what_it_would_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_machine(tmp_path, monkeypatch, free_kib=24 * 2**20)
    config = load_config({"data.target-shape": "128,128,128", "training.memory-limit-gib": 4.0})
    with pytest.raises(MemoryPlanError) as refused:
        plan_memory(config, cases=16)
    text = str(refused.value)
    assert "training.memory-limit-gib = 4" in text
    assert "10 cases per step" in text  # batch 4, Poisson-sampled from 16 cases
    for lever in (
        "training.batch-size 2 would need",
        "training.batch-size 1 would need",
        'data.target-shape "96,96,96" would need',
        'data.target-shape "64,64,64" would need',
        'data.target-shape "32,32,32" would need',
        'model.channels "8,16,16" would need',
        "privacy.enabled false (no DP-SGD) would need",
    ):
        assert lever in text
    assert 'data.target-shape "32,32,32" would need 1.' in text or "(fits)" in text
    assert refused.value.needed > refused.value.limit == 4 * GIB
    # the number a lever names is the estimate of the run it describes
    smaller = load_config({"data.target-shape": "32,32,32"})
    need = estimate_bytes(generator_workload(smaller, largest_batch(4, 16, private=True)))
    assert f'data.target-shape "32,32,32" would need {gib(need)}' in text


def test_a_lever_the_family_cannot_build_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quality-ct GAN (32^3, three widths): a quarter grid, 8^3, is too small for its
    discriminator, so planning (and its refusal) must name the other levers, not fail."""
    _fake_machine(tmp_path, monkeypatch, free_kib=24 * 2**20)
    config = load_config(
        {"model.family": "gan", "data.target-shape": "32,32,32", "model.channels": "16,32,32"}
    )
    assert plan_memory(config, cases=40).needed < 24 * GIB
    tight = load_config({**to_run_config(config), "training.memory-limit-gib": 0.01})
    with pytest.raises(MemoryPlanError) as refused:
        plan_memory(tight, cases=40)
    text = str(refused.value)
    assert 'data.target-shape "24,24,24" would need' in text
    assert 'data.target-shape "16,16,16" would need' in text
    assert 'data.target-shape "8,8,8"' not in text
    assert "training.batch-size 1 would need" in text


def test_the_memory_limit_setting_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_machine(tmp_path, monkeypatch, free_kib=24 * 2**20)
    config = tiny_config()
    plan = plan_memory(config, cases=8)
    assert plan.limit == 24 * GIB
    assert plan.needed == estimate_bytes(generator_workload(config, largest_batch(4, 8, True)))
    tight = tiny_config(**{"training.memory-limit-gib": plan.needed / GIB * 0.9})
    with pytest.raises(MemoryPlanError, match=r"training\.memory-limit-gib"):
        plan_memory(tight, cases=8)
    roomy = tiny_config(**{"training.memory-limit-gib": plan.needed / GIB * 1.1})
    assert plan_memory(roomy, cases=8).needed == plan.needed
    with pytest.raises(ConfigError, match="below its minimum"):
        tiny_config(**{"training.memory-limit-gib": -1.0})


def test_sites_side_by_side_must_fit_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_machine(tmp_path, monkeypatch, free_kib=24 * 2**20)
    config = tiny_config()
    one = plan_memory(config, cases=8, copies=1).needed
    assert plan_memory(config, cases=8, copies=3).needed == 3 * one
    _fake_machine(tmp_path, monkeypatch, free_kib=int(2.5 * one / 1024))
    with pytest.raises(MemoryPlanError, match="3 sites at once"):
        plan_memory(config, cases=8, copies=3)


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_a_plain_train_with_the_defaults_fits_a_24_gib_machine(family: str) -> None:
    """The issue's machine: 24 GiB, of which about 21.5 GiB free; DP-SGD on by default."""
    config = load_config({"model.family": family})
    for cases in (16, 40, 1000):
        step = largest_batch(config.training.batch_size, cases, config.privacy.enabled)
        assert estimate_bytes(generator_workload(config, step)) < 21 * GIB
    old = load_config({"model.family": family, "data.target-shape": "128,128,128"})
    assert estimate_bytes(generator_workload(old)) > 24 * GIB  # the old default was killed


def test_meta_device_building_leaves_torch_defaults_alone() -> None:
    parameter_counts(tiny_config())
    assert torch.empty(1).device.type == "cpu"


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, free_bytes: int) -> None:
    """A CUDA device with ``free_bytes`` free, as torch.cuda reports it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (free_bytes, 2 * free_bytes))


def test_on_a_gpu_the_tensors_are_planned_against_its_free_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_machine(tmp_path, monkeypatch, free_kib=24 * 2**20)  # the CPU side is roomy
    config = tiny_config(**{"training.device": "auto"})
    total = estimate_bytes(generator_workload(config, largest_batch(4, 8, True)))
    on_device = total - int(planning.COEFFICIENTS["base"])  # the process's base stays on CPU
    assert on_device > 0
    _fake_gpu(monkeypatch, free_bytes=on_device + 1)
    plan = plan_memory(config, cases=8)
    assert (plan.needed, plan.limit) == (on_device, on_device + 1)
    _fake_gpu(monkeypatch, free_bytes=on_device - 1)
    with pytest.raises(MemoryPlanError, match="free GPU memory") as refused:
        plan_memory(config, cases=8)
    assert refused.value.limit == on_device - 1
    # training.memory-limit-gib caps the GPU's free memory too
    _fake_gpu(monkeypatch, free_bytes=4 * GIB)
    capped = tiny_config(**{"training.device": "auto", "training.memory-limit-gib": 1e-3})
    with pytest.raises(MemoryPlanError, match=r"training\.memory-limit-gib = 0\.001"):
        plan_memory(capped, cases=8)
    # training.device = cpu plans against the CPU's memory even with a GPU present
    cpu = plan_memory(tiny_config(**{"training.device": "cpu"}), cases=8)
    assert (cpu.needed, cpu.limit) == (total, 24 * GIB)
