"""Privacy accounting: a thin layer over Opacus' RDP and PRV accountants.

A *history* is Opacus' own record of DP-SGD: a list of ``(noise_multiplier, sample_rate, steps)``
entries in the order they ran, consecutive entries with equal settings merged (as Opacus'
accountants merge them). Epsilon is always computed from the whole history at once, so an
accountant that is saved, loaded and continued reports exactly the epsilon of one uninterrupted
run with the same steps, never a restart from zero.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from opacus.accountants import IAccountant, create_accountant
from opacus.accountants.utils import get_noise_multiplier

from common.errors import ConfigError

HistoryEntry = tuple[float, float, int]
"""One stretch of DP-SGD: ``(noise_multiplier, sample_rate, steps)``."""
History = list[HistoryEntry]

ACCOUNTANTS = ("rdp", "prv")
"""Opacus' accountants fedsynth uses (``privacy.accountant``)."""

NOISE_SEARCH_CACHE_SIZE = 64
"""Noise-multiplier searches remembered per process."""
TARGET_EPSILON_TOLERANCE = 0.002
"""A noise multiplier chosen for a target epsilon spends between (1 - this) x target and target."""

_ALPHA_RANGE_WARNING = "Optimal order is the"
"""Opacus' RDP warning while the noise search tries extreme noise levels (not a result)."""


def _check(mechanism: str, delta: float | None = None) -> None:
    if mechanism not in ACCOUNTANTS:
        raise ValueError(f"accountant {mechanism!r} is not one of {', '.join(ACCOUNTANTS)}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1) for DP-SGD accounting, not {delta!r}")


def history_entry(noise_multiplier: Any, sample_rate: Any, steps: Any) -> HistoryEntry:
    """A checked ``(noise_multiplier, sample_rate, steps)``.

    Raises:
        ValueError: the noise multiplier is negative or not finite, the sample rate is not in
            (0, 1], or steps is not a whole number >= 0.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, not {steps!r}")
    for name, value in (("noise multiplier", noise_multiplier), ("sample rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"the {name} must be a number, not {value!r}")
    sigma, rate = float(noise_multiplier), float(sample_rate)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise multiplier must be finite and >= 0, not {sigma!r}")
    if not 0 < rate <= 1:
        raise ValueError(f"the sample rate must be in (0, 1], not {rate!r}")
    return sigma, rate, steps


def _append(merged: History, entry: HistoryEntry) -> None:
    """Append ``entry`` to ``merged`` in place, merging it into an equal last entry."""
    sigma, rate, count = entry
    if count == 0:
        return
    if merged and merged[-1][:2] == (sigma, rate):
        merged[-1] = (sigma, rate, merged[-1][2] + count)
    else:
        merged.append(entry)


def normalize_history(history: Iterable[Sequence[Any]]) -> History:
    """Checked entries (see :func:`history_entry`), consecutive equal settings merged.

    Raises:
        ValueError: an entry is not three valid values.
    """
    merged: History = []
    for entry in history:
        if len(entry) != 3:
            raise ValueError(f"a history entry holds noise multiplier, sample rate, steps: {entry}")
        _append(merged, history_entry(*entry))
    return merged


def extend_history(
    history: Iterable[Sequence[Any]], noise_multiplier: float, sample_rate: float, steps: int
) -> History:
    """A new history: ``history`` then ``steps`` more steps, merged as Opacus merges them."""
    merged = normalize_history(history)
    _append(merged, history_entry(noise_multiplier, sample_rate, steps))
    return merged


def total_steps(history: Iterable[Sequence[Any]]) -> int:
    """Steps over the whole history."""
    return sum(int(entry[2]) for entry in history)


def new_accountant(mechanism: str, history: Iterable[Sequence[Any]] = ()) -> IAccountant:
    """An Opacus accountant (``rdp`` or ``prv``) that continues from ``history``."""
    _check(mechanism)
    accountant = create_accountant(mechanism=mechanism)
    accountant.load_state_dict({"history": normalize_history(history), "mechanism": mechanism})
    return accountant


def history_of(accountant: IAccountant) -> History:
    """A checked copy of an Opacus accountant's history (what a ledger or checkpoint stores)."""
    return normalize_history(accountant.history)


def compute_epsilon(history: Iterable[Sequence[Any]], delta: float, mechanism: str) -> float:
    """Epsilon spent by ``history`` at ``delta`` under the accountant ``mechanism``.

    An empty history spends 0; any step without noise (noise multiplier 0) spends infinity.

    Raises:
        ValueError: ``delta`` is not in (0, 1), or the history or mechanism is invalid.
    """
    _check(mechanism, delta)
    entries = [entry for entry in normalize_history(history) if entry[2] > 0]
    if not entries:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in entries):
        return math.inf
    return float(new_accountant(mechanism, entries).get_epsilon(delta=delta))


@functools.lru_cache(maxsize=NOISE_SEARCH_CACHE_SIZE)
def noise_multiplier_for(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, mechanism: str
) -> float:
    """The noise multiplier with which ``steps`` steps at ``sample_rate`` spend ``target_epsilon``.

    Uses Opacus' ``get_noise_multiplier``; the result spends between (1 -
    :data:`TARGET_EPSILON_TOLERANCE`) x target and the target, never more. The search takes
    seconds at high sample rates, so results are remembered (a site asks every round).

    Raises:
        ConfigError: no noise level reaches the target (it is too small for these steps).
    """
    _check(mechanism, delta)
    history_entry(0.0, sample_rate, steps)
    if target_epsilon <= 0 or steps <= 0:
        raise ValueError("the target epsilon and the planned steps must be > 0")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ALPHA_RANGE_WARNING)
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=mechanism,
                    epsilon_tolerance=TARGET_EPSILON_TOLERANCE * target_epsilon,
                )
            )
        except ValueError as err:
            raise ConfigError(
                f"privacy.target-epsilon = {target_epsilon:g} cannot be reached in {steps} steps "
                f"at sample rate {sample_rate:.4g} and delta {delta:g} with any noise level "
                f"({err}): raise the target, or plan fewer steps (training.max-steps, "
                "training.local-epochs)"
            ) from None
