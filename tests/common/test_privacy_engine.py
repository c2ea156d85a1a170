"""DP-SGD steps clip every case to the norm, add noise of the expected size, and are seeded.

The private network is a bias-free ``Linear(F, 1)`` and the loss the batch mean of its output,
so a case's gradient is exactly its input row: norms known by construction.
"""

from __future__ import annotations

import importlib.util
from typing import ClassVar

import pytest
import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.config import ModelConfig, PrivacyConfig, TrainingConfig
from common.errors import ConfigError
from common.models.interface import Batch, GenerativeModel, SyntheticPairs, unwrap
from common.models.registry import model_family
from common.privacy.accounting import compute_epsilon
from common.privacy.engine import (
    PrivacyModelError,
    PrivateTraining,
    grad_sample_mode,
    make_private,
)

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

CASES, BATCH, FEATURES = 8, 4, 6
"""Dataset size and batch size give the Poisson sample rate 0.5 and expected batch 4."""


class TinyModel(GenerativeModel):
    """One private network, ``critic``, trained with SGD at learning rate 1 on the mean output."""

    family = "tiny"
    private_networks: ClassVar[tuple[str, ...]] = ("critic",)

    def __init__(self, critic: nn.Module | None = None, features: int = FEATURES) -> None:
        super().__init__(ModelConfig(), TrainingConfig(), spatial_shape=(features,), num_classes=1)
        critic = critic or nn.Linear(features, 1, bias=False)
        if isinstance(critic, nn.Linear):
            nn.init.zeros_(critic.weight)
        self.nets["critic"] = critic
        self.optimizers["critic"] = torch.optim.SGD(critic.parameters(), lr=1.0)

    def train_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        optimizer = self.optimizers["critic"]
        optimizer.zero_grad()
        loss = self.nets["critic"](batch.image.flatten(1)).mean()
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    def sample(self, n: int, generator: torch.Generator) -> SyntheticPairs:
        raise NotImplementedError

    def sample_images(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def membership_scores(
        self, batch: Batch, generator: torch.Generator, timesteps: tuple[int, ...]
    ) -> torch.Tensor:
        raise NotImplementedError


def _loader(features: int = FEATURES, batch: int = BATCH, seed: int = 0) -> DataLoader:
    rows = torch.randn(CASES, features, generator=torch.Generator().manual_seed(99))
    dataset = TensorDataset(rows, torch.zeros(CASES))
    return DataLoader(dataset, batch_size=batch, generator=torch.Generator().manual_seed(seed))


def _private(
    model: GenerativeModel, privacy: PrivacyConfig, seed: int = 1, **kwargs: object
) -> PrivateTraining:
    generator = torch.Generator().manual_seed(seed)
    return make_private(
        model,
        _loader(),
        privacy,
        noise_generator=generator,
        planned_steps=10,
        **kwargs,  # type: ignore[arg-type]
    )


def _weight(model: GenerativeModel) -> torch.Tensor:
    """A copy of the critic's weights."""
    weight = unwrap(model.nets["critic"]).weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().clone()


def _update(model: GenerativeModel, rows: torch.Tensor) -> torch.Tensor:
    """The gradient the (DP) optimiser applies for this batch: SGD at lr 1 moves by -grad."""
    before = _weight(model)
    model.train_step(Batch(rows, torch.zeros(len(rows))), torch.Generator())
    return (before - _weight(model)).flatten()


def _rows_with_norms(norms: list[float], features: int = FEATURES) -> torch.Tensor:
    """One case per norm, each along its own axis: per-sample gradients with these norms."""
    rows = torch.zeros(len(norms), features)
    rows[range(len(norms)), range(len(norms))] = torch.tensor(norms)
    return rows


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_without_noise_every_case_is_clipped_to_the_norm(mode: str) -> None:
    norm = 1.0
    privacy = PrivacyConfig(noise_multiplier=0.0, max_grad_norm=norm, grad_sample_mode=mode)
    model = TinyModel()
    private = _private(model, privacy)
    rows = _rows_with_norms([0.5, 2.0, 4.0, 8.0, 0.25, 3.0])  # 6 cases, expected batch 4
    update = _update(model, rows)
    clipped = torch.tensor([0.5, 1.0, 1.0, 1.0, 0.25, 1.0])  # min(norm, raw norm) per case
    assert torch.allclose(update, clipped / BATCH, rtol=1e-5)
    assert update.norm() <= len(rows) * norm / private.expected_batch_size
    plain = _update(TinyModel(), rows)  # the same step without DP-SGD: the raw mean
    assert torch.allclose(plain, torch.tensor([0.5, 2.0, 4.0, 8.0, 0.25, 3.0]) / len(rows))


def test_noise_has_the_expected_standard_deviation() -> None:
    sigma, norm, features = 2.0, 1.0, 8192
    model = TinyModel(features=features)
    generator = torch.Generator().manual_seed(7)
    private = make_private(
        model,
        _loader(features),
        PrivacyConfig(noise_multiplier=sigma, max_grad_norm=norm),
        noise_generator=generator,
        planned_steps=10,
    )
    rows = _rows_with_norms([5.0, 0.3, 1.0], features)
    clipped_mean = torch.zeros(features)
    clipped_mean[:3] = torch.tensor([1.0, 0.3, 1.0]) / BATCH  # norm 5 clipped to 1
    noise = _update(model, rows) - clipped_mean
    expected_std = sigma * norm / private.expected_batch_size
    assert noise.std().item() == pytest.approx(expected_std, rel=0.05)
    assert abs(noise.mean().item()) < 4 * expected_std / features**0.5


def test_an_empty_poisson_batch_is_a_noise_only_step() -> None:
    sigma, features = 2.0, 8192
    model = TinyModel(features=features)
    private = make_private(
        model,
        _loader(features),
        PrivacyConfig(noise_multiplier=sigma),
        noise_generator=torch.Generator().manual_seed(5),
        planned_steps=10,
    )
    before = _weight(model)
    private.step_without_data()
    noise = (before - _weight(model)).flatten()
    assert private.steps_taken() == 1
    assert noise.std().item() == pytest.approx(sigma / BATCH, rel=0.05)


def test_same_seeds_give_identical_steps_and_another_seed_does_not() -> None:
    privacy = PrivacyConfig(noise_multiplier=1.0)

    def run(noise_seed: int) -> tuple[torch.Tensor, list[int]]:
        model = TinyModel()
        private = _private(model, privacy, seed=noise_seed)
        sizes = []
        for step, (rows, _) in enumerate(private.data_loader):
            sizes.append(len(rows))
            model.train_step(Batch(rows, torch.zeros(len(rows))), torch.Generator())
            if step == 2:
                break
        return _weight(model), sizes

    first, sizes = run(3)
    again, sizes_again = run(3)
    other, sizes_other = run(4)
    assert torch.equal(first, again)
    assert sizes == sizes_again
    assert sizes == sizes_other  # the loader's generator draws the batches, not the noise's
    assert not torch.allclose(first, other)


def test_poisson_loader_and_wrapped_networks_replace_the_originals() -> None:
    model = TinyModel()
    private = _private(model, PrivacyConfig(noise_multiplier=1.0))
    assert isinstance(private.data_loader, DPDataLoader)
    assert private.sample_rate == private.data_loader.sample_rate == BATCH / CASES
    assert private.expected_batch_size == BATCH
    assert isinstance(model.optimizers["critic"], DPOptimizer)
    assert unwrap(model.nets["critic"]) is not model.nets["critic"]
    assert len(private.data_loader) == CASES // BATCH  # one pass: 1 / sample rate batches
    sizes = {len(rows) for _ in range(20) for rows, _ in private.data_loader}
    assert len(sizes) > 2  # Poisson batches vary in size


def test_accounting_is_cumulative_over_the_seeded_history() -> None:
    earlier = [(2.0, 0.25, 10)]
    model = TinyModel()
    private = _private(model, PrivacyConfig(noise_multiplier=1.0), history=earlier, steps_done=2)
    assert private.steps_taken() == 2
    for rows in (_rows_with_norms([1.0, 2.0]), _rows_with_norms([3.0])):
        _update(model, rows)
    assert private.steps_taken() == 4
    assert private.history() == [(2.0, 0.25, 10), (1.0, 0.5, 4)]
    assert private.epsilon() == compute_epsilon(private.history(), 1e-5, "rdp")
    assert private.epsilon() > compute_epsilon([(1.0, 0.5, 4)], 1e-5, "rdp")


def test_noise_from_a_target_epsilon_spends_it_over_the_planned_steps() -> None:
    privacy = PrivacyConfig(target_epsilon=2.0, noise_multiplier=0.1)
    model = TinyModel()
    private = make_private(
        model,
        _loader(batch=2),
        privacy,
        noise_generator=torch.Generator(),
        planned_steps=40,
    )
    assert private.sample_rate == 0.25
    spent = compute_epsilon([(private.noise_multiplier, 0.25, 40)], privacy.delta, "rdp")
    assert spent == pytest.approx(2.0, rel=0.01)
    assert spent <= 2.0
    assert model.optimizers["critic"].noise_multiplier == private.noise_multiplier  # type: ignore[attr-defined]


def _batch_norm_critic() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


def test_batch_norm_is_refused_with_the_reason() -> None:
    with pytest.raises(PrivacyModelError) as caught:
        _private(TinyModel(_batch_norm_critic()), PrivacyConfig())
    message = str(caught.value)
    assert "'critic'" in message
    assert "BatchNorm (1)" in message
    assert "depend on the other cases in the batch" in message
    assert "GroupNorm" in message
    assert "fix=True" in message


def test_batch_norm_is_replaced_with_fix() -> None:
    model = TinyModel(_batch_norm_critic())
    model.optimizers["critic"] = torch.optim.Adam(model.nets["critic"].parameters(), lr=0.01)
    _private(model, PrivacyConfig(noise_multiplier=0.5), fix=True)
    fixed = unwrap(model.nets["critic"])
    kinds = {type(m) for m in fixed.modules()}
    assert nn.GroupNorm in kinds
    assert nn.BatchNorm1d not in kinds
    optimizer = model.optimizers["critic"]
    assert isinstance(optimizer.original_optimizer, torch.optim.Adam)  # type: ignore[attr-defined]
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert {id(p) for p in optimizer.params} == {id(p) for p in fixed.parameters()}  # type: ignore[attr-defined]
    before = [p.detach().clone() for p in fixed.parameters()]
    model.train_step(Batch(torch.randn(3, FEATURES), torch.zeros(3)), torch.Generator())
    assert all(not torch.equal(a, p) for a, p in zip(before, fixed.parameters(), strict=True))


class TwoPrivateNetworks(TinyModel):
    private_networks: ClassVar[tuple[str, ...]] = ("critic", "other")


def test_several_private_networks_are_refused() -> None:
    with pytest.raises(PrivacyModelError, match=r"declares private networks \('critic', 'other'\)"):
        _private(TwoPrivateNetworks(), PrivacyConfig())


@pytest.mark.skipif(
    importlib.util.find_spec("torchcsprng") is not None, reason="torchcsprng is installed"
)
def test_secure_rng_without_torchcsprng_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="needs the torchcsprng package") as caught:
        _private(TinyModel(), PrivacyConfig(secure_rng=True))
    assert "privacy.secure-rng=false" in str(caught.value)


