"""The federated audit at a site: the server's candidates against this site's own cases.

The candidates of an audit message (:mod:`common.audit.exchange`) are searched among the site's
prepared cache (the cases it trained on) with :func:`common.audit.run.run_audit`, calibrated on
the site's held-out cases when its node config names a folder of them (``holdout-path``, at
least ``audit.min-holdout`` usable cases), else by the audit's stated leave-one-out fallback.
The reply holds distances, flags, thresholds and summary figures only; the full error of a
site that cannot audit stays in its log (:func:`client.federated.failure_reason`).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import RecordDict

from client.federated import RoundRefusedError, failure_reason
from client.site_data import ensure_prepared, site_files
from common.audit.exchange import audit_reply, read_candidates
from common.audit.inputs import load_real_cases, structure_values
from common.audit.run import run_audit
from common.audit.search import CaseSet
from common.config import FedsynthConfig, Scalar, SiteConfig
from common.data.cache import read_cache
from common.exchange import site_pseudonym
from common.privacy.ledger import PrivacyLedger

LOGGER = logging.getLogger("fedsynth.client")


def audit_round(content: RecordDict, node_config: dict[str, Scalar]) -> RecordDict:
    """Audit the candidates of an audit message against this site's cases; the reply's content.

    Raises:
        RoundRefusedError: the site could not audit (bad message, data or ledger problems);
            its reason names no file.
    """
    try:
        return _audit_round(content, node_config)
    except Exception as error:
        LOGGER.exception("this site could not audit the candidates")
        raise RoundRefusedError(failure_reason(error, "audit")) from error


def _holdout(node_config: dict[str, Scalar], config: FedsynthConfig) -> CaseSet | None:
    folder = SiteConfig.from_node_config(node_config).holdout_path
    if folder is None:
        return None
    cases, _ = load_real_cases(folder, config)  # their ids stay here
    return cases


def _audit_round(content: RecordDict, node_config: dict[str, Scalar]) -> RecordDict:
    candidates, config, run_id = read_candidates(content)
    files = site_files(node_config, config)
    index, prepared = read_cache(ensure_prepared(files, config))
    train = CaseSet.of(
        np.stack([case.image for case in prepared]), np.stack([case.label for case in prepared])
    )
    ids = [f"candidate-{i:04d}" for i in range(len(candidates))]
    audit = run_audit(
        candidates,
        ids,
        train,
        _holdout(node_config, config),
        structure_values(config.data.modality),
        config.audit,
    )
    LOGGER.info(
        "audit: %d of %d candidates flagged (%s)",
        audit.result["counts"]["flagged"],
        len(candidates),
        audit.calibration.note,
    )
    epsilon = delta = None
    if config.privacy.enabled:
        ledger = PrivacyLedger.for_cache(files.ledger_dir, index, config.privacy)
        epsilon, delta = ledger.spent_epsilon(), config.privacy.delta
    return audit_reply(audit, site_pseudonym(run_id, index.source_fingerprint), epsilon, delta)
