"""Local training: runs, checkpoints, resume, and the privacy ledger charged once, up front."""

from __future__ import annotations

import errno
import io
import json
import math
from pathlib import Path

import pytest
from model_support import tiny_config

from client import training
from client.training import max_steps_notice, planned_steps, train_site
from common.config import FedsynthConfig
from common.data.cache import read_cache
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.errors import DiskFullError
from common.memory.plan import MemoryPlanError
from common.models.checkpoint import CheckpointError, load_model
from common.privacy.accounting import compute_epsilon
from common.privacy.ledger import BudgetExceededError, PrivacyLedger
from common.run_state import STOPPED, previous_run_notice, read_state
from common.runs import read_summary
from simulations.phantoms import write_cohort

SETTINGS = {
    "model.family": "diffusion",
    "training.batch-size": 4,
    "training.local-epochs": 2,
    "training.checkpoint-every": 2,
    "privacy.noise-multiplier": 2.0,
}


def _site(tmp_path: Path, config: FedsynthConfig) -> Path:
    cohort = write_cohort(config, tmp_path / "sites")
    prepare_site(cohort.sites[0], tmp_path / "cache", config.data)
    return tmp_path / "cache"


def _ledger(cache: Path, folder: Path, config: FedsynthConfig) -> PrivacyLedger:
    return PrivacyLedger.for_cache(folder, read_cache(cache)[0], config.privacy)


def test_planned_steps() -> None:
    config = tiny_config(**{"training.batch-size": 3, "training.local-epochs": 2})
    assert planned_steps(8, config) == 2 * 3  # ceil(8 / 3) steps per epoch
    capped = tiny_config(**{"training.local-epochs": 3, "training.max-steps": 4})
    assert planned_steps(8, capped) == 4


def test_a_max_steps_above_what_the_local_epochs_take_says_how_they_combine() -> None:
    """The issue's case: 40 cases in batches of 4 are 10 steps an epoch."""
    asked = tiny_config(**{"training.max-steps": 1500})
    assert planned_steps(40, asked) == 10
    assert max_steps_notice(40, asked) == (
        "training.max-steps = 1500 only caps the steps: training.local-epochs = 1 over 40 "
        "cases in batches of 4 takes 10 steps, so 10 are trained; set training.local-epochs "
        "= 150 to train 1500"
    )
    for cap in (0, 9, 10):  # no cap, a real cap, exactly the epochs' steps
        assert max_steps_notice(40, tiny_config(**{"training.max-steps": cap})) is None


def test_a_run_tells_its_user_when_max_steps_caps_nothing(tmp_path: Path) -> None:
    config = tiny_config(**{**SETTINGS, "training.local-epochs": 1, "training.max-steps": 5})
    cache = _site(tmp_path, config)
    notices: list[str] = []
    summary = train_site(
        config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l",
        on_notice=notices.append,
    )  # fmt: skip
    assert summary.steps == 2  # 8 cases in batches of 4, once
    assert notices == [max_steps_notice(8, config)]
    assert "set training.local-epochs = 3 to train 5" in notices[0]


