"""Local training at a site: the prepared cases, a generator, optionally DP-SGD, checkpoints.

:func:`train_site` is ``fedsynth train`` (one site, also the study's centralised baseline);
the ClientApp runs :func:`train_local` once per federated round on the global weights.

Privacy is charged *before* training: the planned steps of a run or round are recorded in the
site's ledger before the first step, so a crash can never leave spent privacy unrecorded; a
resumed run continues its own charge instead of charging again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from common.atomic import atomic_write_text, disk_full_reported
from common.config import FedsynthConfig, Scalar, changed_settings, to_run_config
from common.data.dataset import CachedCases
from common.interrupts import Interrupted, deferred
from common.memory.plan import plan_memory
from common.models.calibration import (
    calibrate_tumour_volume,
    site_volume_metrics,
    volume_targets,
)
from common.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, save_model
from common.models.interface import Batch, GenerativeModel
from common.models.prior import initial_model
from common.models.schedule import apply_learning_rates, learning_rate_factor
from common.privacy.engine import make_private
from common.privacy.ledger import PrivacyLedger
from common.release import SiteRecord
from common.run_state import RunRecord, previous_run_notice
from common.runs import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RunSummary,
    write_summary,
)
from common.seeding import torch_generator

StepCallback = Callable[[int, dict[str, float]], None]
LOGGER = logging.getLogger("fedsynth.training")


@dataclass(frozen=True)
class TrainingOutcome:
    """What a run or round of local training did."""

    steps: int
    losses: dict[str, float]
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(config: FedsynthConfig) -> torch.device:
    """The device from ``training.device``: a GPU when asked or when 'auto' finds one."""
    if config.training.device == "cuda" or (
        config.training.device == "auto" and torch.cuda.is_available()
    ):
        return torch.device("cuda")
    return torch.device("cpu")


def _steps_per_epoch(dataset_size: int, config: FedsynthConfig) -> int:
    return max(1, math.ceil(dataset_size / config.training.batch_size))


def planned_steps(dataset_size: int, config: FedsynthConfig) -> int:
    """Steps of one run or round: local epochs of (cases / batch size) steps, capped."""
    steps = config.training.local_epochs * _steps_per_epoch(dataset_size, config)
    return min(steps, config.training.max_steps) if config.training.max_steps else steps


def max_steps_notice(dataset_size: int, config: FedsynthConfig) -> str | None:
    """What to tell a user whose ``training.max-steps`` asks for more steps than the local
    epochs take (it only caps them), with the local epochs that would take them; else None."""
    cap, steps = config.training.max_steps, planned_steps(dataset_size, config)
    if steps >= cap:
        return None
    epochs = math.ceil(cap / _steps_per_epoch(dataset_size, config))
    return (
        f"training.max-steps = {cap} only caps the steps: training.local-epochs = "
        f"{config.training.local_epochs} over {dataset_size} cases in batches of "
        f"{config.training.batch_size} takes {steps} steps, so {steps} are trained; set "
        f"training.local-epochs = {epochs} to train {cap}"
    )


def _loader(dataset: CachedCases, config: FedsynthConfig, generator: torch.Generator) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=min(config.training.batch_size, len(dataset)),
        shuffle=True,
        generator=generator,
        drop_last=False,
    )


def _batches(loader: DataLoader, steps: int, device: torch.device) -> Any:
    """Batches from the loader, epoch after epoch, until ``steps`` were given."""
    given = 0
    while given < steps:
        for image, label in loader:
            yield Batch(image.to(device), label.to(device))
            given += 1
            if given >= steps:
                return


@dataclass
class TrainingState:
    """Where a run stands: steps done and the random streams' states (for resuming)."""

    step: int = 0
    generators: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores."""
        return {"step": self.step, "generators": self.generators}


def _capture(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {name: generator.get_state() for name, generator in generators.items()}


def train_local(
    model: GenerativeModel,
    dataset: CachedCases,
    config: FedsynthConfig,
    *,
    stage: tuple[str | int, ...],
    ledger: PrivacyLedger | None,
    run_id: str,
    resume_from: TrainingState | None = None,
    checkpoint: Callable[[TrainingState], None] | None = None,
    on_step: StepCallback | None = None,
    schedule: tuple[int, int] | None = None,
) -> TrainingOutcome:
    """Train ``model`` on a site's cases for the planned steps of one run or round.

    ``stage`` names this run or round for seeding (e.g. ``("train", site)``). With privacy on,
    the ledger is charged for all planned steps before the first one, once per ``run_id``: a
    resumed run (``resume_from``, same ``run_id``) is not charged again and takes only the
    steps that remain, so the steps taken never exceed the steps charged. ``schedule`` is
    (steps the whole training took before this run or round, steps of the whole training) for
    the learning-rate schedule; by default this run is the whole training.
    """
    started = time.perf_counter()
    steps = planned_steps(len(dataset), config)
    offset, total = schedule or (0, steps)
    generators = {
        "loader": torch_generator(config.seed, *stage, "loader"),
        "steps": torch_generator(config.seed, *stage, "steps"),
        "noise": torch_generator(config.seed, *stage, "dp-noise"),
    }
    loader = _loader(dataset, config, generators["loader"])
    private = None
    if config.privacy.enabled:
        if ledger is None:
            raise ValueError("privacy is enabled but no ledger was given")  # programming error
        private = make_private(
            model,
            loader,
            config.privacy,
            noise_generator=generators["noise"],
            planned_steps=steps,
            history=ledger.history(excluding=run_id),
        )
        ledger.charge(run_id, private.noise_multiplier, private.sample_rate, steps)
        loader = private.data_loader
    state = resume_from or TrainingState()
    for name, saved in state.generators.items():
        generators[name].set_state(saved)
    model.train_mode(True)
    losses: dict[str, float] = {}
    remaining = _batches(loader, steps - state.step, model.device)
    with expected_warnings_silenced():
        try:
            for batch in remaining:
                with deferred():  # a stop signal waits for the step to finish
                    step_losses: dict[str, float] = {}
                    factor = learning_rate_factor(offset + state.step, total, config.training)
                    apply_learning_rates(model.optimizers, factor)
                    if private is not None and batch.image.shape[0] == 0:
                        private.step_without_data()  # an empty Poisson batch costs a step too
                    else:
                        step_losses = losses = model.train_step(batch, generators["steps"])
                    model.update_averages()
                    state.step += 1
                    if on_step is not None:
                        on_step(state.step, step_losses)  # {} after a step without data
                    every = config.training.checkpoint_every
                    if checkpoint is not None and state.step % every == 0:
                        state.generators = _capture(generators)
                        checkpoint(state)
        except Interrupted as err:
            if checkpoint is None:
                raise
            state.generators = _capture(generators)
            checkpoint(state)  # every finished step, so --resume continues from here
            raise err.with_hint(
                f"{state.step} of {steps} steps are saved; run the same command with --resume "
                "to continue"
            ) from None
    return TrainingOutcome(
        steps=state.step,
        losses=losses,
        epsilon=ledger.spent_epsilon() if ledger is not None and private is not None else None,
        delta=config.privacy.delta if private is not None else None,
        noise_multiplier=private.noise_multiplier if private is not None else None,
        sample_rate=private.sample_rate if private is not None else None,
        seconds=time.perf_counter() - started,
    )


EXPECTED_WARNINGS = (
    # Opacus' functorch mode: the hook fires on the first layer, whose input needs no gradient
    "Full backward hook is firing when gradients are computed with respect to module outputs",
)
"""Warnings of libraries about situations fedsynth handles on purpose."""
OPACUS_LOADER_LOGGER = "opacus.data_loader"
"""Warns 'First batch is empty' on every empty Poisson batch, which train_local handles."""


@contextlib.contextmanager
def expected_warnings_silenced() -> Iterator[None]:
    """Training without the libraries' warnings about what fedsynth does on purpose (empty
    Poisson batches, Opacus' functorch hooks); every other warning still shows."""
    loader_logger = logging.getLogger(OPACUS_LOADER_LOGGER)
    level = loader_logger.level
    loader_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        loader_logger.setLevel(level)


