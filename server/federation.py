"""The server's rounds: send the global arrays, gate the replies, aggregate, checkpoint.

Each round: the strategy picks the sites (waiting for ``federation.min-sites``), the sites train
and reply within ``federation.reply-timeout-s``, the update gate (:mod:`server.gate`) screens
the replies, and if at least ``min-sites`` remain the strategy aggregates them into the new
global arrays; otherwise the round leaves the model as it was and the run goes on. Failed,
late and rejected sites are logged and counted in ``rounds.jsonl``, and so are the sites that
missed the round (no reply in time, or their SuperNode died): ``missed`` names each by its node
id and its run pseudonym. Every round asks the sites connected then, so a site whose SuperNode
died and came back (under the same node id, or a new one) trains again from the next round on.

After every round the state is checkpointed atomically (global arrays, the next round, the
sites' privacy figures, the round reports, the strategy's adaptive state). Random draws (site
sampling, central-DP noise) are reseeded from the run seed at the start of each round, so a run
resumed from its checkpoint repeats exactly what the uninterrupted run would have done.

Sites are named in the run's records by a pseudonym they send (``site-key``: a hash of the
federation run id and their data fingerprint), stable across a resume and meaningless outside
the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.atomic import atomic_write_text, is_nonempty_dir
from common.audit.exchange import site_name
from common.config import RESUME_IGNORED_KEYS, FedsynthConfig, changed_settings, to_run_config
from common.errors import FedsynthError, OutputExistsError
from common.exchange import (
    EXAMPLES_KEY,
    METRICS_KEY,
    ROUND_KEY,
    SITE_KEY,
    SITE_WEIGHT_KEY,
    TUMOUR_PRESENT_KEY,
    TUMOUR_VOXELS_KEY,
    load_model_arrays,
    model_arrays,
    settings_record,
)
from common.models.calibration import calibrate_tumour_volume, volume_targets
from common.models.checkpoint import (
    CheckpointError,
    load_model,
    load_payload,
    save_model,
    save_payload,
)
from common.models.interface import GenerativeModel
from common.models.prior import initial_model
from common.release import SiteRecord
from common.runs import MODEL_FILE, RunSummary, write_summary
from common.seeding import derive_seed
from server.gate import missing_sites, screen_replies
from server.release_gate import CandidateSampler, gated_release, model_sampler
from server.sampling import write_model_release
from server.strategies import build_strategy

LOGGER = logging.getLogger("fedsynth.server")

SERVER_CHECKPOINT_FILE = "server-checkpoint.pt"
ROUNDS_FILE = "rounds.jsonl"
CHECKPOINT_FORMAT = "fedsynth-server-checkpoint/1"
NOT_AVERAGED = (SITE_KEY, SITE_WEIGHT_KEY, ROUND_KEY)
"""Reply metrics left out of a round's aggregated metrics."""
RUN_ID_LENGTH = 32
"""Hex digits of a run id."""
SEED_MODULUS = 2**32
"""numpy's and Python's global generators take seeds below this."""


class NoUpdatesError(FedsynthError):
    """Every round of a run was left without updates: there is no model to release."""


class ResumeError(FedsynthError):
    """A run cannot be resumed as asked; the message says why and what to do."""


@dataclass
class RoundReport:
    """What happened in one round, for ``rounds.jsonl`` and the summary."""

    round: int
    asked: int
    replied: int
    accepted: int
    rejected: dict[str, str]
    aggregated: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    missed: dict[str, str | None] = field(default_factory=dict)
    """Node id -> run pseudonym (None: it never replied in this run) of each site asked that
    sent no reply."""


@dataclass
class FederationState:
    """Everything the server checkpoints after a round."""

    run_id: str
    next_round: int
    arrays: dict[str, np.ndarray]
    sites: dict[str, dict[str, float]]
    reports: list[RoundReport]
    strategy_state: dict[str, float]
    run_config: dict[str, Any]
    node_sites: dict[str, str] = field(default_factory=dict)
    """Node id -> run pseudonym of every node whose update was accepted (names the sites that
    miss a round)."""


RoundCallback = Callable[[RoundReport], None]


