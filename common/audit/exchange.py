"""What crosses in the federated audit (a Flower ``query.audit`` message), and how it is packed.

Server -> site: ``candidates`` (an ArrayRecord: ``images`` float32 (N, z, y, x) in [-1, 1] and
``labels`` uint8 (N, z, y, x), synthetic cases sampled from the global model) and ``config``
(the run settings, the last round and the federation's run id, as a train message has them).

Site -> server: a MetricRecord ``audit`` and a ConfigRecord ``audit-text``, nothing else:

- per candidate, lists of N: ``nearest/<space>`` (the distance to the nearest training case),
  ``flagged`` (1 or 0) and, in ``audit-text``, ``neighbour/<space>`` (that case's site-local
  pseudonym, ``train-003``);
- per space: ``threshold/<space>``;
- the summary figures over the candidates: ``figure/<space>/dcr/<quantile>``,
  ``figure/<space>/nearest_second_ratio/<quantile>``, ``figure/<space>/identifiability`` and,
  with held-out cases, ``figure/<space>/closer_to_training``;
- counts (``count/train``, ``count/holdout``, ``count/flagged``, ``calibration-cases``), the
  site's run pseudonym (``site-key``) and, with DP on, its ledger's ``epsilon`` and ``delta``
  (the most spent case's);
- in ``audit-text``: ``calibration-source`` and ``calibration-note`` (settings and counts).

No voxel, label map, path or case id of the site is in a reply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.audit.run import Audit
from common.audit.search import SPACES, CaseSet
from common.config import FedsynthConfig
from common.exchange import CONFIG_KEY, SITE_KEY, ExchangeError, read_settings, settings_record
from common.nesting import nested

AUDIT_ACTION = "audit"
"""The ClientApp's query action: messages of type ``query.audit``."""
CANDIDATES_KEY = "candidates"
METRICS_RECORD = "audit"
TEXT_RECORD = "audit-text"
SEPARATOR = "/"


def site_name(key: int) -> str:
    """How the server's records name a site: its run pseudonym in hex."""
    return f"site-{key:012x}"


def candidates_content(candidates: CaseSet, config: FedsynthConfig, run_id: str) -> RecordDict:
    """The content of an audit message: the candidates and the run settings."""
    arrays = ArrayRecord(
        {
            "images": Array(candidates.images.numpy()),
            "labels": Array(candidates.labels.numpy()),
        }
    )
    settings = settings_record(config, config.federation.num_rounds, run_id)
    return RecordDict({CANDIDATES_KEY: arrays, CONFIG_KEY: settings})


def read_candidates(content: RecordDict) -> tuple[CaseSet, FedsynthConfig, str]:
    """The candidates, settings and run id of an audit message.

    Raises:
        ExchangeError: a record is missing or the arrays are not (N, z, y, x) images and label
            maps on the run's grid.
        ConfigError: a setting is unknown or invalid.
    """
    arrays, settings = content.get(CANDIDATES_KEY), content.get(CONFIG_KEY)
    if not isinstance(arrays, ArrayRecord) or not isinstance(settings, ConfigRecord):
        raise ExchangeError(
            f"an audit message needs {CANDIDATES_KEY!r} arrays and {CONFIG_KEY!r} settings"
        )
    config, _, run_id = read_settings(settings)
    if set(arrays) != {"images", "labels"}:
        raise ExchangeError(f"audit candidates need 'images' and 'labels', got {sorted(arrays)}")
    images, labels = arrays["images"].numpy(), arrays["labels"].numpy()
    x, y, z = config.data.target_shape
    if images.shape != labels.shape or images.shape[1:] != (z, y, x) or len(images) == 0:
        raise ExchangeError(
            f"audit candidates are images {images.shape} and labels {labels.shape}; expected "
            f"(N, {z}, {y}, {x}) each, N > 0 (the run's data.target-shape)"
        )
    return CaseSet.of(images, labels), config, run_id


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}{SEPARATOR}{key}", item, out)
    elif value is not None:
        out[prefix] = float(value)


def audit_reply(
    audit: Audit, site_key: int, epsilon: float | None, delta: float | None
) -> RecordDict:
    """The content of a site's audit reply (see the module docstring)."""
    cases = audit.result["cases"]
    counts = audit.result["counts"]
    metrics: dict[str, Any] = {
        SITE_KEY: site_key,
        "flagged": [int(case["flagged"]) for case in cases],
        "count/train": int(counts["train"]),
        "count/holdout": int(counts["holdout"]),
        "count/flagged": int(counts["flagged"]),
        "calibration-cases": int(audit.calibration.cases),
    }
    text: dict[str, Any] = {
        "calibration-source": audit.calibration.source,
        "calibration-note": audit.calibration.note,
    }
    for space in SPACES:
        metrics[f"nearest{SEPARATOR}{space}"] = [float(case["nearest"][space]) for case in cases]
        metrics[f"threshold{SEPARATOR}{space}"] = float(audit.calibration.thresholds[space])
        text[f"neighbour{SEPARATOR}{space}"] = [
            str((case["neighbours"][space] or [{"id": "-"}])[0]["id"]) for case in cases
        ]
    figures: dict[str, float] = {}
    _flatten("figure", audit.result["figures"], figures)
    metrics.update(figures)
    if epsilon is not None and delta is not None:
        metrics.update({"epsilon": float(epsilon), "delta": float(delta)})
    return RecordDict({METRICS_RECORD: MetricRecord(metrics), TEXT_RECORD: ConfigRecord(text)})


