"""DP-SGD for the network of a model that sees real data, built from Opacus' parts.

:func:`make_private` wraps the model's private network (``GenerativeModel.private_networks``) in
Opacus' per-sample-gradient module, its optimiser in Opacus' ``DPOptimizer`` (flat clipping to
``privacy.max-grad-norm``, Gaussian noise of std ``noise_multiplier x max_grad_norm`` drawn from an
explicit generator, the sum divided by the expected batch size), and the data loader in Opacus'
``DPDataLoader`` (Poisson sampling: each case joins a step's batch with probability
``sample_rate = batch_size / cases``). An accountant seeded with the site's earlier history
counts every step, so the epsilon it reports covers all training on the dataset.

Why not ``PrivacyEngine.make_private``: it derives the sample rate as ``1 / len(data_loader)``
and the expected batch as ``int(cases x rate)``. With 6 cases in batches of 4 that samples at
0.5 (expected batch 3, not 4); with 49 cases in batches of 1 the float product is 0.99999... and
the expected batch becomes 0, so every update is divided by zero. The parts below are the same
Opacus classes the engine uses, given the exact rate and batch size.

A model must declare exactly one private network (every family does). Two private networks
trained on the same Poisson batch are not two independent subsampled mechanisms, and Opacus'
accountants have no analysis for that, so :func:`make_private` refuses rather than
under-count epsilon.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from opacus.accountants import IAccountant
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import AbstractGradSampleModule, prepare_module
from opacus.optimizers import DPOptimizer, get_optimizer_class
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from common.config import PrivacyConfig
from common.errors import ConfigError, FedsynthError
from common.models.interface import GenerativeModel
from common.privacy.accounting import (
    History,
    compute_epsilon,
    extend_history,
    history_of,
    new_accountant,
    noise_multiplier_for,
    normalize_history,
    total_steps,
)

LOGGER = logging.getLogger("fedsynth.privacy")

SECURE_RANDOM_DEVICE = "/dev/urandom"
"""Where torchcsprng draws secure randomness from with ``privacy.secure-rng`` (as in Opacus)."""
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
BATCH_NORM_WHY = (
    "BatchNorm normalises each case with statistics of its whole batch, so one case's output "
    "and gradient depend on the other cases in the batch: per-sample clipping then no longer "
    "bounds any single case's influence and the DP-SGD guarantee fails. GroupNorm (or "
    "InstanceNorm, LayerNorm) normalises each case on its own"
)


class PrivacyModelError(FedsynthError, ValueError):
    """A model cannot be trained with DP-SGD as it is; the message says why and what to do."""


@dataclass
class PrivateTraining:
    """What :func:`make_private` set up: the Poisson-sampled loader and the live accounting.

    ``steps_taken`` and ``epsilon`` count from the accountant, which every DP optimiser step
    advances; ``epsilon`` covers the history the engine was seeded with plus this run's steps.
    """

    data_loader: DataLoader
    network: str
    noise_multiplier: float
    sample_rate: float
    expected_batch_size: int
    max_grad_norm: float
    delta: float
    planned_steps: int
    accountant: IAccountant
    optimizer: DPOptimizer = field(repr=False)
    steps_before: int = field(repr=False)

    def history(self) -> History:
        """The accountant's history: the seeded one, then this run's steps."""
        return history_of(self.accountant)

    def steps_taken(self) -> int:
        """Steps of this run so far (including ``steps_done`` of a resumed run)."""
        return total_steps(self.history()) - self.steps_before

    def epsilon(self) -> float:
        """Epsilon spent on the dataset so far, at :attr:`delta`."""
        return compute_epsilon(self.history(), self.delta, self.accountant.mechanism())

    def step_without_data(self) -> None:
        """The DP step of a Poisson batch that drew no case: noise only, counted as a step.

        A batch is empty with probability ``(1 - sample_rate) ** cases`` (10% for 8 cases at
        0.25). The analysis counts that step; skipping it would make the output depend on
        whether the batch was empty. Call this instead of the family's ``train_step``.
        """
        self.optimizer.zero_grad(set_to_none=True)
        for param in self.optimizer.params:
            param.grad_sample = param.new_zeros((0, *param.shape))
        self.optimizer.step()


def make_private(
    model: GenerativeModel,
    data_loader: DataLoader,
    privacy: PrivacyConfig,
    *,
    noise_generator: torch.Generator,
    planned_steps: int,
    history: Iterable[Sequence[Any]] = (),
    steps_done: int = 0,
    fix: bool = False,
) -> PrivateTraining:
    """Make ``model``'s private network train with DP-SGD; replaces its net and optimiser.

    Args:
        model: replaces ``model.nets[name]`` and ``model.optimizers[name]`` of its one private
            network with Opacus' ``GradSampleModule`` and ``DPOptimizer`` (net in train mode).
        data_loader: the site's loader; its ``batch_size`` over its dataset's size is the
            Poisson sample rate, and its ``generator`` (required) draws the Poisson batches.
        privacy: the noise multiplier, or ``target_epsilon`` > 0 to choose it so that
            ``planned_steps`` spend that epsilon; clipping norm, delta, accountant, mode.
        noise_generator: draws the Gaussian noise (on the network's device), so runs are
            reproducible from the seed. Ignored with ``privacy.secure_rng``.
        planned_steps: the steps this run or round will take.
        history: the ledger's history before this run (``PrivacyLedger.history(excluding=...)``)
            so that :meth:`PrivateTraining.epsilon` is cumulative.
        steps_done: steps this run took before it was resumed.
        fix: replace BatchNorm with GroupNorm (opacus ``ModuleValidator.fix``; the replaced
            layers start untrained) instead of refusing the network.

    Returns:
        The Poisson-sampled data loader to train from and the live accounting.

    Raises:
        PrivacyModelError: the model has no or several private networks, or its private
            network cannot be trained with DP-SGD (BatchNorm; the message says why).
        ConfigError: ``privacy.secure_rng`` without torchcsprng installed: Opacus needs it
            for cryptographically secure noise and sampling. Install a torchcsprng built for
            your torch, or set ``privacy.secure-rng=false`` (noise then comes from the seeded
            ``noise_generator``: reproducible, fine for experiments, not for a release);
            a target epsilon no noise level reaches; ``privacy.delta`` of 0.
        ValueError: privacy is disabled, the loader has no batch size or generator, or the
            noise generator is on another device than the network.
    """
    if not privacy.enabled:
        raise ValueError("privacy.enabled is false: train without make_private")
    if privacy.delta <= 0:
        raise ConfigError("privacy.delta must be > 0 for DP-SGD (e.g. 1e-5)")
    if planned_steps < 1 or steps_done < 0:
        raise ValueError(f"planned_steps must be >= 1 and steps_done >= 0: {planned_steps}")
    name = _private_network(model)
    secure_generator = _secure_generator(privacy)
    net, optimizer = _dp_compatible(model, name, fix=fix)
    _check_generator(noise_generator, net)
    batch_size, sample_rate = _sampling(data_loader)
    sigma = privacy.noise_multiplier
    if privacy.target_epsilon > 0:
        sigma = noise_multiplier_for(
            privacy.target_epsilon, privacy.delta, sample_rate, planned_steps, privacy.accountant
        )
    before = normalize_history(history)
    accountant = new_accountant(
        privacy.accountant, extend_history(before, sigma, sample_rate, steps_done)
    )
    mode = grad_sample_mode(model, privacy)
    module = prepare_module(net, grad_sample_mode=mode, loss_reduction="mean")
    module.forbid_grad_accumulation()  # Poisson sampling: one backward pass per step
    optimizer_class = get_optimizer_class(clipping="flat", distributed=False, grad_sample_mode=mode)
    dp_optimizer: DPOptimizer = optimizer_class(
        optimizer,
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        expected_batch_size=batch_size,
        loss_reduction="mean",
        generator=noise_generator if secure_generator is None else secure_generator,
        secure_mode=secure_generator is not None,
    )
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    loader = _poisson_loader(data_loader, sample_rate, secure_generator)
    model.nets[name], model.optimizers[name] = module, dp_optimizer
    LOGGER.info(
        "DP-SGD on %s: noise multiplier %.4g, clipping norm %g, Poisson sample rate %.4g "
        "(expected batch %d of %d cases), %s accountant at delta %g, %s mode",
        name,
        sigma,
        privacy.max_grad_norm,
        sample_rate,
        batch_size,
        len(loader.dataset),  # type: ignore[arg-type]
        privacy.accountant,
        privacy.delta,
        mode,
    )
    return PrivateTraining(
        data_loader=loader,
        network=name,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        expected_batch_size=batch_size,
        max_grad_norm=privacy.max_grad_norm,
        delta=privacy.delta,
        planned_steps=planned_steps,
        accountant=accountant,
        optimizer=dp_optimizer,
        steps_before=total_steps(before),
    )


def grad_sample_mode(model: GenerativeModel, privacy: PrivacyConfig) -> str:
    """Opacus' per-sample gradient mode: ``privacy.grad-sample-mode``, or with ``auto`` the
    mode the model's family measured fastest (``GenerativeModel.grad_sample_mode``)."""
    if privacy.grad_sample_mode == "auto":
        return model.grad_sample_mode
    return privacy.grad_sample_mode


def _private_network(model: GenerativeModel) -> str:
    """The model's one private network, or a clear refusal."""
    names = tuple(model.private_networks)
    if len(names) != 1:
        raise PrivacyModelError(
            f"the {model.family} model declares private networks {names}, but DP-SGD here "
            "trains exactly one: each further network stepped on the same Poisson batch would "
            "release that batch again, and Opacus' accountants have no analysis for that. "
            "Let one network see real data and train the others on its outputs only"
        )
    if names[0] not in model.nets or names[0] not in model.optimizers:
        raise PrivacyModelError(
            f"the {model.family} model declares private network {names[0]!r} but has no net "
            "or optimiser of that name in model.nets / model.optimizers"
        )
    return names[0]


def _secure_generator(privacy: PrivacyConfig) -> torch.Generator | None:
    """torchcsprng's generator with ``privacy.secure_rng`` (see :func:`make_private`)."""
    if not privacy.secure_rng:
        return None
    try:
        import torchcsprng  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "privacy.secure-rng = true needs the torchcsprng package, which Opacus uses for "
            "cryptographically secure noise and Poisson sampling, and it is not installed. "
            "Install a torchcsprng built for your torch version (github.com/pytorch/csprng), "
            "or set privacy.secure-rng=false: noise then comes from the seeded generator, "
            "reproducible and fine for experiments, but not for a production release"
        ) from None
    generator: torch.Generator = torchcsprng.create_random_device_generator(SECURE_RANDOM_DEVICE)
    return generator


