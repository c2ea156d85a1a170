"""The update gate: which sites' replies may enter a round's aggregation, and why not.

A reply is rejected, with its reason logged and counted, when it
- is an error (the site failed, refused, or its ClientApp crashed),
- answers another round (a late reply),
- holds records other than the model's arrays and scalar metrics,
- has arrays whose names, shapes or dtypes differ from the global model's,
- has NaN or infinite values, or no positive case count,
- moves the model much further than the others: its update's L2 norm exceeds
  ``federation.max-update-norm-ratio`` times the median norm of the other sites' updates that
  passed the checks above (when that median is 0, the other sites did not move and there is
  no scale to compare against: the norm check is skipped).

Accepted replies are returned in a fixed order (by a digest of their arrays, then node id), so
aggregation does not depend on the order sites happened to answer in.

A site that sends no reply *missed* the round (:func:`missing_sites`): no reply within
``federation.reply-timeout-s``, or the SuperLink's own answer that the site's node stopped
sending heartbeats (its SuperNode died) or that the message expired. Those are not the site's
replies and never reach the gate.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.constant import ErrorCode

from common.exchange import (
    ARRAYS_KEY,
    EXAMPLES_KEY,
    METRICS_KEY,
    ROUND_KEY,
    ArraySpec,
    array_spec,
    spec_problems,
)

LOGGER = logging.getLogger("fedsynth.server")

NO_REPLY_CODES = frozenset(
    {ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.NODE_UNAVAILABLE}
)
"""Error codes of the SuperLink's answers in place of a site (its node is gone, or the message
or its reply expired): the site sent nothing."""


@dataclass
class GateResult:
    """Replies that may be aggregated (in a fixed order) and the rejected sites' reasons."""

    accepted: list[Message] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    update_norms: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteReplies:
    """A round's replies that came from the sites, and the asked nodes that sent none."""

    replies: list[Message]
    missed: list[int]


def missing_sites(asked: Iterable[Message], replies: Iterable[Message]) -> SiteReplies:
    """Split a round's replies into the sites' own and the asked nodes that sent none.

    ``asked`` are the messages as sent (the Grid gave each its id); a reply names the message it
    answers, so a SuperLink answer for a dead node is put down to the node it was sent to.
    """
    targets = {message.metadata.message_id: message.metadata.dst_node_id for message in asked}
    own = [
        reply
        for reply in replies
        if not (reply.has_error() and reply.error.code in NO_REPLY_CODES)
        and reply.metadata.reply_to_message_id in targets
    ]
    answered = {targets[reply.metadata.reply_to_message_id] for reply in own}
    return SiteReplies(own, sorted(set(targets.values()) - answered))


def screen_replies(
    replies: Iterable[Message],
    global_arrays: ArrayRecord,
    server_round: int,
    max_norm_ratio: float,
) -> GateResult:
    """Apply the update gate (see the module docstring) to one round's replies."""
    result = GateResult()
    expected = array_spec(global_arrays)
    base = {name: array.numpy().astype(np.float64) for name, array in global_arrays.items()}
    candidates: list[tuple[Message, float, str]] = []
    for reply in replies:
        node = reply.metadata.src_node_id
        reason = _content_problem(reply, expected, server_round)
        if reason is not None:
            result.rejected[node] = reason
            continue
        arrays = reply.content[ARRAYS_KEY]
        norm = _update_norm(arrays, base)  # type: ignore[arg-type]
        result.update_norms[node] = norm
        candidates.append((reply, norm, _digest(arrays)))  # type: ignore[arg-type]
    norms = [norm for _, norm, _ in candidates]
    for index, (reply, norm, _) in enumerate(candidates):
        others = norms[:index] + norms[index + 1 :]
        reference = float(np.median(others)) if others else 0.0
        if max_norm_ratio > 0 and reference > 0 and norm > max_norm_ratio * reference:
            result.rejected[reply.metadata.src_node_id] = (
                f"update norm {norm:.4g} is over {max_norm_ratio:g} x the other sites' median "
                f"{reference:.4g}"
            )
    kept = [c for c in candidates if c[0].metadata.src_node_id not in result.rejected]
    kept.sort(key=lambda c: (c[2], c[0].metadata.src_node_id))
    result.accepted = [reply for reply, _, _ in kept]
    for node, reason in sorted(result.rejected.items()):
        LOGGER.warning("round %d: update of site %d rejected: %s", server_round, node, reason)
    return result


def _content_problem(reply: Message, expected: ArraySpec, server_round: int) -> str | None:
    """Why a reply cannot be aggregated, or None."""
    if reply.has_error():
        return f"the site reported an error: {reply.error.reason}"
    content = reply.content
    arrays, metrics = content.get(ARRAYS_KEY), content.get(METRICS_KEY)
    if set(content.keys()) != {ARRAYS_KEY, METRICS_KEY}:
        return f"unexpected records {sorted(content.keys())} (expected arrays and metrics)"
    if not isinstance(arrays, ArrayRecord) or not isinstance(metrics, MetricRecord):
        return "the reply's records are not an ArrayRecord and a MetricRecord"
    answered = metrics.get(ROUND_KEY)
    if answered != server_round:
        return f"a reply to round {answered}, not to round {server_round} (late)"
    examples = metrics.get(EXAMPLES_KEY)
    if (
        isinstance(examples, bool)
        or not isinstance(examples, int | float)
        or not math.isfinite(examples)
        or examples <= 0
    ):
        return f"no positive finite {EXAMPLES_KEY} in its metrics"
    problems = spec_problems(arrays, expected)
    if problems:
        return "arrays do not match the model: " + "; ".join(problems[:3])
    for name, array in arrays.items():
        if not np.isfinite(array.numpy()).all():
            return f"array {name} holds NaN or infinite values"
    return None


def _update_norm(arrays: ArrayRecord, base: dict[str, np.ndarray]) -> float:
    """L2 norm of the update (site arrays minus global arrays) over every array."""
    total = 0.0
    for name, array in arrays.items():
        delta = array.numpy().astype(np.float64) - base[name]
        total += float(np.sum(delta * delta))
    return float(np.sqrt(total))


def _digest(arrays: ArrayRecord) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays.keys()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name].numpy()).tobytes())
    return digest.hexdigest()
