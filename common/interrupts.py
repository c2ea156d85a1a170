"""SIGINT and SIGTERM as one clean stop: an exception that unwinds every ``finally``.

Python's default SIGTERM ends the process at once: no ``finally`` block runs, so a staging
folder stays half written and child processes (Ray's daemons, radiomics workers) outlive it.
While :func:`stop_on_signals` is active both signals raise :class:`Interrupted` in the main
thread instead, so atomic writers discard their staging (``common.atomic``), pools and Ray
shut down through their own exit paths, and the CLI says how to continue.

Work that must not stop half way (a training step: the weights and the optimiser's state are
updated together) runs inside :func:`deferred`: a signal arriving there is held and raised when
the block ends, so a checkpoint written after it is consistent.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal; ``hint`` says how to continue."""

    def __init__(self, signum: int, hint: str = "") -> None:
        self.signum = signum
        self.hint = hint
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """What a shell reports for a command ended by this signal (128 + its number)."""
        return 128 + self.signum

    def with_hint(self, hint: str) -> Interrupted:
        """The same interruption with ``hint`` (how to continue) attached."""
        return Interrupted(self.signum, hint)


class _State:
    deferring = 0
    pending: int | None = None
    stopping = False


def _handler(signum: int, _frame: FrameType | None) -> None:
    _State.stopping = True
    if _State.deferring:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; the handlers before it
    come back after it. Outside the main thread (where Python cannot handle signals) the block
    runs with the handlers as they are."""
    _State.stopping = False
    try:
        previous = {signum: signal.signal(signum, _handler) for signum in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _State.pending = None


def stop_requested() -> bool:
    """Whether a stop signal has arrived in the current (or last) :func:`stop_on_signals`
    block: what other threads report after it is the stop's doing."""
    return _State.stopping


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal until the block has finished, then raise it."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1
    if not _State.deferring and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


def exit_without_waiting_for_threads(code: int) -> None:
    """After a stop, end the process with ``code`` if threads other than this one still run
    (Flower's simulation threads wait for replies that will never come, and the interpreter
    would wait for them for ever); return when there are none. Output is flushed first; the
    caller must have ended child processes already (atexit handlers do not run)."""
    others = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and not thread.daemon and thread.is_alive()
    ]
    if not others:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