def _dp_compatible(
    model: GenerativeModel, name: str, *, fix: bool
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The private network in train mode, checked (or fixed) for DP-SGD, and its optimiser."""
    net, optimizer = model.nets[name], model.optimizers[name]
    if isinstance(net, AbstractGradSampleModule):
        raise ValueError(f"network {name!r} is already wrapped for DP-SGD")
    net.train(True)
    problems = _problems(net)
    if problems and fix:
        net = ModuleValidator.fix(net)
        optimizer = _rebuilt_optimizer(name, optimizer, net)
        problems = _problems(net)
    if problems:
        raise PrivacyModelError(
            f"network {name!r} of the {model.family} model cannot be trained with DP-SGD: "
            f"{'; '.join(problems)}"
        )
    model_params = {id(p) for p in net.parameters()}
    if any(id(p) not in model_params for group in optimizer.param_groups for p in group["params"]):
        raise ValueError(f"the optimiser of {name!r} holds parameters of another network")
    return net, optimizer


def _problems(net: nn.Module) -> list[str]:
    """Why ``net`` breaks DP-SGD (BatchNorm explained; Opacus' other validators quoted)."""
    batch_norms = [
        path or "the network" for path, m in net.named_modules() if type(m) in BATCH_NORMS
    ]
    problems = []
    if batch_norms:
        problems.append(
            f"it has BatchNorm ({', '.join(batch_norms)}). {BATCH_NORM_WHY}: build the network "
            "with GroupNorm, or pass fix=True to let opacus ModuleValidator.fix swap GroupNorm in"
        )
    problems += [
        str(error)
        for error in ModuleValidator.validate(net, strict=False)
        if "BatchNorm" not in str(error)
    ]
    return problems


def _rebuilt_optimizer(
    name: str, optimizer: torch.optim.Optimizer, fixed: nn.Module
) -> torch.optim.Optimizer:
    """The same optimiser (class and settings) over a fixed network's new parameters."""
    if len(optimizer.param_groups) != 1 or optimizer.state:
        raise PrivacyModelError(
            f"network {name!r} was fixed for DP-SGD (new GroupNorm parameters) but its "
            "optimiser has several parameter groups or a saved state that cannot be moved "
            "over: use GroupNorm in the model family instead of fix=True"
        )
    rebuilt = type(optimizer)(fixed.parameters(), **optimizer.defaults)
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    rebuilt.param_groups[0].update(settings)
    return rebuilt


def _check_generator(generator: torch.Generator, net: nn.Module) -> None:
    """Opacus draws noise on the parameters' device, so the generator must live there."""
    device = next(net.parameters()).device
    if generator.device.type != device.type:
        raise ValueError(
            f"the noise generator is on {generator.device} but the private network is on "
            f"{device}: make it with torch_generator(..., device={device.type!r})"
        )


def _sampling(data_loader: DataLoader) -> tuple[int, float]:
    """The expected batch size and Poisson sample rate (batch size / cases) of a loader."""
    cases = len(data_loader.dataset)  # type: ignore[arg-type]
    batch_size = data_loader.batch_size
    if batch_size is None or not 1 <= batch_size <= cases:
        raise ValueError(
            f"the data loader needs a batch size between 1 and its {cases} cases, not "
            f"{batch_size} (DP-SGD samples each case with probability batch size / cases)"
        )
    if data_loader.generator is None:
        raise ValueError(
            "give the data loader an explicit generator (DataLoader(..., generator=...)): it "
            "draws the Poisson batches, which must be reproducible from the seed"
        )
    return batch_size, batch_size / cases


def _poisson_loader(
    data_loader: DataLoader, sample_rate: float, secure_generator: torch.Generator | None
) -> DPDataLoader:
    """Opacus' Poisson-sampling loader over the same dataset, collate and workers."""
    return DPDataLoader(
        data_loader.dataset,
        sample_rate=sample_rate,
        collate_fn=data_loader.collate_fn,
        generator=data_loader.generator if secure_generator is None else secure_generator,
        num_workers=data_loader.num_workers,
        pin_memory=data_loader.pin_memory,
        timeout=data_loader.timeout,
        worker_init_fn=data_loader.worker_init_fn,
        multiprocessing_context=data_loader.multiprocessing_context,
        prefetch_factor=data_loader.prefetch_factor,
        persistent_workers=data_loader.persistent_workers,
    )
