"""``fedsynth evaluate``: a release against a real evaluation set -> evaluation.json, report.html.

Real cases appear in the outputs only by position (``real-001``, ...), never by their ids, so
the report can be shared without naming a patient. The output folder appears whole or not at
all; while the evaluation runs it holds only ``run-state.json``, so that one killed outright
is reported by the next.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_directory, refuse_existing_output
from common.config import FedsynthConfig, Scalar, to_run_config
from common.release import read_manifest
from common.run_state import RUN_STATE_FILE, RunRecord, previous_run_notice
from common.strict_json import strict_dumps
from evaluator.cases import EvalCase, check_same_modality, load_real, load_release, release_settings
from evaluator.paired import generate_for_labels
from evaluator.radiomics_section import radiomics
from evaluator.realism_section import not_computed, realism
from evaluator.report import radiomics_report, render_report, utility_report
from evaluator.utility_section import plan_utility, utility

EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"
FORMAT = "fedsynth-evaluation/1"
REAL_ID_PREFIX = "real-"
NOT_ASKED = "not asked for (evaluation.parts)"
READING_STEP = "reading the release"
REAL_STEP = "checking and preparing the real cases"
PAIRED_STEP = "generating images for the real label maps"
UTILITY_STEP = "segmentation utility"
PART_STEPS = {
    "realism": "realism: MAE and MS-SSIM",
    "radiomics": "radiomics of every structure",
    "utility": UTILITY_STEP,
}
"""The step of each of ``evaluation.parts``."""
EXTRA_SECTIONS = (radiomics_report, utility_report)
LOGGER = logging.getLogger(__name__)
MANIFEST_KEYS = (
    "family",
    "model_hash",
    "seed",
    "rounds",
    "sites",
    "sampler",
    "sampling_steps",
    "cases",
)
"""What ``evaluation.json`` repeats of the release's manifest."""


@dataclass(frozen=True)
class ProgressEvent:
    """How far the evaluation is: ``done`` of ``total`` units of ``step`` (``total`` 0 for a
    step without count); ``detail`` says which part of the step (e.g. the utility arm)."""

    step: str
    done: int = 0
    total: int = 0
    detail: str = ""


Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class EvaluationOutcome:
    """Where the evaluation was written, and its numbers."""

    out: Path
    results: dict[str, Any]


def anonymised(cases: list[EvalCase]) -> list[EvalCase]:
    """The real cases renamed by position: no real case id reaches the outputs."""
    return [
        EvalCase(f"{REAL_ID_PREFIX}{index + 1:03d}", c.image, c.label, c.spacing)
        for index, c in enumerate(cases)
    ]


def evaluate(
    release: Path,
    real: Path,
    out: Path,
    *,
    run: Path | None = None,
    overrides: dict[str, Scalar] | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    on_notice: Callable[[str], None] = LOGGER.warning,
) -> EvaluationOutcome:
    """Evaluate ``release`` against the real cases in ``real`` and write ``out``.

    While it runs, ``out/run-state.json`` says so (``common.run_state``): an evaluation killed
    outright is reported through ``on_notice`` by the next one in ``out``; an error or Ctrl-C
    removes it again.

    Raises:
        EvaluationInputError: the release or real set cannot be evaluated (the message says
            why); SiteDataError: real cases have problems; OutputExistsError: ``out`` exists
            (checked first); MemoryPlanError: the utility study's segmentation training would
            not fit in memory; RunInUseError: another live evaluation writes ``out``.
    """
    started = time.perf_counter()
    report = on_progress or (lambda _: None)
    manifest_config = release_settings(release)
    config = release_settings(release, dict(overrides or {}))
    check_same_modality(manifest_config, config.data.modality, real)
    refuse_existing_output(out, overwrite=overwrite, ignored=(RUN_STATE_FILE,))
    report(ProgressEvent(READING_STEP))
    synthetic = load_release(release, config)
    parts = config.evaluation.part_names()
    peak = 0
    if "utility" in parts and synthetic:
        peak = plan_utility(config, tuple(synthetic[0].image.shape)).needed
    notice = previous_run_notice(out)
    if notice is not None:
        on_notice(notice)
    steps = 1 + (run is not None) + len(parts)  # the real cases, the paired images, the parts
    record = RunRecord(out, to_run_config(config), peak, steps)
    with record.removed_on_error():
        results, real_cases = _results(
            release, real, config, synthetic, run, _recording(record, report)
        )
        results["seconds"] = time.perf_counter() - started
        page = render_report(results, real_cases, synthetic, extra_sections=EXTRA_SECTIONS)
        with atomic_directory(out, overwrite=True) as staging:
            (staging / EVALUATION_FILE).write_text(strict_dumps(results))  # inf/nan as text
            (staging / REPORT_FILE).write_text(page, encoding="utf-8")
    record.finish(steps)
    return EvaluationOutcome(out, results)


def _recording(record: RunRecord, report: Progress) -> Progress:
    """``report``, recording in ``record`` each step as it begins."""

    def both(event: ProgressEvent) -> None:
        if event.step != record.state.stage:
            done = record.state.step + 1 if record.state.stage else 0
            record.reached(done, event.step)
        report(event)

    return both


def _results(
    release: Path,
    real: Path,
    config: FedsynthConfig,
    synthetic: list[EvalCase],
    run: Path | None,
    report: Progress,
) -> tuple[dict[str, Any], list[EvalCase]]:
    """Every part's results (``evaluation.json``) and the real cases they were computed on."""

    def counter(step: str) -> Callable[[int, int], None]:
        return lambda done, total: report(ProgressEvent(step, done, total))

    parts = config.evaluation.part_names()
    report(ProgressEvent(REAL_STEP))
    real_cases = anonymised(load_real(real, config))
    paired = None
    if run is not None:
        generated = counter(PAIRED_STEP)
        paired = generate_for_labels(
            run, real_cases, config, on_case=_counting(generated, len(real_cases))
        )
    results = _header(release, config, len(real_cases), run is not None)
    if "realism" in parts:
        report(ProgressEvent(PART_STEPS["realism"]))
        results["realism"] = realism(config, real_cases, synthetic, paired)
    else:
        results["realism"] = not_computed(NOT_ASKED)
    if "radiomics" in parts:
        results["radiomics"] = radiomics(
            config, real_cases, synthetic, on_progress=counter(PART_STEPS["radiomics"])
        )
    else:
        results["radiomics"] = not_computed(NOT_ASKED)
    if "utility" in parts:
        results["utility"] = utility(
            config,
            real_cases,
            synthetic,
            on_progress=lambda done, total, what: report(
                ProgressEvent(UTILITY_STEP, done, total, what)
            ),
        )
    else:
        results["utility"] = not_computed(NOT_ASKED)
    return results, real_cases


def _counting(report: Callable[[int, int], None], total: int) -> Callable[[str], None]:
    """A per-case callback that reports how many cases are done of ``total``."""
    done = itertools.count(1)
    return lambda _: report(next(done), total)


def _header(release: Path, config: FedsynthConfig, real_cases: int, paired: bool) -> dict[str, Any]:
    manifest = read_manifest(release)
    return {
        "format": FORMAT,
        "modality": config.data.modality,
        "release": {key: manifest.get(key) for key in MANIFEST_KEYS},
        "real": {"cases": real_cases, "paired_images": paired},
        "settings": {k: v for k, v in to_run_config(config).items() if k.startswith("evaluation.")},
    }
