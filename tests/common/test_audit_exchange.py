"""The federated audit's messages (common/audit/exchange.py): candidates and settings there and
back, a site's reply there and back, and every way either can be refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.audit.exchange import (
    CANDIDATES_KEY,
    METRICS_RECORD,
    TEXT_RECORD,
    audit_reply,
    candidate_set,
    candidates_content,
    read_audit_reply,
    read_candidates,
    site_name,
)
from common.audit.run import Audit, run_audit
from common.audit.search import SPACES, CaseSet
from common.config import load_config
from common.exchange import CONFIG_KEY, ExchangeError

CONFIG = load_config({"data.target-shape": "8,8,8", "audit.min-holdout": 2})
VALUES = (1, 2)


def _cases(count: int, seed: int) -> CaseSet:
    """``count`` random 8^3 cases in [-1, 1] with labels 0-2."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (count, 8, 8, 8)).astype(np.float32)
    return CaseSet.of(images, rng.integers(0, 3, (count, 8, 8, 8)).astype(np.uint8))


@pytest.fixture(scope="module")
def audit() -> Audit:
    """3 candidates, the first a copy of training case 2, audited against 4 training cases
    calibrated on 2 held-out ones."""
    train, fresh = _cases(4, 1), _cases(2, 2)
    candidates = CaseSet(
        torch.cat([train.images[2:3], fresh.images]), torch.cat([train.labels[2:3], fresh.labels])
    )
    ids = ["candidate-0000", "candidate-0001", "candidate-0002"]
    return run_audit(candidates, ids, train, _cases(2, 3), VALUES, CONFIG.audit)


def test_candidates_and_settings_cross_unchanged() -> None:
    candidates = _cases(3, 4)
    found, config, run_id = read_candidates(candidates_content(candidates, CONFIG, "run-7"))
    assert torch.equal(found.images, candidates.images)
    assert torch.equal(found.labels, candidates.labels)
    assert (config, run_id) == (CONFIG, "run-7")


def test_sampled_pairs_become_candidates_clipped_to_the_release_range() -> None:
    images = torch.tensor([-3.0, -0.5, 0.5, 3.0]).reshape(1, 1, 1, 2, 2)
    labels = torch.tensor([0, 1, 2, 1]).reshape(1, 1, 2, 2)
    found = candidate_set(images, labels)
    assert found.images.flatten().tolist() == [-1.0, -0.5, 0.5, 1.0]
    assert found.labels.dtype == torch.uint8
    assert torch.equal(candidate_set(images[:, 0], labels).images, found.images)


def _content(arrays: dict[str, np.ndarray] | None, settings: bool = True) -> RecordDict:
    record = RecordDict()
    if arrays is not None:
        record[CANDIDATES_KEY] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    if settings:
        record[CONFIG_KEY] = candidates_content(_cases(1, 0), CONFIG, "r")[CONFIG_KEY]
    return record


GOOD = {"images": np.zeros((2, 8, 8, 8), np.float32), "labels": np.zeros((2, 8, 8, 8), np.uint8)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_content(None), "an audit message needs 'candidates' arrays and 'config' settings"),
        (_content(GOOD, settings=False), "needs 'candidates' arrays and 'config' settings"),
        (_content({"images": GOOD["images"]}), r"need 'images' and 'labels', got \['images'\]"),
        (
            _content({**GOOD, "labels": np.zeros((2, 8, 8, 4), np.uint8)}),
            r"images \(2, 8, 8, 8\) and labels \(2, 8, 8, 4\); expected \(N, 8, 8, 8\)",
        ),
        (
            _content({k: v[:0] for k, v in GOOD.items()}),
            r"images \(0, 8, 8, 8\) .* N > 0 \(the run's data.target-shape\)",
        ),
    ],
    ids=["no-candidates", "no-settings", "no-labels", "other-shapes", "no-cases"],
)
def test_a_malformed_audit_message_is_an_exchange_error(content: RecordDict, message: str) -> None:
    with pytest.raises(ExchangeError, match=message):
        read_candidates(content)


def test_a_reply_reads_back_as_the_site_computed_it(audit: Audit) -> None:
    site = read_audit_reply(audit_reply(audit, 0xABC, 2.5, 1e-5), candidates=3)
    assert site.site == "site-000000000abc" == site_name(0xABC)
    assert site.flagged == [True, False, False]  # the copy only
    assert site.nearest["voxels"][0] == pytest.approx(0.0, abs=1e-6)
    assert site.neighbours["voxels"][0] == "train-003"
    for space in SPACES:
        assert site.nearest[space] == [case["nearest"][space] for case in audit.result["cases"]]
        assert site.thresholds[space] == audit.calibration.thresholds[space]
        assert (
            site.figures[space]["identifiability"]
            == (audit.result["figures"][space]["identifiability"])
        )
    assert site.counts == {"train": 4, "holdout": 2, "flagged": 1}
    assert site.calibration["source"] == "holdout"
    assert (site.epsilon, site.delta) == (2.5, 1e-5)
    without_dp = read_audit_reply(audit_reply(audit, 1, None, None), candidates=3)
    assert (without_dp.epsilon, without_dp.delta) == (None, None)


Tamper = Callable[[MetricRecord, ConfigRecord, RecordDict], None]


def _extra_record(_: MetricRecord, __: ConfigRecord, content: RecordDict) -> None:
    content["arrays"] = ArrayRecord({"x": Array(np.zeros(2, np.float32))})


def _drop(key: str) -> Tamper:
    return lambda metrics, _, __: metrics.pop(key)


def _set(key: str, value: object) -> Tamper:
    def tamper(metrics: MetricRecord, _: ConfigRecord, __: RecordDict) -> None:
        metrics[key] = value  # type: ignore[assignment]

    return tamper


def _short_neighbours(_: MetricRecord, text: ConfigRecord, __: RecordDict) -> None:
    text["neighbour/labels"] = ["train-001"]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_extra_record, "holds exactly a 'audit' MetricRecord and a 'audit-text' ConfigRecord"),
        (_drop("nearest/features"), "'nearest/features' is missing or not a list"),
        (_set("flagged", 1), "'flagged' is missing or not a list"),
        (_drop("threshold/labels"), "'threshold/labels' is missing or not a number"),
        (_set("count/train", [4, 4]), "'count/train' is missing or not a number"),
        (_set("nearest/voxels", [0.0, 1.0]), r"lists of lengths \[2, 3\] for 3 candidates"),
        (_short_neighbours, r"lists of lengths \[1, 3\] for 3 candidates"),
        (_set("nearest/labels", [0.0, float("inf"), 1.0]), "labels holds NaN or infinite"),
        (_set("threshold/voxels", float("nan")), "the thresholds holds NaN or infinite"),
    ],
    ids=[
        "extra-record",
        "no-distances",
        "flags-not-a-list",
        "no-threshold",
        "count-a-list",
        "short-distances",
        "short-neighbours",
        "infinite-distance",
        "nan-threshold",
    ],
)
def test_a_malformed_reply_is_an_exchange_error(audit: Audit, tamper: Tamper, message: str) -> None:
    content = audit_reply(audit, 1, None, None)
    metrics, text = content[METRICS_RECORD], content[TEXT_RECORD]
    assert isinstance(metrics, MetricRecord)
    assert isinstance(text, ConfigRecord)
    tamper(metrics, text, content)
    with pytest.raises(ExchangeError, match=message):
        read_audit_reply(content, candidates=3)
