"""One federated round at a site: global arrays in, local training, updated arrays out.

The reply holds the model's arrays (same names, shapes and dtypes as the global ones) and scalar
metrics; nothing else leaves the site. With DP-SGD the round's steps are charged to the site's
privacy ledger before training. Every attempt to train is charged: a round the server sends
again (after a crash or a resume) costs privacy again, because two noisy results of the same
data are two releases.

Privacy of the noise level: with ``privacy.target-epsilon`` the noise multiplier is chosen once
for all ``federation.num-rounds`` rounds, so the whole federation spends the target; and every
round first checks that the rounds still to come fit the site's budget.

Errors never carry a site's paths to the server: :func:`failure_reason` turns them into a short
reason without file names (the full error stays in the site's log).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from client.site_data import ensure_prepared, site_files
from client.training import max_steps_notice, planned_steps, resolve_device, train_local
from common.config import FedsynthConfig, Scalar
from common.data.dataset import CachedCases
from common.data.problems import SiteDataError
from common.errors import ConfigError, DataError
from common.exchange import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EXAMPLES_KEY,
    METRICS_KEY,
    ROUND_KEY,
    SITE_KEY,
    SITE_WEIGHT_KEY,
    ExchangeError,
    load_model_arrays,
    model_arrays,
    read_settings,
    site_pseudonym,
)
from common.memory.plan import MemoryPlanError, plan_memory
from common.models.calibration import site_volume_metrics
from common.models.interface import GenerativeModel, unwrap
from common.models.registry import build_model
from common.privacy.accounting import noise_multiplier_for
from common.privacy.ledger import BudgetExceededError, LedgerError, PrivacyLedger

LOGGER = logging.getLogger("fedsynth.client")

LOSS_PREFIX = "loss-"
"""Metric names of the final training losses: ``loss-<name>``."""


class RoundRefusedError(Exception):
    """A site did not train this round; ``reason`` is safe to send to the server."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def train_round(content: RecordDict, node_config: dict[str, Scalar], attempt_id: str) -> RecordDict:
    """Train the global model of a train message on this site's data; the reply's content.

    ``attempt_id`` (the message's id) names this attempt's charge in the privacy ledger.

    Raises:
        RoundRefusedError: the site could not or would not train (bad message, data problems,
            privacy budget); its reason names no file.
    """
    try:
        return _train_round(content, node_config, attempt_id)
    except RoundRefusedError:
        raise
    except Exception as error:
        LOGGER.exception("this site did not train the round")
        raise RoundRefusedError(failure_reason(error)) from error


def failure_reason(error: BaseException, message: str = "train") -> str:
    """What the server may learn about a site's failure: its kind, never a path or case id;
    ``message`` names the kind of message that failed (``train`` or ``audit``)."""
    if isinstance(error, BudgetExceededError):
        return (
            f"privacy budget: the planned rounds would bring {error.cases_over} of "
            f"{error.cases} cases over the site's budget {error.budget:.3g}; the most spent "
            f"from epsilon {error.spent:.3g} to {error.projected:.3g}"
        )
    if isinstance(error, MemoryPlanError):
        return f"memory: {error}"  # settings and sizes only
    if isinstance(error, SiteDataError | DataError):
        return "site data problem: the site's operator can see which case in the site's log"
    if isinstance(error, LedgerError):
        return "privacy ledger problem: see the site's log"
    if isinstance(error, ExchangeError | ConfigError):
        return f"bad {message} message: {error}"
    return f"site error ({type(error).__name__}): see the site's log"