def run_federation(
    grid: Grid, config: FedsynthConfig, run_dir: Path, *, on_round: RoundCallback | None = None
) -> RunSummary:
    """Run ``federation.num-rounds`` rounds (or the rest of them with ``federation.resume``),
    then write ``model.pt`` and ``run.json`` to ``run_dir``.

    Raises:
        OutputExistsError: ``run_dir`` already holds a run and ``federation.resume`` is off.
        ResumeError: resume was asked but there is no checkpoint, or its settings differ.
    """
    model = initial_model(config)
    state = _start(config, run_dir, model_arrays(model))
    strategy = build_strategy(config.federation, _sites_per_round(grid, config))
    _restore_strategy(strategy, state.strategy_state)
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in state.arrays.items()})
    for server_round in range(state.next_round, config.federation.num_rounds + 1):
        report, arrays = _round(grid, strategy, config, state, arrays, server_round)
        state.reports.append(report)
        state.next_round = server_round + 1
        state.arrays = {name: array.numpy() for name, array in arrays.items()}
        state.strategy_state = _strategy_state(strategy)
        _save_state(run_dir, state)
        if on_round is not None:
            on_round(report)
    load_model_arrays(model, arrays)
    calibration: dict[str, Any] = {}
    if config.model.tumour_calibration_cases > 0:
        config, calibration = _calibrated(model, config, state.reports)
    digest = save_model(run_dir / MODEL_FILE, model, config)
    summary = RunSummary(
        family=model.family,
        model_hash=digest,
        rounds=config.federation.num_rounds,
        steps=int(sum(r.metrics.get("steps", 0.0) for r in state.reports)),
        sites=site_records(state.sites),
        final_losses=_final_losses(state.reports),
        calibration=calibration,
    )
    write_summary(run_dir, summary)
    return summary


def _calibrated(
    model: GenerativeModel, config: FedsynthConfig, reports: list[RoundReport]
) -> tuple[FedsynthConfig, dict[str, Any]]:
    """The config with ``model.tumour-logit-shift`` calibrated on the final model to the
    sites' mean tumour volume (the last aggregated round's), and the search's record.

    Raises:
        FedsynthError: no round aggregated the sites' tumour volumes.
    """
    found_targets = [volume_targets(r.metrics, config) for r in reports if r.aggregated]
    targets = [t for t in found_targets if t is not None]
    if not targets:
        raise FedsynthError(
            "model.tumour-calibration-cases is set but no round aggregated the sites' "
            f"{TUMOUR_VOXELS_KEY!r} (and, with model.label-calibration-tries, each "
            f"label's; with model.tumour-presence-redraws, {TUMOUR_PRESENT_KEY!r}): set it "
            "to 0, or train at least one round that aggregates"
        )
    config, found = calibrate_tumour_volume(model, config, targets[-1])
    LOGGER.info(
        "tumour volume calibrated: model.tumour-logit-shift %.3f samples %.0f tumour voxels a "
        "case, the sites' mean %.0f (%d tries)",
        found.shift,
        found.volume,
        found.target,
        len(found.tried),
    )
    if found.presence is not None:
        LOGGER.info(
            "sampled with a tumour in %.0f%% of cases, as the sites' cases", 100 * found.presence
        )
    if found.labels is not None:
        LOGGER.info(
            "labels calibrated: model.label-logit-shifts %s samples %s voxels a case, the "
            "sites' means %s (%d tries)",
            config.model.label_logit_shifts or "0",
            ", ".join(f"{v:.0f}" for v in found.labels.volumes),
            ", ".join(f"{v:.0f}" for v in found.labels.targets),
            len(found.labels.tried) - 1,
        )
    return config, found.to_json()


def site_records(sites: dict[str, dict[str, float]]) -> list[SiteRecord]:
    """Each site's privacy figures under its pseudonym, in a fixed order."""
    return [
        SiteRecord(name, figures.get("epsilon"), figures.get("delta"))
        for name, figures in sorted(sites.items())
    ]


