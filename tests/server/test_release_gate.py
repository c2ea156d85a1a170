"""The federated audit and the release gate, with real ClientApps in this process: what the
manifest records, a memorised candidate withheld and replaced, refusals, and what leaves a site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from federation_support import (
    LocalGrid,
    never_replies,
    phantom_sites,
    smoke_config,
    task_identity,  # noqa: F401  (fixture)
    without_pseudonyms,
)
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord

from common.audit.exchange import METRICS_RECORD, TEXT_RECORD
from common.config import Scalar, load_config
from common.data.cache import read_cache
from common.errors import ConfigError
from common.models.checkpoint import load_model
from common.models.interface import SyntheticPairs
from common.privacy.ledger import PrivacyLedger
from common.release import read_manifest
from common.runs import MODEL_FILE
from server.audit import AuditFailedError
from server.federation import RoundReport, federate
from server.release_gate import AllWithheldError, OverBudgetError, model_sampler

pytestmark = pytest.mark.usefixtures("task_identity")

Nodes = dict[int, dict[str, Scalar]]


@pytest.fixture
def sites(tmp_path: Path) -> Nodes:
    return phantom_sites(tmp_path, smoke_config())


def _cached_case(node: dict[str, Scalar]) -> SyntheticPairs:
    """A site's first prepared training case as one candidate pair."""
    _, cases = read_cache(Path(str(node["cache-dir"])))
    image = torch.from_numpy(cases[0].image)[None, None]
    return SyntheticPairs(image, torch.from_numpy(cases[0].label.astype(np.int64))[None])


class CopyingSampler:
    """A test double of the sampler: the first ``copies`` candidates are a site's cached
    training case, the rest come from the trained model."""

    def __init__(self, run: Path, node: dict[str, Scalar], copies: int) -> None:
        self.run, self.node, self.copies, self.calls = run, node, copies, 0
        self.model = None

    def __call__(self, n: int) -> SyntheticPairs:
        if self.model is None:
            model, config = load_model(self.run / MODEL_FILE)
            self.model = model_sampler(model, config)  # type: ignore[assignment]
        self.calls += 1
        copy = _cached_case(self.node)
        parts = [copy] * min(n, self.copies)
        self.copies -= len(parts)
        if n > len(parts):
            parts.append(self.model(n - len(parts)))  # type: ignore[misc]
        return SyntheticPairs(
            torch.cat([p.image for p in parts]), torch.cat([p.label for p in parts])
        )


def test_the_manifest_records_every_sites_audit(tmp_path: Path, sites: Nodes) -> None:
    grid = LocalGrid(sites)
    outcome = federate(grid.as_grid(), smoke_config(), tmp_path / "run")
    manifest = read_manifest(outcome.release)
    audit = manifest["audit"]
    assert (audit["requested"], audit["released"], audit["candidates"]) == (2, 2, 2)
    assert (audit["withheld"], audit["audits"], audit["max_candidates"]) == (0, 1, 6)
    assert audit["spaces"] == ["voxels", "labels", "features"]
    assert sorted(audit["sites"]) == sorted(site["name"] for site in manifest["sites"])
    for site in manifest["sites"]:
        record = audit["sites"][site["name"]]
        assert record["epsilon"] == pytest.approx(site["epsilon"])  # the ledger's spent
        assert record["calibration"]["source"] == "train-leave-one-out"
        assert record["calibration"]["cases"] == 2
        assert all(value >= 0 for value in record["thresholds"].values())
        assert sorted(record["figures"][0]) == ["features", "labels", "voxels"]
        assert 0.0 <= record["figures"][0]["voxels"]["identifiability"] <= 1.0
    assert [case["candidate"] for case in audit["cases"]] == [0, 1]
    assert len(list((outcome.release / "imagesTr").iterdir())) == 2


