"""SIGINT and SIGTERM raise Interrupted while stop_on_signals is active; deferred holds them."""

from __future__ import annotations

import os
import signal

import pytest

from common.interrupts import Interrupted, deferred, stop_on_signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_raises_interrupted_with_the_shell_exit_code(signum: int, code: int) -> None:
    with pytest.raises(Interrupted) as raised, stop_on_signals():
        os.kill(os.getpid(), signum)
    assert raised.value.exit_code == code
    assert signal.Signals(signum).name in str(raised.value)


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_deferred_block_finishes_before_the_signal_is_raised() -> None:
    done: list[str] = []

    def step_then_more() -> None:
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rest of the step")
        done.append("after the step")  # never reached: the held signal is raised on exit

    with pytest.raises(Interrupted), stop_on_signals():
        step_then_more()
    assert done == ["rest of the step"]


def test_hint_is_kept_with_the_signal() -> None:
    hinted = Interrupted(signal.SIGTERM).with_hint("run again with --resume")
    assert (hinted.signum, hinted.hint) == (signal.SIGTERM, "run again with --resume")