def test_disabled_privacy_and_unseeded_or_oversized_loaders_are_refused() -> None:
    with pytest.raises(ValueError, match=r"privacy\.enabled is false"):
        _private(TinyModel(), PrivacyConfig(enabled=False))
    unseeded = DataLoader(TensorDataset(torch.zeros(CASES, FEATURES)), batch_size=BATCH)
    with pytest.raises(ValueError, match="explicit generator"):
        make_private(
            TinyModel(),
            unseeded,
            PrivacyConfig(),
            noise_generator=torch.Generator(),
            planned_steps=1,
        )
    with pytest.raises(ValueError, match="between 1 and its 8 cases"):
        make_private(
            TinyModel(),
            _loader(batch=CASES + 1),
            PrivacyConfig(),
            noise_generator=torch.Generator(),
            planned_steps=1,
        )


def test_a_network_is_not_wrapped_twice() -> None:
    model = TinyModel()
    _private(model, PrivacyConfig())
    with pytest.raises(ValueError, match="already wrapped"):
        _private(model, PrivacyConfig())


@pytest.mark.parametrize(
    ("family", "expected"), [("gan", "hooks"), ("diffusion", "functorch"), ("tiny", "hooks")]
)
def test_auto_mode_takes_the_family_s_measured_fastest_mode(family: str, expected: str) -> None:
    model_class = TinyModel if family == "tiny" else model_family(family)
    model = object.__new__(model_class)  # the mode is a class setting: no network is built
    assert grad_sample_mode(model, PrivacyConfig()) == expected
    chosen = PrivacyConfig(grad_sample_mode="ew")
    assert grad_sample_mode(model, chosen) == "ew"  # an explicit mode always wins


def test_auto_mode_wraps_the_network_for_the_chosen_mode() -> None:
    model = TinyModel()
    model.grad_sample_mode = "functorch"  # type: ignore[misc]
    make_private(
        model,
        _loader(FEATURES),
        PrivacyConfig(),
        noise_generator=torch.Generator(),
        planned_steps=1,
    )
    wrapped = model.nets["critic"]
    assert isinstance(wrapped, GradSampleModule)
    assert wrapped.force_functorch
