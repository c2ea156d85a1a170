"""``fedsynth evaluate``: a release against a real evaluation set -> evaluation.json, report.html.

Real cases appear in the outputs only by position (``real-001``, ...), never by their ids, so
the report can be shared without naming a patient. The output folder appears whole or not at
all.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_directory
from common.config import FedsynthConfig, Scalar, to_run_config
from common.release import read_manifest
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
UTILITY_STEP = "segmentation utility"
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
) -> EvaluationOutcome:
    """Evaluate ``release`` against the real cases in ``real`` and write ``out``.

    Raises:
        EvaluationInputError: the release or real set cannot be evaluated (the message says
            why); SiteDataError: real cases have problems; OutputExistsError: ``out`` exists;
            MemoryPlanError: the utility study's segmentation training would not fit in memory.
    """
    started = time.perf_counter()
    report = on_progress or (lambda _: None)

    def say(step: str) -> None:
        report(ProgressEvent(step))

    def counter(step: str) -> Callable[[int, int], None]:
        return lambda done, total: report(ProgressEvent(step, done, total))

    manifest_config = release_settings(release)
    config = release_settings(release, dict(overrides or {}))
    check_same_modality(manifest_config, config.data.modality, real)
    say("reading the release")
    synthetic = load_release(release, config)
    parts = config.evaluation.part_names()
    if "utility" in parts and synthetic:
        plan_utility(config, tuple(synthetic[0].image.shape))
    say("checking and preparing the real cases")
    real_cases = anonymised(load_real(real, config))
    paired = None
    if run is not None:
        generated = counter("generating images for the real label maps")
        paired = generate_for_labels(
            run, real_cases, config, on_case=_counting(generated, len(real_cases))
        )
    results = _header(release, config, len(real_cases), run is not None)
    if "realism" in parts:
        say("realism: MAE and MS-SSIM")
        results["realism"] = realism(config, real_cases, synthetic, paired)
    else:
        results["realism"] = not_computed(NOT_ASKED)
    if "radiomics" in parts:
        results["radiomics"] = radiomics(
            config, real_cases, synthetic, on_progress=counter("radiomics of every structure")
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
    results["seconds"] = time.perf_counter() - started
    page = render_report(
        results, real_cases, synthetic, extra_sections=(radiomics_report, utility_report)
    )
    with atomic_directory(out, overwrite=overwrite) as staging:
        (staging / EVALUATION_FILE).write_text(strict_dumps(results))  # inf/nan as text
        (staging / REPORT_FILE).write_text(page, encoding="utf-8")
    return EvaluationOutcome(out, results)


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
