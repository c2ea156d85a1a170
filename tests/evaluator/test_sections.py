"""Evaluation parts that cannot run say why; the real set's split is seeded and never empty."""

from __future__ import annotations

import numpy as np
import pytest
from model_support import tiny_config

from evaluator.cases import EvalCase
from evaluator.radiomics_section import radiomics
from evaluator.utility_section import split_real, utility


def _cases(n: int, prefix: str = "real") -> list[EvalCase]:
    cases = []
    for index in range(n):
        image = np.full((16, 16, 16), -1000.0, dtype=np.float32)
        image[2:14, 2:14, 2:14] = 40.0 + index
        label = np.zeros((16, 16, 16), dtype=np.uint8)
        label[6:9, 6:9, 6:9] = 1
        label[10:12, 4:12, 4:12] = 2
        cases.append(EvalCase(f"{prefix}-{index}", image, label, (12.5, 12.5, 12.5)))
    return cases


@pytest.mark.parametrize(
    ("n", "fraction", "tests"), [(2, 0.5, 1), (10, 0.5, 5), (10, 0.1, 1), (3, 0.9, 2)]
)
def test_the_real_split_is_seeded_and_keeps_a_case_on_each_side(
    n: int, fraction: float, tests: int
) -> None:
    train, test = split_real(_cases(n), fraction, seed=4)
    assert len(test) == tests
    assert len(train) == n - tests
    assert {c.case_id for c in train} | {c.case_id for c in test} == {f"real-{i}" for i in range(n)}
    again = split_real(_cases(n), fraction, seed=4)
    assert [c.case_id for c in again[1]] == [c.case_id for c in test]


def test_utility_with_one_real_case_is_not_computed_and_says_why() -> None:
    result = utility(tiny_config(), _cases(1), _cases(3, "synth"))
    assert result == {
        "computed": False,
        "reason": "1 real case(s): the utility study needs two or more",
    }


def test_a_structure_too_small_for_statistics_is_reported_not_dropped() -> None:
    config = tiny_config(**{"evaluation.radiomics-workers": 1})
    result = radiomics(config, _cases(1), _cases(3, "synth"))  # one real case: no spread
    for entry in result["structures"].values():
        assert entry["computed"] is False
        assert entry["reason"]
        assert entry["failures"] == {"real": [], "synthetic": []}
