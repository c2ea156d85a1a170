"""The fedsynth ClientApp: what each hospital's SuperNode runs. Thin: unpack, call, pack."""

from __future__ import annotations

from flwr.app import Context, Error, Message, MetricRecord, MetricRecordValues, RecordDict
from flwr.clientapp import ClientApp

from client.audit_round import audit_round
from client.federated import RoundRefusedError, train_round
from client.site_summary import summarise_site
from common.audit.exchange import AUDIT_ACTION
from common.config import SiteConfig, load_config

SITE_SUMMARY_ACTION = "site_summary"
REFUSED_CODE = 4001
"""Error code of a reply whose site did not train (the reason says why, without paths)."""
AUDIT_REFUSED_CODE = 4002
"""Error code of a reply whose site could not audit the candidates (the reason has no path)."""

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the global model on this site's data; reply with arrays and scalar metrics."""
    try:
        content = train_round(
            message.content, dict(context.node_config), message.metadata.message_id
        )
    except RoundRefusedError as refused:
        return Message(Error(code=REFUSED_CODE, reason=refused.reason), reply_to=message)
    return Message(content, reply_to=message)


@app.query(SITE_SUMMARY_ACTION)
def site_summary(message: Message, context: Context) -> Message:
    """Reply with the counts of this site's cases (no voxels, paths or identifiers)."""
    config = load_config(context.run_config)
    site = SiteConfig.from_node_config(context.node_config)
    counts: dict[str, MetricRecordValues] = dict(summarise_site(site, config.data))
    return Message(RecordDict({"site-summary": MetricRecord(counts)}), reply_to=message)


@app.query(AUDIT_ACTION)
def audit(message: Message, context: Context) -> Message:
    """Audit the server's candidate cases against this site's own cases; reply with distances,
    flags, thresholds and summary figures only (``common.audit.exchange``)."""
    try:
        content = audit_round(message.content, dict(context.node_config))
    except RoundRefusedError as refused:
        return Message(Error(code=AUDIT_REFUSED_CODE, reason=refused.reason), reply_to=message)
    return Message(content, reply_to=message)
