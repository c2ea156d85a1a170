"""The fedsynth ServerApp: what the federation operator runs. Thin: unpack, call, pack.

Until federated training lands, a run asks every site for the counts of its usable cases.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import load_config, log_config
from server.site_summaries import collect_site_summaries

LOGGER = logging.getLogger("fedsynth.server")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Log the run's settings and every site's case counts."""
    config = load_config(context.run_config)
    log_config(config, LOGGER)
    summaries = collect_site_summaries(
        grid, config.federation.min_sites, timeout=config.federation.reply_timeout_s
    )
    for node_id, counts in sorted(summaries.items()):
        LOGGER.info("site %s: %s", node_id, counts)
    total = sum(counts.get("valid-cases", 0) for counts in summaries.values())
    LOGGER.info("%d sites replied, %d valid cases in all", len(summaries), total)