def _round(
    grid: Grid,
    strategy: Strategy,
    config: FedsynthConfig,
    state: FederationState,
    arrays: ArrayRecord,
    server_round: int,
) -> tuple[RoundReport, ArrayRecord]:
    started = time.perf_counter()
    _reseed(config.seed, server_round)
    settings = settings_record(config, server_round, state.run_id)
    messages = list(strategy.configure_train(server_round, arrays, settings, grid))
    LOGGER.info("round %d: %d sites asked to train", server_round, len(messages))
    received = grid.send_and_receive(messages, timeout=config.federation.reply_timeout_s)
    replies = missing_sites(messages, received)
    ratio = config.federation.max_update_norm_ratio
    gate = screen_replies(replies.replies, arrays, server_round, ratio)
    for reply in gate.accepted:
        _record_site(state, reply)
    missed = {str(node): state.node_sites.get(str(node)) for node in replies.missed}
    for node, site in missed.items():
        LOGGER.warning(
            "round %d: site %s (node %s) sent no reply: not within federation.reply-timeout-s "
            "= %g s, or its SuperNode stopped",
            server_round,
            site or "never heard from",
            node,
            config.federation.reply_timeout_s,
        )
    aggregated = len(gate.accepted) >= config.federation.min_sites
    metrics: dict[str, float] = {}
    if aggregated:
        new_arrays, merged = strategy.aggregate_train(server_round, gate.accepted)
        if new_arrays is None:
            aggregated = False
        else:
            arrays = new_arrays
            metrics = _scalar_metrics(merged)
    else:
        LOGGER.warning(
            "round %d: %d accepted updates, fewer than federation.min-sites = %d: the global "
            "model stays as it was",
            server_round,
            len(gate.accepted),
            config.federation.min_sites,
        )
    metrics["steps"] = float(
        sum(_metric(reply, "steps") for reply in gate.accepted) if aggregated else 0.0
    )
    report = RoundReport(
        round=server_round,
        asked=len(messages),
        replied=len(replies.replies),
        accepted=len(gate.accepted),
        rejected={str(node): reason for node, reason in gate.rejected.items()},
        aggregated=aggregated,
        seconds=time.perf_counter() - started,
        metrics=metrics,
        missed=missed,
    )
    LOGGER.info(
        "round %d: %d of %d sites replied, %d accepted, %d rejected, %s in %.1f s",
        server_round,
        report.replied,
        report.asked,
        report.accepted,
        len(report.rejected),
        "aggregated" if aggregated else "not aggregated",
        report.seconds,
    )
    return report, arrays


def _reseed(seed: int, server_round: int) -> None:
    """Python's and numpy's global generators (Flower's site sampling and central-DP noise
    draw from them), seeded for this round from the run seed."""
    random.seed(derive_seed(seed, "server-round", server_round) % SEED_MODULUS)
    np.random.seed(derive_seed(seed, "server-noise", server_round) % SEED_MODULUS)


def _sites_per_round(grid: Grid, config: FedsynthConfig) -> int:
    """How many sites a round samples once ``min-sites`` are connected (central DP's scale)."""
    connected = max(len(list(grid.get_node_ids())), config.federation.min_sites)
    return max(int(connected * config.federation.fraction_train), config.federation.min_sites)


def _metric(reply: Message, key: str) -> float:
    metrics = reply.content[METRICS_KEY]
    value = metrics.get(key, 0.0) if isinstance(metrics, MetricRecord) else 0.0
    return float(value) if isinstance(value, int | float) else 0.0


def _record_site(state: FederationState, reply: Message) -> None:
    """Keep a site's latest privacy figures (its ledger's cumulative epsilon) and its node."""
    key = site_name(int(_metric(reply, SITE_KEY)))
    state.node_sites[str(reply.metadata.src_node_id)] = key
    figures = state.sites.setdefault(key, {})
    figures["cases"] = _metric(reply, EXAMPLES_KEY)
    metrics = reply.content[METRICS_KEY]
    if isinstance(metrics, MetricRecord) and "epsilon" in metrics:
        figures["epsilon"] = _metric(reply, "epsilon")
        figures["delta"] = _metric(reply, "delta")


def _scalar_metrics(record: MetricRecord | None) -> dict[str, float]:
    """The round's aggregated metrics, without those whose mean means nothing (pseudonyms,
    weights, the round)."""
    if record is None:
        return {}
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and k not in NOT_AVERAGED
    }


def _final_losses(reports: list[RoundReport]) -> dict[str, float]:
    for report in reversed(reports):
        if report.aggregated:
            return {k: v for k, v in report.metrics.items() if k.startswith("loss-")}
    return {}


def _strategy_state(strategy: Strategy) -> dict[str, float]:
    """The adaptive state of a strategy (the adaptive-clipping norm), for the checkpoint."""
    norm = getattr(strategy, "clipping_norm", None)
    return {"clipping_norm": float(norm)} if isinstance(norm, int | float) else {}


def _restore_strategy(strategy: Strategy, saved: dict[str, float]) -> None:
    if "clipping_norm" in saved:
        strategy.clipping_norm = saved["clipping_norm"]  # type: ignore[attr-defined]


