"""The fedsynth ClientApp: what each hospital's SuperNode runs. Thin: unpack, call, pack."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, MetricRecordValues, RecordDict
from flwr.clientapp import ClientApp

from client.site_summary import summarise_site
from common.config import SiteConfig, load_config

SITE_SUMMARY_ACTION = "site_summary"

app = ClientApp()


@app.query(SITE_SUMMARY_ACTION)
def site_summary(message: Message, context: Context) -> Message:
    """Reply with the counts of this site's cases (no voxels, paths or identifiers)."""
    config = load_config(context.run_config)
    site = SiteConfig.from_node_config(context.node_config)
    counts: dict[str, MetricRecordValues] = dict(summarise_site(site, config.data))
    return Message(RecordDict({"site-summary": MetricRecord(counts)}), reply_to=message)
