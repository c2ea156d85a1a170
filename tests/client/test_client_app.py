"""The ClientApp's site summary: only integer counts leave the site, never paths or voxels."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context, Message, Metadata, MetricRecord, RecordDict

from client.app import site_summary
from client.site_summary import summarise_site
from common.config import SiteConfig, load_config


def _query() -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="query.site_summary",
    )
    return Message(RecordDict(), metadata=metadata)


def test_summary_counts_valid_and_bad_cases(ct_site: Path) -> None:
    (ct_site / "orphan_image.nii.gz").write_bytes((ct_site / "a_image.nii.gz").read_bytes())
    counts = summarise_site(SiteConfig(ct_site, "h", None), load_config({}).data)
    assert counts == {"cases": 2, "valid-cases": 2, "bad-cases": 1}


def test_site_without_data_path_reports_zero() -> None:
    counts = summarise_site(SiteConfig(None, "h", None), load_config({}).data)
    assert counts == {"cases": 0, "valid-cases": 0, "bad-cases": 0}


def test_reply_holds_only_integer_counts(ct_site: Path) -> None:
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-path": str(ct_site), "site-name": "hospital-a"},
        state=RecordDict(),
        run_config={"data.modality": "ct"},
    )
    reply = site_summary(_query(), context)
    assert list(reply.content.keys()) == ["site-summary"]
    record = reply.content["site-summary"]
    assert isinstance(record, MetricRecord)
    assert dict(record) == {"cases": 2, "valid-cases": 2, "bad-cases": 0}
    assert all(type(value) is int for value in record.values())
    flat = repr(reply.content)
    assert str(ct_site) not in flat
    assert "hospital-a" not in flat