@dataclass(frozen=True)
class SiteAudit:
    """One site's audit of N candidates, as its reply says."""

    site: str
    nearest: dict[str, list[float]]
    neighbours: dict[str, list[str]]
    flagged: list[bool]
    thresholds: dict[str, float]
    calibration: dict[str, Any]
    counts: dict[str, int]
    figures: dict[str, Any]
    epsilon: float | None
    delta: float | None


def _finite(name: str, values: list[float]) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ExchangeError(f"audit reply: {name} holds NaN or infinite values")
    return values


def _list(record: MetricRecord | ConfigRecord, key: str) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, list):
        raise ExchangeError(f"audit reply: {key!r} is missing or not a list")
    return value


def _number(record: MetricRecord, key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExchangeError(f"audit reply: {key!r} is missing or not a number")
    return float(value)


def read_audit_reply(content: RecordDict, candidates: int) -> SiteAudit:
    """A site's audit of ``candidates`` candidates from its reply.

    Raises:
        ExchangeError: other records than the audit's, a missing or ill-typed value, lists of
            another length than the candidates, or a non-finite distance or threshold.
    """
    metrics, text = content.get(METRICS_RECORD), content.get(TEXT_RECORD)
    if set(content) != {METRICS_RECORD, TEXT_RECORD} or not (
        isinstance(metrics, MetricRecord) and isinstance(text, ConfigRecord)
    ):
        raise ExchangeError(
            f"an audit reply holds exactly a {METRICS_RECORD!r} MetricRecord and a "
            f"{TEXT_RECORD!r} ConfigRecord; got {sorted(content)}"
        )
    nearest = {
        s: _finite(s, [float(v) for v in _list(metrics, f"nearest{SEPARATOR}{s}")]) for s in SPACES
    }
    neighbours = {s: [str(v) for v in _list(text, f"neighbour{SEPARATOR}{s}")] for s in SPACES}
    flagged = [bool(v) for v in _list(metrics, "flagged")]
    thresholds = {s: _number(metrics, f"threshold{SEPARATOR}{s}") for s in SPACES}
    counts = {
        name: int(_number(metrics, f"count{SEPARATOR}{name}"))
        for name in ("train", "holdout", "flagged")
    }
    calibration = {
        "source": str(text.get("calibration-source", "")),
        "cases": int(_number(metrics, "calibration-cases")),
        "note": str(text.get("calibration-note", "")),
    }
    key = int(_number(metrics, SITE_KEY))
    per_candidate: list[list[Any]] = [*nearest.values(), *neighbours.values(), flagged]
    lengths = {len(values) for values in per_candidate}
    if lengths != {candidates}:
        raise ExchangeError(
            f"audit reply: per-candidate lists of lengths {sorted(lengths)} for {candidates} "
            "candidates"
        )
    _finite("the thresholds", list(thresholds.values()))
    figure_prefix = f"figure{SEPARATOR}"
    figures = {
        k[len(figure_prefix) :]: _number(metrics, k) for k in metrics if k.startswith(figure_prefix)
    }
    epsilon = _number(metrics, "epsilon") if "epsilon" in metrics else None
    delta = _number(metrics, "delta") if "delta" in metrics else None
    return SiteAudit(
        site=site_name(key),
        nearest=nearest,
        neighbours=neighbours,
        flagged=flagged,
        thresholds=thresholds,
        calibration=calibration,
        counts=counts,
        figures=nested(figures, SEPARATOR),
        epsilon=epsilon,
        delta=delta,
    )


def candidate_set(images: torch.Tensor, labels: torch.Tensor) -> CaseSet:
    """Sampled pairs (images (N, 1, z, y, x) or (N, z, y, x), labels (N, z, y, x)) as a case
    set in [-1, 1], as a release would hold them."""
    flat = images[:, 0] if images.dim() == labels.dim() + 1 else images
    return CaseSet.of(
        np.clip(flat.detach().cpu().numpy(), -1.0, 1.0),
        labels.detach().cpu().numpy().astype(np.uint8),
    )
