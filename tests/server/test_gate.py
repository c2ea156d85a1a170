"""Tests for server/gate.py: which sites' replies the update gate lets into a round's aggregation
(errors, late replies, extra or missing records, arrays that do not fit, non-finite values, no
cases, outlying update norms), the update norms it measures and the order of accepted replies;
and which asked sites sent no reply."""

from __future__ import annotations

import itertools
import random
from uuid import uuid4

import numpy as np
import pytest
from federation_support import superlink_answer
from federation_support import task_identity as task_identity  # fixture
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from server.gate import GateResult, missing_sites, screen_replies

ROUND = 3
GOOD = (11, 12)
BAD = 13
GLOBAL: dict[str, list[float]] = {"g/w": [1.0, 2.0, 3.0], "g/b": [0.5, -0.5]}
Content = dict[str, ArrayRecord | MetricRecord | ConfigRecord]


pytestmark = pytest.mark.usefixtures("task_identity")


def arrays(values: dict[str, list[float]], dtype: type = np.float32) -> ArrayRecord:
    """Lists of numbers by name as an ArrayRecord."""
    return ArrayRecord({k: Array(np.asarray(v, dtype=dtype)) for k, v in values.items()})


def global_arrays() -> ArrayRecord:
    return arrays(GLOBAL)


def moved(delta_w: list[float], delta_b: list[float] | None = None) -> dict[str, list[float]]:
    """The global arrays plus an update."""
    delta_b = delta_b or [0.0, 0.0]
    return {
        "g/w": [g + d for g, d in zip(GLOBAL["g/w"], delta_w, strict=True)],
        "g/b": [g + d for g, d in zip(GLOBAL["g/b"], delta_b, strict=True)],
    }


def sent(node: int) -> Message:
    """A train message to ``node``, with an id as Flower's grid gives it."""
    message = Message(
        RecordDict({"config": ConfigRecord({"server-round": ROUND})}),
        dst_node_id=node,
        message_type="train",
    )
    message.metadata.__dict__["_message_id"] = uuid4().hex
    return message


def metrics(examples: float = 4, server_round: int = ROUND) -> MetricRecord:
    return MetricRecord({"num-examples": examples, "server-round": server_round})


def reply(node: int, content: Content) -> Message:
    """``node``'s reply to its train message, holding ``content``."""
    return Message(RecordDict(content), reply_to=sent(node))


def good_reply(node: int, delta: float = 0.1) -> Message:
    """A reply whose update has norm ``delta``."""
    return reply(node, {"arrays": arrays(moved([delta, 0.0, 0.0])), "metrics": metrics()})


def error_reply(node: int, reason: str) -> Message:
    return Message(Error(code=0, reason=reason), reply_to=sent(node))


def screen_with_good(bad: Message, max_norm_ratio: float = 10.0) -> GateResult:
    """Screen ``bad`` together with two good replies; check the good ones got through."""
    result = screen_replies(
        [good_reply(GOOD[0]), bad, good_reply(GOOD[1], 0.2)],
        global_arrays(),
        ROUND,
        max_norm_ratio,
    )
    assert {m.metadata.src_node_id for m in result.accepted} == set(GOOD)
    return result


def test_good_replies_are_all_accepted() -> None:
    replies = [good_reply(node, delta) for node, delta in ((11, 0.1), (12, 0.2), (13, 0.15))]
    result = screen_replies(replies, global_arrays(), ROUND, 10.0)
    assert sorted(m.metadata.src_node_id for m in result.accepted) == [11, 12, 13]
    assert result.rejected == {}
    assert result.update_norms == pytest.approx({11: 0.1, 12: 0.2, 13: 0.15})


def test_an_error_reply_is_rejected_with_its_reason() -> None:
    result = screen_with_good(error_reply(BAD, "CUDA out of memory"))
    assert list(result.rejected) == [BAD]
    assert "error" in result.rejected[BAD]
    assert "CUDA out of memory" in result.rejected[BAD]
    assert BAD not in result.update_norms


