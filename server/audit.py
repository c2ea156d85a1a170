"""The federated audit, server side: send candidate cases to every site, collect the audits.

Every connected site gets the same ``query.audit`` message (:mod:`common.audit.exchange`) and
answers within ``federation.reply-timeout-s``. The audit fails, and nothing is released, when
any site replies with an error or a malformed audit, or when a site whose updates went into the
model (named by its run pseudonym) does not reply: its patients would go unaudited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from common.audit.exchange import (
    AUDIT_ACTION,
    SiteAudit,
    candidates_content,
    read_audit_reply,
)
from common.audit.search import CaseSet
from common.config import FedsynthConfig
from common.errors import FedsynthError
from common.exchange import ExchangeError

LOGGER = logging.getLogger("fedsynth.server")


class ReleaseRefusedError(FedsynthError):
    """Nothing is released: the message says which site or figure stopped it and what to do."""


class AuditFailedError(ReleaseRefusedError):
    """A site did not complete the federated audit (no reply, an error, a malformed reply)."""


def audit_candidates(
    grid: Grid,
    config: FedsynthConfig,
    run_id: str,
    candidates: CaseSet,
    contributors: Iterable[str],
) -> dict[str, SiteAudit]:
    """Every site's audit of ``candidates``, by site pseudonym.

    Raises:
        AuditFailedError: a site replied with an error or a malformed audit, or a site of
            ``contributors`` (pseudonyms of the sites whose updates were aggregated) did not
            reply in time.
    """
    content = candidates_content(candidates, config, run_id)
    messages = [
        Message(content, dst_node_id=node, message_type=f"query.{AUDIT_ACTION}")
        for node in grid.get_node_ids()
    ]
    LOGGER.info("audit: %d candidates sent to %d sites", len(candidates), len(messages))
    replies = grid.send_and_receive(messages, timeout=config.federation.reply_timeout_s)
    audits: dict[str, SiteAudit] = {}
    failures = []
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            failures.append(f"node {node} replied with an error: {reply.error.reason}")
            continue
        try:
            audit = read_audit_reply(reply.content, len(candidates))
        except ExchangeError as err:
            failures.append(f"node {node} sent an unusable audit: {err}")
            continue
        audits[audit.site] = audit
    missing = sorted(set(contributors) - set(audits))
    failures += [f"{site} (trained the model) did not reply" for site in missing]
    if failures:
        raise AuditFailedError(
            f"the federated audit failed, so nothing is released: {'; '.join(failures)}. Every "
            "site that trained the model must audit the candidates: fix those sites (their "
            "logs say why) or raise federation.reply-timeout-s, then resume the run "
            "(--resume): its rounds are done, so only the audit and the release run again"
        )
    return audits
