"""A run folder: what training leaves behind for sampling and for people to read.

``model.pt`` (family, settings, weights, hash), ``run.json`` (rounds, sites with the privacy they
spent, steps, losses), ``checkpoint.pt`` (resumable state) and ``metrics.jsonl`` (losses per
step). A run folder holds a model trained on real data: it stays with whoever trained it (the
site, or the federation's operator), and only releases made from it leave.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import FedsynthError
from common.release import SiteRecord

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports."""

    family: str
    model_hash: str
    rounds: int
    steps: int
    sites: list[SiteRecord]
    final_losses: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    """The tumour-volume calibration's search (``common.models.calibration``); {} for none."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        """Inverse of :meth:`to_json`."""
        return cls(
            family=str(data["family"]),
            model_hash=str(data["model_hash"]),
            rounds=int(data["rounds"]),
            steps=int(data["steps"]),
            sites=[SiteRecord(**site) for site in data["sites"]],
            final_losses={k: float(v) for k, v in data.get("final_losses", {}).items()},
            calibration=dict(data.get("calibration", {})),
        )


def write_summary(run: Path, summary: RunSummary) -> None:
    """Write ``run.json`` atomically."""
    atomic_write_text(run / SUMMARY_FILE, json.dumps(summary.to_json(), indent=2) + "\n")


def read_summary(run: Path) -> RunSummary:
    """Read ``run.json``.

    Raises:
        FedsynthError: the folder is not a finished run.
    """
    path = run / SUMMARY_FILE
    try:
        return RunSummary.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FedsynthError(f"{run}: not a finished run (no {SUMMARY_FILE}); train first") from None
    except (ValueError, KeyError, TypeError) as err:
        raise FedsynthError(f"{path}: unreadable run summary ({err})") from None