def test_a_late_reply_is_rejected() -> None:
    late = reply(BAD, {"arrays": arrays(moved([0.1, 0, 0])), "metrics": metrics(server_round=2)})
    result = screen_with_good(late)
    assert list(result.rejected) == [BAD]
    assert "round 2" in result.rejected[BAD]
    assert "late" in result.rejected[BAD]


def test_an_extra_record_is_rejected() -> None:
    extra = ConfigRecord({"path": "/data/patient-001"})
    content: Content = {"arrays": arrays(moved([0.1, 0, 0])), "metrics": metrics(), "leak": extra}
    result = screen_with_good(reply(BAD, content))
    assert list(result.rejected) == [BAD]
    assert "unexpected records" in result.rejected[BAD]
    assert "leak" in result.rejected[BAD]


def test_a_reply_without_metrics_is_rejected() -> None:
    result = screen_with_good(reply(BAD, {"arrays": arrays(moved([0.1, 0, 0]))}))
    assert list(result.rejected) == [BAD]
    assert "expected arrays and metrics" in result.rejected[BAD]


@pytest.mark.parametrize(
    ("values", "dtype", "named"),
    [
        ({"g/w": [1.0, 2.0, 3.0], "g/z": [0.0, 0.0]}, np.float32, ["missing array g/b", "g/z"]),
        ({"g/w": [1.0, 2.0, 3.0, 4.0], "g/b": [0.0, 0.0]}, np.float32, ["g/w", "(4,)", "(3,)"]),
        (moved([0.1, 0, 0]), np.float64, ["g/w", "float64", "expected float32"]),
    ],
    ids=["name", "shape", "dtype"],
)
def test_arrays_that_do_not_match_the_model_are_rejected(
    values: dict[str, list[float]], dtype: type, named: list[str]
) -> None:
    result = screen_with_good(reply(BAD, {"arrays": arrays(values, dtype), "metrics": metrics()}))
    assert list(result.rejected) == [BAD]
    assert "do not match the model" in result.rejected[BAD]
    for text in named:
        assert text in result.rejected[BAD]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(value: float) -> None:
    content: Content = {"arrays": arrays(moved([0.1, 0, 0], [value, 0.0])), "metrics": metrics()}
    result = screen_with_good(reply(BAD, content))
    assert list(result.rejected) == [BAD]
    assert result.rejected[BAD] == "array g/b holds NaN or infinite values"


@pytest.mark.parametrize("examples", [0, -2, None], ids=["zero", "negative", "missing"])
def test_no_positive_case_count_is_rejected(examples: int | None) -> None:
    values = metrics() if examples is None else metrics(examples=examples)
    if examples is None:
        del values["num-examples"]
    result = screen_with_good(reply(BAD, {"arrays": arrays(moved([0.1, 0, 0])), "metrics": values}))
    assert list(result.rejected) == [BAD]
    assert "no positive finite num-examples" in result.rejected[BAD]