def _append_metrics(path: Path, step: int, losses: dict[str, float]) -> None:
    with disk_full_reported(path), path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": step, **losses}) + "\n")


def _resumable_state(
    checkpoint_path: Path, model: GenerativeModel, run_config: dict[str, Scalar]
) -> dict[str, Any]:
    """The checkpoint's saved state, refused when it is missing or its settings differ."""
    if not checkpoint_path.exists():
        raise CheckpointError(
            f"{checkpoint_path}: no checkpoint to resume from; run without --resume to start"
        )
    saved = load_checkpoint(checkpoint_path, model)
    changed = changed_settings(saved.get("run_config", {}), run_config)
    if changed:
        raise CheckpointError(
            f"{checkpoint_path}: the run was started with other settings ({', '.join(changed)}); "
            "resume it with the settings it started with, or start without --resume"
        )
    return saved


def train_site(
    config: FedsynthConfig,
    cache: Path,
    run: Path,
    *,
    site_name: str,
    ledger_dir: Path,
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_notice: Callable[[str], None] = LOGGER.warning,
) -> RunSummary:
    """``fedsynth train``: train one site's generator from its prepared cache into ``run``.

    Writes ``model.pt``, ``run.json``, ``metrics.jsonl``, resumable ``checkpoint.pt`` and
    ``run-state.json`` (``common.run_state``). Memory is planned before the ledger is opened;
    an earlier run in ``run`` that was killed, and a ``training.max-steps`` that caps nothing,
    are reported through ``on_notice``.

    Raises:
        MemoryPlanError: the run would not fit in memory (nothing is charged or written).
        RunInUseError: another live process runs in ``run``.
        CheckpointError: ``resume`` was asked but there is no checkpoint, it does not fit the
            model, or it was written with other settings (the message names them).
    """
    dataset = CachedCases(cache, config.model.spatial_dims)
    plan = plan_memory(config, len(dataset))
    for notice in (previous_run_notice(run), max_steps_notice(len(dataset), config)):
        if notice is not None:
            on_notice(notice)
    model = initial_model(config).to(resolve_device(config))
    run.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run / CHECKPOINT_FILE
    run_config = to_run_config(config)
    resume_from, run_id = None, uuid.uuid4().hex
    if resume:
        saved = _resumable_state(checkpoint_path, model, run_config)
        resume_from = TrainingState(saved["step"], saved["generators"])
        run_id = str(saved["run_id"])
    elif checkpoint_path.exists():
        checkpoint_path.unlink()
        (run / METRICS_FILE).unlink(missing_ok=True)
    ledger = None
    if config.privacy.enabled:
        ledger = PrivacyLedger.for_cache(ledger_dir, dataset.index, config.privacy)

    def save(state: TrainingState) -> None:
        saved = {**state.to_dict(), "run_id": run_id, "run_config": run_config}
        save_checkpoint(checkpoint_path, model, saved)

    record = RunRecord(run, run_config, plan.needed, planned_steps(len(dataset), config))

    def step_done(step: int, losses: dict[str, float]) -> None:
        _append_metrics(run / METRICS_FILE, step, losses)
        if step == 1 or step % config.training.checkpoint_every == 0:
            record.reached(step)
        if on_step is not None:
            on_step(step, losses)

    with record.stopped_on_error():
        outcome = train_local(
            model,
            dataset,
            config,
            stage=("train", site_name),
            ledger=ledger,
            run_id=run_id,
            resume_from=resume_from,
            checkpoint=save,
            on_step=step_done,
        )
        summary = _write_run(run, model, config, dataset, outcome, site_name)
    record.finish(outcome.steps)
    return summary


def _write_run(
    run: Path,
    model: GenerativeModel,
    config: FedsynthConfig,
    dataset: CachedCases,
    outcome: TrainingOutcome,
    site_name: str,
) -> RunSummary:
    """After training: ``config.json`` (the settings given), the tumour-volume calibration
    when asked, ``model.pt`` (with the calibrated settings) and ``run.json``; the summary."""
    atomic_write_text(run / "config.json", json.dumps(to_run_config(config), indent=2) + "\n")
    calibration: dict[str, Any] = {}
    if config.model.tumour_calibration_cases > 0:
        targets = volume_targets(site_volume_metrics(dataset, config), config)
        if targets is None:  # pragma: no cover - the site's own metrics hold every key
            raise AssertionError("a site's volume metrics lack a key its config needs")
        config, found = calibrate_tumour_volume(model, config, targets)
        calibration = found.to_json()
    summary = RunSummary(
        family=model.family,
        model_hash=save_model(run / MODEL_FILE, model, config),
        rounds=1,
        steps=outcome.steps,
        sites=[SiteRecord(site_name, outcome.epsilon, outcome.delta)],
        final_losses=outcome.losses,
        calibration=calibration,
    )
    write_summary(run, summary)
    return summary