def _start(config: FedsynthConfig, run_dir: Path, initial: ArrayRecord) -> FederationState:
    """A fresh state, or the checkpointed one with ``federation.resume``."""
    checkpoint = run_dir / SERVER_CHECKPOINT_FILE
    run_config = dict(to_run_config(config))
    if config.federation.resume:
        if not checkpoint.exists():
            raise ResumeError(
                f"{checkpoint}: no server checkpoint to resume from; run without "
                "federation.resume (--resume) to start the run"
            )
        state = _load_state(checkpoint)
        changed = changed_settings(state.run_config, run_config)
        if changed:
            raise ResumeError(
                f"{checkpoint}: the run was started with other settings ({', '.join(changed)}); "
                "resume it with the settings it started with"
            )
        LOGGER.info("resuming run %s at round %d", state.run_id, state.next_round)
        return state
    if is_nonempty_dir(run_dir):
        raise OutputExistsError(
            run_dir, "resume that run (--resume, federation.resume=true) or choose a new folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return FederationState(
        run_id=run_identity(run_config),
        next_round=1,
        arrays={name: array.numpy() for name, array in initial.items()},
        sites={},
        reports=[],
        strategy_state={},
        run_config=run_config,
    )


def round_reports(run_dir: Path) -> list[dict[str, Any]]:
    """Every round's report of the run in ``run_dir``, as ``rounds.jsonl`` holds them."""
    lines = (run_dir / ROUNDS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def run_identity(run_config: dict[str, Any]) -> str:
    """A run's id: a hash of its settings (seed included), so the same settings give the same
    run, seeds and result; it names the run's privacy-ledger charges and site pseudonyms."""
    comparable = {k: v for k, v in run_config.items() if k not in RESUME_IGNORED_KEYS}
    text = json.dumps(comparable, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_LENGTH]


def _save_state(run_dir: Path, state: FederationState) -> None:
    payload = {"format": CHECKPOINT_FORMAT, **asdict(state)}
    # tensors, not numpy arrays: checkpoints are read with torch.load(weights_only=True)
    payload["arrays"] = {name: torch.from_numpy(array) for name, array in state.arrays.items()}
    save_payload(run_dir / SERVER_CHECKPOINT_FILE, payload)
    lines = "".join(json.dumps(asdict(report)) + "\n" for report in state.reports)
    atomic_write_text(run_dir / ROUNDS_FILE, lines)


def _load_state(path: Path) -> FederationState:
    try:
        payload = load_payload(path, CHECKPOINT_FORMAT, "server checkpoint")
    except CheckpointError as err:
        raise ResumeError(str(err)) from None
    payload.pop("format")
    payload["arrays"] = {name: tensor.numpy() for name, tensor in payload["arrays"].items()}
    payload["reports"] = [RoundReport(**report) for report in payload["reports"]]
    return FederationState(**payload)


RELEASE_DIR = "release"
"""The release folder inside a federated run folder."""


@dataclass(frozen=True)
class FederationOutcome:
    """A finished federation: the run summary and where the release is."""

    summary: RunSummary
    release: Path
    cases: int


def federate(
    grid: Grid,
    config: FedsynthConfig,
    run_dir: Path,
    *,
    on_round: RoundCallback | None = None,
    sampler: CandidateSampler | None = None,
) -> FederationOutcome:
    """The rounds (:func:`run_federation`), then the release: candidates sampled from the
    global model (or drawn by ``sampler``), audited at every site, and only those no site
    flags released (:mod:`server.release_gate`).

    Raises:
        NoUpdatesError: no round aggregated an update (every site failed or was rejected).
        ReleaseRefusedError: a site failed the audit, a site's ledger is over budget, or every
            candidate was flagged; nothing is released.
    """
    summary = run_federation(grid, config, run_dir, on_round=on_round)
    reports = round_reports(run_dir)
    if not any(report["aggregated"] for report in reports):
        raise NoUpdatesError(
            f"no round of the run in {run_dir} aggregated any site's update, so the model is "
            f"untrained and nothing is released: see why each site was left out in "
            f"{run_dir / ROUNDS_FILE} and the sites' logs"
        )
    model, saved = load_model(run_dir / MODEL_FILE)
    run_id = run_identity(dict(to_run_config(config)))
    gated = gated_release(
        grid,
        saved,
        run_id,
        sampler or model_sampler(model, saved),
        [site.name for site in summary.sites],
    )
    release = run_dir / RELEASE_DIR
    write_model_release(
        run_dir,
        model,
        saved,
        gated.pairs,
        release,
        seed=saved.seed,
        audit=gated.record,
        overwrite=True,
    )
    return FederationOutcome(summary, release, int(gated.pairs.label.shape[0]))