def test_a_run_failing_after_its_steps_is_stopped_not_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the model file is written: the run reported it, so the next attempt
    must not say it was killed."""
    config = tiny_config(**{**SETTINGS, "training.local-epochs": 1})
    cache, run = _site(tmp_path, config), tmp_path / "run"

    def disk_full(path: Path, *_: object) -> str:
        raise DiskFullError(path)

    monkeypatch.setattr(training, "save_model", disk_full)
    with pytest.raises(DiskFullError, match=r"model\.pt is full"):
        train_site(config, cache, run, site_name="a", ledger_dir=tmp_path / "l")
    state = read_state(run)
    assert state is not None
    assert (state.status, state.step) == (STOPPED, 2)  # both steps done, then the disk
    assert previous_run_notice(run) is None


def test_a_full_disk_while_a_step_is_logged_names_the_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk(io.StringIO):
        def write(self, _: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", lambda *_, **__: FullDisk())
    metrics = tmp_path / "metrics.jsonl"
    with pytest.raises(DiskFullError, match=f"the disk holding {metrics} is full"):
        training._append_metrics(metrics, 2, {"loss": 0.5})


def test_run_writes_model_summary_and_charges_the_ledger(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)
    cache = _site(tmp_path, config)
    summary = train_site(config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l")
    assert summary.steps == 4
    assert summary.sites[0].epsilon is not None
    assert summary.sites[0].epsilon > 0
    assert read_summary(tmp_path / "run") == summary
    model, loaded = load_model(tmp_path / "run" / "model.pt")
    assert model.family == "diffusion"
    assert loaded == config
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    ledger = _ledger(cache, tmp_path / "l", config)
    assert ledger.spent_epsilon() == pytest.approx(summary.sites[0].epsilon)
    assert [run.steps for run in ledger.runs] == [4]


def test_a_case_added_to_the_site_continues_every_other_case_s_budget(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)  # 8 cases, batch 4: 4 steps at sample rate 1/2
    cache = _site(tmp_path, config)
    train_site(config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l")
    grown = tiny_config(**{**SETTINGS, "phantoms.cases-per-site": 9})  # the same 8, and one
    cohort = write_cohort(grown, tmp_path / "grown")
    prepare_site(cohort.sites[0], tmp_path / "grown-cache", grown.data)
    before, after = (read_cache(c)[0] for c in (cache, tmp_path / "grown-cache"))
    assert before.source_fingerprint != after.source_fingerprint
    assert set(before.case_fingerprints) < set(after.case_fingerprints)
    summary = train_site(
        grown,
        tmp_path / "grown-cache",
        tmp_path / "run-2",
        site_name="a",
        ledger_dir=tmp_path / "l",
    )
    sigma = config.privacy.noise_multiplier  # 6 steps at sample rate 4/9 this time
    both = compute_epsilon([(sigma, 0.5, 4), (sigma, 4 / 9, 6)], 1e-5, "rdp")
    expected = [
        both
        if case in before.case_fingerprints
        else compute_epsilon([(sigma, 4 / 9, 6)], 1e-5, "rdp")
        for case in after.case_fingerprints
    ]
    ledger = _ledger(tmp_path / "grown-cache", tmp_path / "l", grown)
    assert ledger.case_epsilons() == pytest.approx(expected)
    assert sorted(expected).count(both) == 8
    assert summary.sites[0].epsilon == pytest.approx(both)  # the run's figure: its worst case


def test_resume_after_a_crash_is_charged_once(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)
    cache = _site(tmp_path, config)

    def crash(step: int, _: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_site(
            config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l", on_step=crash
        )
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    resumed = train_site(
        config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l", resume=True
    )
    assert resumed.steps == 4
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 3, 4]  # step 3 ran again after the checkpoint at step 2
    uninterrupted = train_site(
        config, cache, tmp_path / "other", site_name="a", ledger_dir=tmp_path / "l2"
    )
    assert resumed.sites[0].epsilon == pytest.approx(uninterrupted.sites[0].epsilon)


def test_resume_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)
    cache = _site(tmp_path, config)
    run = tmp_path / "run"
    train_site(config, cache, run, site_name="a", ledger_dir=tmp_path / "l")
    spent = _ledger(cache, tmp_path / "l", config).spent_epsilon()
    changed = tiny_config(**{**SETTINGS, "training.max-steps": 7, "training.learning-rate": 0.5})
    with pytest.raises(CheckpointError, match=r"\(training\.learning-rate, training\.max-steps\)"):
        train_site(changed, cache, run, site_name="a", ledger_dir=tmp_path / "l", resume=True)
    assert _ledger(cache, tmp_path / "l", config).spent_epsilon() == pytest.approx(spent)
    same = train_site(config, cache, run, site_name="a", ledger_dir=tmp_path / "l", resume=True)
    assert same.steps == 4


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)
    cache = _site(tmp_path, config)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train_site(
            config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l", resume=True
        )
    assert not (tmp_path / "run" / "model.pt").exists()


def test_over_budget_run_is_refused_before_training(tmp_path: Path) -> None:
    config = tiny_config(**{**SETTINGS, "privacy.budget-epsilon": 0.5})
    cache = _site(tmp_path, config)
    with pytest.raises(BudgetExceededError, match="over the budget"):
        train_site(config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l")
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_only_the_expected_library_warnings_are_silenced_and_only_while_training() -> None:
    import logging
    import warnings

    from client.training import EXPECTED_WARNINGS, OPACUS_LOADER_LOGGER, expected_warnings_silenced

    loader_logger = logging.getLogger(OPACUS_LOADER_LOGGER)
    before = loader_logger.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with expected_warnings_silenced():
            assert loader_logger.level == logging.ERROR
            warnings.warn(EXPECTED_WARNINGS[0] + " (detail)", UserWarning, stacklevel=1)
            warnings.warn("something else went wrong", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else went wrong"]
    assert loader_logger.level == before


def test_training_follows_the_schedule_and_updates_the_average(tmp_path: Path) -> None:
    """Warm-up over 2 steps then cosine to 0.1 over the rest: the last of 4 steps takes
    0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55 of the rate; the average was updated 4 times."""
    from client.training import train_local
    from common.data.dataset import CachedCases
    from common.models.registry import build_model

    config = tiny_config(
        **{
            **SETTINGS,
            "privacy.enabled": False,
            "training.lr-schedule": "cosine",
            "training.warmup-steps": 2,
            "training.ema-decay": 0.99,
            "training.learning-rate": 1e-3,
        }
    )
    cache = _site(tmp_path, config)
    rates: list[float] = []
    model = build_model(config)
    outcome = train_local(
        model,
        CachedCases(cache),
        config,
        stage=("test",),
        ledger=None,
        run_id="r",
        on_step=lambda *_: rates.append(model.optimizers["generator"].param_groups[0]["lr"]),
    )
    assert outcome.steps == 4
    assert rates == pytest.approx([5e-4, 1e-3, 1e-3, 5.5e-4])
    assert float(model.averages["generator"].updates) == 4
    # a later round of a longer training continues the schedule where the last one ended
    rates.clear()
    train_local(
        model,
        CachedCases(cache),
        config,
        stage=("test", 2),
        ledger=None,
        run_id="r2",
        on_step=lambda *_: rates.append(model.optimizers["generator"].param_groups[0]["lr"]),
        schedule=(4, 8),
    )
    expected = [1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * k / 6))) for k in (2, 3, 4, 5)]
    assert rates == pytest.approx(expected)


def test_a_run_that_would_not_fit_in_memory_is_refused_before_the_ledger(tmp_path: Path) -> None:
    config = tiny_config(**SETTINGS)
    cache = _site(tmp_path, config)
    run = tmp_path / "run"
    train_site(config, cache, run, site_name="a", ledger_dir=tmp_path / "l")
    before = _ledger(cache, tmp_path / "l", config)
    model_bytes = (run / "model.pt").read_bytes()
    tight = tiny_config(**{**SETTINGS, "training.memory-limit-gib": 0.01})
    with pytest.raises(MemoryPlanError, match=r"training\.batch-size 2 would need"):
        train_site(tight, cache, run, site_name="a", ledger_dir=tmp_path / "l")
    after = _ledger(cache, tmp_path / "l", config)
    assert after.spent_epsilon() == pytest.approx(before.spent_epsilon())
    assert [r.steps for r in after.runs] == [r.steps for r in before.runs] == [4]
    assert (run / "model.pt").read_bytes() == model_bytes
    with pytest.raises(MemoryPlanError):  # a fresh dataset's ledger is not even created
        train_site(tight, cache, tmp_path / "new", site_name="a", ledger_dir=tmp_path / "l2")
    assert not (tmp_path / "l2").exists()
    assert not (tmp_path / "new").exists()


def test_a_local_run_calibrates_the_tumour_volume_to_its_own_cases(tmp_path: Path) -> None:
    config = tiny_config(
        **{
            **SETTINGS,
            "privacy.enabled": False,
            "model.denoiser-output": "class-probabilities",
            "model.tumour-calibration-cases": 2,
            "model.tumour-calibration-tries": 2,
        }
    )
    cache = _site(tmp_path, config)
    summary = train_site(config, cache, tmp_path / "run", site_name="a", ledger_dir=tmp_path / "l")
    cases = CachedCases(cache)
    labels = [cases[i][1] for i in range(len(cases))]
    mean = sum(float((label == 1).sum()) for label in labels) / len(labels)  # CT tumour: 1
    assert summary.calibration["target_tumour_voxels"] == pytest.approx(mean)
    assert len(summary.calibration["tried"]) <= 2
    _, saved = load_model(tmp_path / "run" / "model.pt")
    assert saved.model.tumour_logit_shift == summary.calibration["tumour_logit_shift"]
