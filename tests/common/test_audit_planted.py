"""Must hold: planted copies are flagged at the default threshold, fresh phantoms rarely."""

from __future__ import annotations

import numpy as np
import pytest
from audit_support import GRID, phantom_config, phantom_set, planted_set
from data_support import HEAD_CT_SETTINGS, shared_case

from common.audit.calibration import HOLDOUT
from common.audit.inputs import load_real_cases
from common.audit.run import run_audit
from common.audit.search import CaseSet
from common.config import load_config

CT_VALUES = (1, 2)


@pytest.fixture(scope="module")
def cohorts() -> dict[str, CaseSet]:
    return {
        "train": phantom_set(1, 16),
        "holdout": phantom_set(2, 12),
        "fresh": CaseSet.of(
            np.concatenate([phantom_set(s, 10).images.numpy() for s in (3, 4)]),
            np.concatenate([phantom_set(s, 10).labels.numpy() for s in (3, 4)]),
        ),
    }


def test_every_planted_copy_of_a_phantom_is_flagged(cohorts: dict[str, CaseSet]) -> None:
    settings = phantom_config(1).audit  # the defaults
    planted, ids = planted_set(cohorts["train"], cohorts["fresh"], [0, 5, 9, 13])
    audit = run_audit(planted, ids, cohorts["train"], cohorts["holdout"], CT_VALUES, settings)
    assert audit.calibration.source == HOLDOUT
    missed = [case["case"] for case in audit.result["cases"] if not case["flagged"]]
    assert missed == []
    for case in audit.result["cases"]:
        source = int(case["case"].split("-")[1])
        assert case["neighbours"]["voxels"][0]["id"] == f"train-{source + 1:03d}"
        assert "< threshold" in case["reason"]
    # the four sources are each closer to a planted copy than to any other training case
    assert audit.result["figures"]["voxels"]["identifiability"] >= 4 / 16


def test_fresh_phantoms_are_flagged_at_most_five_percent(cohorts: dict[str, CaseSet]) -> None:
    settings = phantom_config(1).audit
    fresh = cohorts["fresh"]
    ids = [f"fresh-{i}" for i in range(len(fresh))]
    audit = run_audit(fresh, ids, cohorts["train"], cohorts["holdout"], CT_VALUES, settings)
    assert audit.result["counts"]["flagged"] <= 0.05 * len(fresh)
    figures = audit.result["figures"]["voxels"]
    assert 0.2 <= figures["closer_to_training"] <= 0.8  # new patients: no side preferred


def _real_ct(settings: dict[str, object]) -> CaseSet:
    lung = shared_case("real", "pyradiomics-lung1")
    head = shared_case("real", "invesalius-head-ct")
    sets = [
        load_real_cases(lung, load_config({**GRID, **settings}))[0],
        load_real_cases(head, load_config({**GRID, **settings, **HEAD_CT_SETTINGS}))[0],
    ]
    return CaseSet.of(
        np.concatenate([s.images.numpy() for s in sets]),
        np.concatenate([s.labels.numpy() for s in sets]),
    )


def test_planted_copies_of_the_shared_real_cases_are_flagged(cohorts: dict[str, CaseSet]) -> None:
    real = _real_ct({})
    phantoms = cohorts["train"]
    train = CaseSet.of(
        np.concatenate([real.images.numpy(), phantoms.images.numpy()[:10]]),
        np.concatenate([real.labels.numpy(), phantoms.labels.numpy()[:10]]),
    )
    planted, ids = planted_set(train, cohorts["fresh"], [0, 1])  # the chest and the head
    audit = run_audit(planted, ids, train, cohorts["holdout"], CT_VALUES, phantom_config(1).audit)
    missed = [case["case"] for case in audit.result["cases"] if not case["flagged"]]
    assert missed == []
    fresh = cohorts["fresh"]
    clean = run_audit(
        fresh,
        [str(i) for i in range(len(fresh))],
        train,
        cohorts["holdout"],
        CT_VALUES,
        phantom_config(1).audit,
    )
    assert clean.result["counts"]["flagged"] <= 0.05 * len(fresh)
