"""Asking every connected site how many usable cases it holds."""

from __future__ import annotations

from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

SITE_SUMMARY_MESSAGE = f"{MessageType.QUERY}.site_summary"


def collect_site_summaries(grid: Grid, min_sites: int, timeout: float) -> dict[int, dict[str, int]]:
    """Wait for ``min_sites`` nodes, ask each for its site summary, return each reply's counts.

    Nodes that reply with an error or not within ``timeout`` seconds are left out.
    """
    _, node_ids = sample_nodes(grid, min_available_nodes=min_sites, sample_size=0)
    messages = [
        Message(RecordDict(), dst_node_id=node_id, message_type=SITE_SUMMARY_MESSAGE)
        for node_id in node_ids
    ]
    summaries: dict[int, dict[str, int]] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            continue
        record = reply.content.get("site-summary")
        if isinstance(record, MetricRecord):
            counts = {key: int(value) for key, value in record.items()}  # type: ignore[arg-type]
            summaries[reply.metadata.src_node_id] = counts
    return summaries
