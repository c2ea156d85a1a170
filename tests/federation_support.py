"""For federation tests: a Grid that runs every site's ClientApp in this process.

``LocalGrid`` does what Flower's in-memory grid does with a train message (gives it an id, hands
it to the destination node's ClientApp, returns the reply), keeps every reply a site sent in
``sent``, and can make a site misbehave: time out, answer as an old round, corrupt its update, or
die while it trains.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from client.app import audit as client_audit
from client.app import train as client_train
from common.config import FedsynthConfig, Scalar, load_config
from common.exchange import ARRAYS_KEY, METRICS_KEY, ROUND_KEY
from simulations.phantoms import write_cohort
from simulations.presets import preset

SMOKE: dict[str, Scalar] = preset("smoke")
"""The smallest federation that goes through every step (2 sites of 2 cases at 16^3)."""

Tamper = Callable[[Message, int], Message | None]
"""What a misbehaving site does to its reply in a round (None: the reply never arrives)."""


@dataclass
class LocalGrid:
    """A Grid whose sites' ClientApps run in this process (see the module docstring)."""

    node_configs: dict[int, dict[str, Scalar]]
    tamper: dict[int, Tamper] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)
    asked: list[Message] = field(default_factory=list)
    audit_tamper: dict[int, Tamper] = field(default_factory=dict)
    """What a site does to its audit replies (``tamper`` changes train replies only)."""
    audits: list[Message] = field(default_factory=list)
    """The audit replies as the sites sent them (also in ``sent``)."""

    def get_node_ids(self) -> Iterable[int]:
        """Every site is always connected."""
        return list(self.node_configs)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Each site trains on (or audits) its message; its (possibly tampered) reply comes
        back."""
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.asked.append(message)
            node = message.metadata.dst_node_id
            context = Context(
                run_id=1,
                node_id=node,
                node_config=dict(self.node_configs[node]),
                state=RecordDict(),
                run_config={},
            )
            is_audit = message.metadata.message_type.startswith("query.")
            reply = (client_audit if is_audit else client_train)(message, context)
            self.sent.append(reply)
            if is_audit:
                self.audits.append(reply)
            server_round = int(message.content["config"][ROUND_KEY])  # type: ignore[index, arg-type]
            tampers = self.audit_tamper if is_audit else self.tamper
            changed = tampers[node](reply, server_round) if node in tampers else reply
            if changed is not None:
                replies.append(changed)
        return replies

    def as_grid(self) -> Grid:
        """This object where Flower's Grid type is expected."""
        return cast(Grid, self)


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower's task identity, which creating a Message needs outside a Flower process."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def smoke_config(**overrides: Scalar) -> FedsynthConfig:
    """The smoke federation's settings, with overrides (run-config keys)."""
    return load_config({**SMOKE, **overrides})


def without_pseudonyms(text: str) -> str:
    """``text`` with the run's site pseudonyms cut out: ``site-06cf8809e922`` is 48 random
    bits, not the directory ``site-01``, though it may begin like it."""
    return re.sub(r"site-[0-9a-f]{12}", "<pseudonym>", text)


def phantom_sites(folder: Path, config: FedsynthConfig) -> dict[int, dict[str, Scalar]]:
    """A phantom cohort in ``folder/sites``; node configs (node ids 101, 102, ...) for its
    sites, each with its own cache and ledger under ``folder``."""
    cohort = write_cohort(config, folder / "sites")
    return {
        101 + index: {
            "data-path": str(site),
            "cache-dir": str(folder / "cache" / site.name),
            "ledger-dir": str(folder / "ledger" / site.name),
        }
        for index, site in enumerate(cohort.sites)
    }


def as_round(server_round: int) -> Tamper:
    """A site whose reply claims to answer ``server_round`` (a late reply)."""

    def tamper(reply: Message, _: int) -> Message:
        metrics = cast(MetricRecord, reply.content[METRICS_KEY])
        metrics[ROUND_KEY] = server_round
        return reply

    return tamper


def scaled_update(factor: float) -> Tamper:
    """A site whose arrays are multiplied by ``factor`` (a poisoned update)."""

    def tamper(reply: Message, _: int) -> Message:
        arrays = cast(ArrayRecord, reply.content[ARRAYS_KEY])
        scaled = {name: Array(array.numpy() * np.float32(factor)) for name, array in arrays.items()}
        reply.content[ARRAYS_KEY] = ArrayRecord(scaled)  # type: ignore[arg-type]
        return reply

    return tamper


def never_replies(reply: Message, _: int) -> None:
    """A site that does not answer in time."""
    return None


def superlink_answer(message: Message, code: int = ErrorCode.NODE_UNAVAILABLE) -> Message:
    """What the SuperLink sends back, from its own node id, for a node that stopped sending
    heartbeats (or a message that expired)."""
    answer = Message(Error(code=code, reason="Error: Node Unavailable"), reply_to=message)
    answer.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    return answer


def dies_in(server_round: int) -> Tamper:
    """A site whose SuperNode dies in ``server_round`` after the ledger charge (it trained, but
    the SuperLink answers for it that its node is unavailable)."""

    def tamper(reply: Message, answered: int) -> Message:
        if answered != server_round:
            return reply
        asked = Message(RecordDict(), dst_node_id=reply.metadata.src_node_id, message_type="train")
        asked.metadata.__dict__["_message_id"] = reply.metadata.reply_to_message_id
        return superlink_answer(asked)

    return tamper
