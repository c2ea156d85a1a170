"""Carrying a version-1 ledger (one file per dataset) over into the site's per-case ledger.

fedsynth 1 kept ``<dataset source fingerprint>.json`` per dataset. The first time that dataset
is opened again, every one of its runs is added to the site ledger as a run on the dataset's
cases (so each case inherits the dataset's whole history), and the site ledger records the
migration; only then is the old file rewritten as a marker, with its contents kept inside
(``v1``) and format version 2, which an older fedsynth refuses to continue rather than restart.
A crash between the two writes is harmless: the site ledger's record keeps the runs from being
counted twice, and the marker is written on the next open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.config import PrivacyConfig
from common.privacy.ledger_errors import LedgerError
from common.privacy.ledger_format import (
    FINGERPRINT_PATTERN,
    LEDGER_FORMAT,
    LEDGER_VERSION,
    SITE_LEDGER_FILE,
    LedgerContents,
    case_set_id,
    parse_v1_runs,
    read_json,
)

LOGGER = logging.getLogger("fedsynth.privacy")

MIGRATED_KEY = "migrated_to"
"""Marks a version-1 file already carried over (it names the site ledger file)."""


def v1_path(folder: Path, dataset: str) -> Path:
    """Where fedsynth 1 kept the ledger of the dataset with source fingerprint ``dataset``."""
    return folder / f"{dataset}.json"


def is_marker(data: Any) -> bool:
    """True for a version-1 file that was carried over (see the module docstring)."""
    return isinstance(data, dict) and MIGRATED_KEY in data and isinstance(data.get("v1"), dict)


def carry_over(
    folder: Path,
    dataset: str,
    cases: Sequence[str],
    privacy: PrivacyConfig,
    contents: LedgerContents,
) -> bool:
    """Add dataset ``dataset``'s version-1 runs to ``contents`` as runs on ``cases`` (once);
    True when something was added (save ``contents``, then :func:`mark_carried_over`).

    Raises:
        LedgerError, LedgerCorruptError, LedgerMismatchError: the version-1 file is unreadable,
            corrupt, for another accountant or delta, or its run ids are already in the ledger.
    """
    path = v1_path(folder, dataset)
    raw = read_json(path)
    if raw is None or dataset in contents.migrated_datasets():
        return False
    case_set = case_set_id(cases)
    runs = parse_v1_runs(path, raw["v1"] if is_marker(raw) else raw, dataset, case_set, privacy)
    known = {run.run_id for run in contents.runs}
    if any(run.run_id in known for run in runs):
        raise LedgerError(
            path,
            f"its runs are already in {folder / SITE_LEDGER_FILE}, which does not say it "
            "carried this file over: one of the two was edited or copied; restore both "
            "from a backup",
        )
    contents.runs.extend(runs)
    contents.case_sets.setdefault(case_set, frozenset(cases))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    contents.migrated.append({"dataset": dataset, "runs": len(runs), "when": when})
    LOGGER.info("privacy ledger: carried %d runs of a version-1 ledger over", len(runs))
    return True


def mark_carried_over(folder: Path, dataset: str) -> None:
    """Rewrite a carried-over version-1 file as a marker that keeps its contents (once).

    Raises:
        LedgerError: the file cannot be read or written.
    """
    path = v1_path(folder, dataset)
    original = read_json(path)
    if original is None or is_marker(original):
        return
    marker = {
        "format": LEDGER_FORMAT,
        "format_version": LEDGER_VERSION,
        MIGRATED_KEY: SITE_LEDGER_FILE,
        "v1": original,
    }
    try:
        atomic_write_text(path, json.dumps(marker, indent=2) + "\n")
    except OSError as err:
        raise LedgerError(path, f"cannot mark the ledger carried over ({err})") from None


def warn_of_others(folder: Path, contents: LedgerContents, dataset: str) -> None:
    """Log the version-1 ledgers of other datasets that were never carried over."""
    done = contents.migrated_datasets() | {dataset}
    left = [
        path
        for path in sorted(folder.glob("*.json"))
        if FINGERPRINT_PATTERN.fullmatch(path.stem) and path.stem not in done
    ]
    if left:
        LOGGER.warning(
            "privacy ledger: %d version-1 ledgers of other datasets in %s are not carried over "
            "yet (their cases are only known from their caches): prepare and open each of "
            "those datasets once, so that their cases keep what they spent",
            len(left),
            folder,
        )