@pytest.mark.parametrize("examples", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_case_count_is_rejected(examples: float) -> None:
    bad = reply(BAD, {"arrays": arrays(moved([0.1, 0, 0])), "metrics": metrics(examples)})
    result = screen_replies([good_reply(GOOD[0]), bad], global_arrays(), ROUND, 10.0)
    assert list(result.rejected) == [BAD]
    assert "no positive finite num-examples" in result.rejected[BAD]


def test_an_outlying_update_norm_is_rejected_with_both_numbers() -> None:
    replies = [good_reply(21, 1.0), good_reply(22, 1.2), good_reply(23, 50.0)]
    result = screen_replies(replies, global_arrays(), ROUND, 10.0)
    assert list(result.rejected) == [23]
    # 50 against the median of the other two, (1 + 1.2) / 2 = 1.1
    assert result.rejected[23] == "update norm 50 is over 10 x the other sites' median 1.1"
    assert sorted(m.metadata.src_node_id for m in result.accepted) == [21, 22]


def test_a_moderately_larger_update_is_accepted() -> None:
    replies = [good_reply(21, 1.0), good_reply(22, 1.2), good_reply(23, 5.0)]
    result = screen_replies(replies, global_arrays(), ROUND, 10.0)
    assert result.rejected == {}
    assert len(result.accepted) == 3


def test_ratio_zero_turns_the_norm_check_off() -> None:
    replies = [good_reply(21, 1.0), good_reply(22, 1.2), good_reply(23, 50.0)]
    result = screen_replies(replies, global_arrays(), ROUND, 0.0)
    assert result.rejected == {}
    assert len(result.accepted) == 3
    assert result.update_norms[23] == pytest.approx(50.0)


def test_update_norms_are_l2_norms_over_every_array() -> None:
    replies = [
        reply(31, {"arrays": arrays(moved([3.0, 0.0, 0.0], [0.0, 4.0])), "metrics": metrics()}),
        reply(32, {"arrays": arrays(moved([1.0, -2.0, 2.0])), "metrics": metrics()}),
        reply(33, {"arrays": arrays(moved([0.0, 0.0, 0.0])), "metrics": metrics()}),
    ]
    result = screen_replies(replies, global_arrays(), ROUND, 0.0)
    assert result.update_norms == pytest.approx({31: 5.0, 32: 3.0, 33: 0.0})


def test_accepted_order_does_not_depend_on_the_order_replies_arrive_in() -> None:
    replies = [good_reply(node, 0.1 * node) for node in (1, 2, 3, 4)]
    orders = set()
    for permutation in itertools.permutations(replies):
        result = screen_replies(list(permutation), global_arrays(), ROUND, 10.0)
        orders.add(tuple(m.metadata.src_node_id for m in result.accepted))
    assert len(orders) == 1
    assert sorted(orders.pop()) == [1, 2, 3, 4]


def test_accepted_order_is_fixed_when_two_sites_send_the_same_arrays() -> None:
    same = moved([0.0, 0.0, 0.0])
    first = reply(41, {"arrays": arrays(same), "metrics": metrics(examples=2)})
    second = reply(42, {"arrays": arrays(same), "metrics": metrics(examples=5)})
    orders = set()
    for replies in ([first, second], [second, first]):
        result = screen_replies(replies, global_arrays(), ROUND, 10.0)
        orders.add(tuple(m.metadata.src_node_id for m in result.accepted))
    assert len(orders) == 1


def test_rejections_and_acceptances_together() -> None:
    replies = [
        good_reply(51, 1.0),
        error_reply(52, "crashed"),
        good_reply(53, 1.1),
        reply(54, {"arrays": arrays(moved([0.1, 0, 0])), "metrics": metrics(server_round=1)}),
        good_reply(55, 0.9),
        good_reply(56, 100.0),
    ]
    random.Random(0).shuffle(replies)
    result = screen_replies(replies, global_arrays(), ROUND, 10.0)
    assert sorted(result.rejected) == [52, 54, 56]
    assert sorted(m.metadata.src_node_id for m in result.accepted) == [51, 53, 55]
    assert sorted(result.update_norms) == [51, 53, 55, 56]


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.NODE_UNAVAILABLE,
        ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
        ErrorCode.MESSAGE_UNAVAILABLE,
    ],
    ids=["node-unavailable", "reply-expired", "message-expired"],
)
def test_a_superlink_answer_for_a_dead_node_counts_as_missed_not_as_a_reply(code: int) -> None:
    asked = [sent(node) for node in (*GOOD, BAD)]
    answers = [Message(good_content(), reply_to=m) for m in asked[:2]]
    split = missing_sites(asked, [*answers, superlink_answer(asked[2], code)])
    assert split.replies == answers
    assert split.missed == [BAD]  # the node it was sent to, not the SuperLink's own id


def test_a_node_that_sends_nothing_is_missed_and_a_site_error_is_a_reply() -> None:
    asked = [sent(node) for node in (*GOOD, BAD)]
    failed = Message(Error(code=4001, reason="privacy budget"), reply_to=asked[0])
    split = missing_sites(asked, [failed])
    assert split.replies == [failed]  # the gate rejects it with its reason
    assert split.missed == [GOOD[1], BAD]


def good_content() -> RecordDict:
    return RecordDict({"arrays": arrays(moved([0.1, 0.0, 0.0])), "metrics": metrics()})