def test_a_copy_of_a_training_case_is_withheld_and_replaced(tmp_path: Path, sites: Nodes) -> None:
    run = tmp_path / "run"
    sampler = CopyingSampler(run, sites[101], copies=1)
    outcome = federate(LocalGrid(sites).as_grid(), smoke_config(), run, sampler=sampler)
    audit = read_manifest(outcome.release)["audit"]
    (withheld,) = audit["withheld_candidates"]
    assert withheld["candidate"] == 0
    site = sorted(audit["sites"])
    copied_at = [name for name in site if withheld["nearest"][name]["voxels"] < 1e-6]
    assert withheld["flagged_by"] == copied_at
    assert len(copied_at) == 1
    assert withheld["nearest"][copied_at[0]]["labels"] == pytest.approx(0.0, abs=1e-9)
    assert (audit["candidates"], audit["released"], audit["withheld"]) == (3, 2, 1)
    assert [case["candidate"] for case in audit["cases"]] == [1, 2]  # topped up
    assert sampler.calls == 2
    assert audit["sites"][copied_at[0]]["flagged"] == 1
    assert len(list((outcome.release / "imagesTr").iterdir())) == 2


def test_only_copies_within_the_attempt_limit_are_refused(tmp_path: Path, sites: Nodes) -> None:
    run = tmp_path / "run"
    config = smoke_config(**{"audit.max-candidate-factor": 1.5})  # 3 candidates at most
    with pytest.raises(AllWithheldError, match="all 3 candidates were flagged"):
        federate(
            LocalGrid(sites).as_grid(), config, run, sampler=CopyingSampler(run, sites[101], 3)
        )
    assert not (run / "release").exists()


def test_a_release_short_of_passing_candidates_holds_fewer_cases_and_says_so(
    tmp_path: Path, sites: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    config = smoke_config(**{"audit.max-candidate-factor": 1.5})  # ceil(1.5 x 2) = 3 at most
    sampler = CopyingSampler(run, sites[101], copies=2)
    outcome = federate(LocalGrid(sites).as_grid(), config, run, sampler=sampler)
    manifest = read_manifest(outcome.release)
    audit = manifest["audit"]
    assert (audit["requested"], audit["released"], audit["candidates"]) == (2, 1, 3)
    assert (audit["withheld"], audit["max_candidates"], audit["audits"]) == (2, 3, 2)
    assert [case["candidate"] for case in audit["withheld_candidates"]] == [0, 1]
    assert [case["candidate"] for case in audit["cases"]] == [2]  # one more: the limit
    assert sampler.calls == 2
    assert manifest["cases"] == 1
    assert len(list((outcome.release / "imagesTr").iterdir())) == 1
    assert "1 of 2 cases passed every site's audit after 3 candidates" in caplog.text


def test_a_site_with_enough_held_out_cases_calibrates_on_them_over_the_message(
    tmp_path: Path, sites: Nodes
) -> None:
    holdout = tmp_path / "holdout"
    nodes = {**sites, 101: {**sites[101], "holdout-path": str(holdout)}}
    phantom_sites(tmp_path / "other", smoke_config(seed=7))
    (tmp_path / "other" / "sites" / "site-01").rename(holdout)  # 2 patients not trained on
    grid = LocalGrid(nodes)
    config = smoke_config(**{"audit.min-holdout": 2})
    federate(grid.as_grid(), config, tmp_path / "run")
    replies = {
        int(r.content[METRICS_RECORD]["count/holdout"]): r  # type: ignore[call-overload]
        for r in grid.audits
    }
    assert sorted(replies) == [0, 2]
    held, alone = replies[2], replies[0]
    assert held.content[TEXT_RECORD]["calibration-source"] == "holdout"  # type: ignore[index]
    assert held.content[METRICS_RECORD]["calibration-cases"] == 2  # type: ignore[index]
    assert alone.content[TEXT_RECORD]["calibration-source"] == "train-leave-one-out"  # type: ignore[index]
    sources = {
        site: record["calibration"]["source"]
        for site, record in read_manifest(tmp_path / "run" / "release")["audit"]["sites"].items()
    }
    assert sorted(sources.values()) == ["holdout", "train-leave-one-out"]


def _error_reply(reply: Message, _: int) -> Message:
    return Message(
        Error(code=4002, reason="site error (ValueError): see the site's log"), reply_to=reply
    )


def _bad_reply(reply: Message, _: int) -> Message:
    metrics = cast(MetricRecord, reply.content[METRICS_RECORD])
    metrics["nearest/voxels"] = [float("nan")] * 2
    return reply


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (never_replies, "(trained the model) did not reply"),
        (_error_reply, "replied with an error: site error (ValueError)"),
        (_bad_reply, "node 102 sent an unusable audit: audit reply: voxels holds NaN"),
    ],
    ids=["no-reply", "error-reply", "malformed-reply"],
)
def test_a_site_that_fails_the_audit_stops_the_release(
    tmp_path: Path, sites: Nodes, tamper: object, reason: str
) -> None:
    grid = LocalGrid(sites, audit_tamper={102: tamper})  # type: ignore[dict-item]
    with pytest.raises(AuditFailedError, match="nothing is released") as caught:
        federate(grid.as_grid(), smoke_config(), tmp_path / "run")
    assert reason in str(caught.value)
    assert "--resume" in str(caught.value)
    assert not (tmp_path / "run" / "release").exists()


