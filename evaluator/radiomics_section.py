"""The radiomics part of an evaluation: features inside each structure, real against synthetic.

For every structure of the schema (its regions: CT tumour and bone; MRI tumour, tumour core and
enhancing tumour) the
features of every real and synthetic case are extracted in parallel (``evaluation.radiomics-
workers`` processes, pyradiomics ``binWidth`` = ``evaluation.radiomics-bin-width``), then
compared: per-feature Wasserstein distance, the correlation of feature means (the study's
figure: 0.8784 for MRI tumours, 0.5461 for CT tumours), a Frechet radiomics distance and a
cross-validated real-vs-synthetic classifier AUC. A case whose structure is empty or whose
extraction fails is listed with the reason, never silently dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.config import FedsynthConfig
from common.data.schema import schema_for
from common.errors import FedsynthError
from evaluator.cases import EvalCase
from evaluator.radiomics import ArrayVolume, RadiomicsCase, extract_many, split_results
from evaluator.radiomics_stats import compare_tables
from evaluator.realism_section import not_computed

STUDY_CORRELATION = {"mri": 0.8784, "ct": 0.5461}
"""The study's correlation of radiomics feature means, real vs synthetic tumours."""
MASK_LABEL = 1
"""The label of the binary structure masks handed to pyradiomics."""


def _cases(cases: Sequence[EvalCase], values: tuple[int, ...]) -> list[RadiomicsCase]:
    spacing = cases[0].spacing if cases else (1.0, 1.0, 1.0)
    return [
        RadiomicsCase(
            case.case_id,
            ArrayVolume(case.image, spacing),
            ArrayVolume(np.isin(case.label, values).astype(np.uint8), spacing),
        )
        for case in cases
    ]


def radiomics(
    config: FedsynthConfig,
    real: Sequence[EvalCase],
    synthetic: Sequence[EvalCase],
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every structure's radiomics comparison, JSON-ready (see the module docstring).

    ``on_progress(done, total)`` is called as each case of each structure is extracted."""
    settings = {"binWidth": config.evaluation.radiomics_bin_width}
    workers = config.evaluation.radiomics_workers
    result: dict[str, Any] = {
        "settings": settings,
        "study_means_correlation": STUDY_CORRELATION[config.data.modality],
        "structures": {},
    }
    regions = schema_for(config.data.modality).regions  # the schema's structures
    total, done = len(regions) * (len(real) + len(synthetic)), itertools.count(1)
    report = on_progress or (lambda _done, _total: None)

    for name, members in regions.items():
        values = tuple(sorted(members))
        tables = {}
        failures = {}
        for which, cases in (("real", real), ("synthetic", synthetic)):
            outcomes = extract_many(
                _cases(cases, values),
                MASK_LABEL,
                settings,
                workers,
                on_case=lambda _: report(next(done), total),
            )
            features, failed = split_results(outcomes)
            tables[which] = [f.features for f in features]
            failures[which] = [
                {"case": f.case_id, "kind": f.kind, "reason": f.reason} for f in failed
            ]
        entry: dict[str, Any] = {"labels": list(values), "failures": failures}
        try:
            comparison = compare_tables(
                tables["real"],
                tables["synthetic"],
                seed=config.seed,
                folds=config.evaluation.classifier_folds,
            )
        except FedsynthError as err:
            entry.update(not_computed(str(err)))
        else:
            entry.update({"computed": True, **comparison.to_json()})
            entry["real_means"], entry["synthetic_means"] = _means(tables)
        result["structures"][name] = entry
    return result


def _means(tables: dict[str, list[dict[str, float]]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each feature's mean in each table (for the report's scatter plot)."""
    names = sorted(set(tables["real"][0]) & set(tables["synthetic"][0]))
    means = [
        {n: float(np.mean([row[n] for row in tables[which]])) for n in names}
        for which in ("real", "synthetic")
    ]
    return means[0], means[1]