def _train_round(
    content: RecordDict, node_config: dict[str, Scalar], attempt_id: str
) -> RecordDict:
    started = time.perf_counter()  # the site's whole round: preparing, loading, training
    arrays = content.get(ARRAYS_KEY)
    settings = content.get(CONFIG_KEY)
    if not isinstance(arrays, ArrayRecord) or not isinstance(settings, ConfigRecord):
        raise ExchangeError(f"a train message needs {ARRAYS_KEY!r} and {CONFIG_KEY!r} records")
    config, server_round, run_id = read_settings(settings)
    files = site_files(node_config, config)
    dataset = CachedCases(ensure_prepared(files, config), config.model.spatial_dims)
    plan_memory(config, len(dataset))  # before the model is built and the ledger charged
    model = build_model(config).to(resolve_device(config))
    load_model_arrays(model, arrays)
    global_state = {name: _parameters(model, name) for name in model.nets}
    steps = planned_steps(len(dataset), config)
    notice = max_steps_notice(len(dataset), config)
    if notice is not None:
        LOGGER.warning("round %d: %s", server_round, notice)
    ledger = None
    if config.privacy.enabled:
        ledger = PrivacyLedger.for_cache(files.ledger_dir, dataset.index, config.privacy)
        config = _round_privacy(config, len(dataset), steps, server_round, ledger)

    loss_sums = dict.fromkeys(model.loss_names, 0.0)
    data_steps = 0

    def step_done(step: int, losses: dict[str, float]) -> None:
        nonlocal data_steps
        if losses:
            data_steps += 1
            for name in loss_sums:
                loss_sums[name] += losses.get(name, 0.0)
        if config.federation.strategy == "fedprox":
            proximal_pull(model, global_state, config.federation.proximal_mu)

    outcome = train_local(
        model,
        dataset,
        config,
        stage=("federated", run_id, server_round, dataset.index.source_fingerprint),
        ledger=ledger,
        run_id=f"{run_id}/round-{server_round}/{attempt_id}",
        on_step=step_done,
        schedule=((server_round - 1) * steps, steps * config.federation.num_rounds),
    )
    metrics: dict[str, int | float | list[int] | list[float]] = {
        EXAMPLES_KEY: len(dataset),
        SITE_WEIGHT_KEY: 1,
        SITE_KEY: site_pseudonym(run_id, dataset.index.source_fingerprint),
        ROUND_KEY: server_round,
        "steps": outcome.steps,
        "data-steps": data_steps,
        "seconds": time.perf_counter() - started,
    }
    if config.model.tumour_calibration_cases > 0:  # never with DP-SGD (a config rule)
        metrics.update(site_volume_metrics(dataset, config))
    # the round's mean losses over the steps that drew cases (every family's names, always)
    metrics.update({f"{LOSS_PREFIX}{k}": v / max(1, data_steps) for k, v in loss_sums.items()})
    if outcome.epsilon is not None and outcome.delta is not None:
        metrics.update(
            {
                "epsilon": outcome.epsilon,
                "delta": outcome.delta,
                "noise-multiplier": float(outcome.noise_multiplier or 0.0),
            }
        )
    return RecordDict({ARRAYS_KEY: model_arrays(model), METRICS_KEY: MetricRecord(metrics)})


def _round_privacy(
    config: FedsynthConfig, cases: int, steps: int, server_round: int, ledger: PrivacyLedger
) -> FedsynthConfig:
    """The privacy settings of this round: one noise level for the whole federation, and a
    budget check of every round still to come before this one trains."""
    privacy = config.privacy
    sample_rate = min(config.training.batch_size, cases) / cases
    all_steps = steps * config.federation.num_rounds
    sigma = privacy.noise_multiplier
    if privacy.target_epsilon > 0:
        sigma = noise_multiplier_for(
            privacy.target_epsilon, privacy.delta, sample_rate, all_steps, privacy.accountant
        )
    rounds_left = config.federation.num_rounds - server_round + 1
    ledger.check_budget(sigma, sample_rate, steps * max(1, rounds_left))
    return replace(config, privacy=replace(privacy, noise_multiplier=sigma, target_epsilon=0.0))


def _parameters(model: GenerativeModel, name: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in unwrap(model.nets[name]).named_parameters()}


@torch.no_grad()
def proximal_pull(
    model: GenerativeModel, global_state: dict[str, dict[str, torch.Tensor]], mu: float
) -> None:
    """FedProx's proximal term as a decoupled step after each optimiser step:
    ``w <- w - lr * mu * (w - w_global)`` per network, with that network's learning rate.

    It depends only on the weights, never on data, so it costs no privacy.
    """
    for name, net in model.nets.items():
        rate = float(model.optimizers[name].param_groups[0]["lr"])
        for key, parameter in unwrap(net).named_parameters():
            parameter.sub_(rate * mu * (parameter - global_state[name][key]))