def test_a_site_whose_ledger_is_over_budget_stops_the_release(tmp_path: Path, sites: Nodes) -> None:
    config = smoke_config()

    def spend_elsewhere(report: RoundReport) -> None:  # another run at site 101, meanwhile
        if report.round == config.federation.num_rounds:
            index, _ = read_cache(Path(str(sites[101]["cache-dir"])))
            ledger = PrivacyLedger.for_cache(
                Path(str(sites[101]["ledger-dir"])), index, config.privacy
            )
            ledger.record(0.3, 1.0, 50)

    with pytest.raises(OverBudgetError, match=r"over privacy\.budget-epsilon = 10"):
        federate(LocalGrid(sites).as_grid(), config, tmp_path / "run", on_round=spend_elsewhere)
    assert not (tmp_path / "run" / "release").exists()


def test_an_audit_reply_holds_only_distances_flags_and_figures(
    tmp_path: Path, sites: Nodes
) -> None:
    holdout = tmp_path / "holdout"
    nodes = {**sites, 101: {**sites[101], "holdout-path": str(holdout)}}
    phantom_sites(tmp_path / "other", smoke_config(seed=7))
    (tmp_path / "other" / "sites" / "site-01").rename(holdout)
    grid = LocalGrid(nodes)
    federate(grid.as_grid(), smoke_config(), tmp_path / "run")
    secrets = [str(value) for node in nodes.values() for value in node.values()]
    secrets += [p.name for p in (tmp_path / "sites").rglob("*")]  # file names, case ids
    secrets += [p.name for p in holdout.rglob("*")]
    secrets += [str(tmp_path), "site-0"]
    assert len(grid.audits) == 2
    for reply in grid.audits:
        assert not reply.has_error()
        assert set(reply.content.keys()) == {METRICS_RECORD, TEXT_RECORD}
        assert not any(isinstance(r, ArrayRecord) for r in reply.content.values())
        metrics = reply.content[METRICS_RECORD]
        text = reply.content[TEXT_RECORD]
        assert isinstance(metrics, MetricRecord)
        assert isinstance(text, ConfigRecord)
        for key, value in metrics.items():  # scalars, or one number per candidate
            if isinstance(value, list):
                assert len(value) == 2, key
                assert all(type(v) in (int, float) for v in value)
            else:
                assert type(value) in (int, float), key
        strings = [*metrics.keys(), *text.keys()]
        for value in text.values():
            strings += value if isinstance(value, list) else [value]  # type: ignore[list-item]
        assert all(isinstance(s, str) for s in strings)
        for name in (without_pseudonyms(s) for s in strings if isinstance(s, str)):
            assert not [secret for secret in secrets if secret in name], name
        neighbours = [n for k, v in text.items() if k.startswith("neighbour/") for n in v]  # type: ignore[union-attr]
        assert all(n in ("train-001", "train-002") for n in neighbours)
    sources = sorted(str(r.content[TEXT_RECORD]["calibration-source"]) for r in grid.audits)  # type: ignore[index]
    assert sources == ["train-leave-one-out", "train-leave-one-out"]  # 2 held out < 10
    counts = sorted(int(r.content[METRICS_RECORD]["count/holdout"]) for r in grid.audits)  # type: ignore[index, call-overload]
    assert counts == [0, 2]
    manifest = without_pseudonyms(json.dumps(read_manifest(tmp_path / "run" / "release")))
    assert not [s for s in secrets if s in manifest]


def test_the_attempt_limit_is_a_checked_setting() -> None:
    assert load_config({}).audit.max_candidate_factor == 3.0
    with pytest.raises(ConfigError, match=r"audit\.max-candidate-factor = 0\.5 is below"):
        load_config({"audit.max-candidate-factor": 0.5})
    with pytest.raises(ConfigError, match="above its maximum 100"):
        load_config({"audit.max-candidate-factor": 101.0})
