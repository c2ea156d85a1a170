"""Membership inference: can a model's own scores tell its training cases from other patients?

The attack is the simplest of each family, through
:meth:`~common.models.interface.GenerativeModel.membership_scores`: a GAN's discriminator
score of the real (image, label map) pair; a diffusion model's minus denoising loss averaged
over ``audit.membership-timesteps``, with the same noise for every case (each family says which
in ``membership_attack``). Higher scores mean
"more likely a member". Its success is the ROC AUC of the training cases' scores against the
held-out cases' (0.5: the model tells nothing; 1: every member scores above every non-member),
with a bootstrap percentile interval. The maths only: no file is read or written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from common.audit.search import CaseSet
from common.config import AuditConfig
from common.models.interface import Batch, GenerativeModel
from common.seeding import numpy_rng, torch_generator


def roc_auc(
    members: Sequence[float] | np.ndarray, non_members: Sequence[float] | np.ndarray
) -> float:
    """The ROC AUC of ``members``' scores against ``non_members``' (the Mann-Whitney
    statistic): the share of (member, non-member) pairs where the member scores higher, ties
    counting one half.

    Raises:
        ValueError: either side is empty or holds a NaN.
    """
    inside, outside = _scores(members, "members"), _scores(non_members, "non-members")
    return float(_auc_matrix(inside[None], outside[None])[0])


def _scores(values: Sequence[float] | np.ndarray, side: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"the ROC AUC needs scores of {side}; there are none")
    if np.isnan(array).any():
        raise ValueError(f"the scores of {side} hold NaN")
    return array


def _auc_matrix(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """Row-wise AUC of (R, m) member scores against (R, n) non-member scores, (R,), from the
    members' mid-ranks among all scores of their row (Mann-Whitney U = rank sum - m(m+1)/2):
    memory linear in m + n."""
    m, n = members.shape[1], non_members.shape[1]
    ranks = rankdata(np.concatenate([members, non_members], axis=1), method="average", axis=1)
    wins = ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0
    return np.asarray(wins / (m * n))


def bootstrap_interval(
    members: Sequence[float] | np.ndarray,
    non_members: Sequence[float] | np.ndarray,
    resamples: int,
    level: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """The ``level`` bootstrap percentile interval of the ROC AUC: ``resamples`` times,
    members and non-members are each resampled with replacement (keeping both counts).

    Raises:
        ValueError: an empty side, a NaN, fewer than one resample or ``level`` outside (0, 1).
    """
    inside, outside = _scores(members, "members"), _scores(non_members, "non-members")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    drawn_in = inside[rng.integers(0, inside.size, (resamples, inside.size))]
    drawn_out = outside[rng.integers(0, outside.size, (resamples, outside.size))]
    aucs = _auc_matrix(drawn_in, drawn_out)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(aucs, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Membership:
    """A membership-inference attack's outcome on one model."""

    family: str
    attack: str
    """What the family's score is (:attr:`GenerativeModel.membership_attack`)."""
    auc: float
    interval: tuple[float, float]
    level: float
    resamples: int
    members: int
    non_members: int
    timesteps: tuple[int, ...] | None
    """The diffusion timesteps the loss was averaged over (None for a GAN)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``audit.json``'s ``membership`` section)."""
        return {
            "family": self.family,
            "attack": self.attack,
            "auc": self.auc,
            "interval": list(self.interval),
            "level": self.level,
            "bootstrap": self.resamples,
            "members": self.members,
            "non_members": self.non_members,
            "timesteps": None if self.timesteps is None else list(self.timesteps),
        }

    def sentence(self) -> str:
        """One line for the console and the reports."""
        low, high = self.interval
        return (
            f"membership inference ({self.family}: {self.attack}): ROC AUC "
            f"{self.auc:.3f}, {self.level:.0%} bootstrap interval {low:.3f}-{high:.3f}, "
            f"{self.members} training vs {self.non_members} held-out cases (0.5: the model "
            "tells its training cases from other patients no better than chance)"
        )


def attack_scores(
    model: GenerativeModel, cases: CaseSet, settings: AuditConfig, seed: int
) -> np.ndarray:
    """The attack score of every case ``(N,)``, ``training.batch-size`` cases at a time; each
    batch's noise comes from one generator seeded afresh from ``seed``, so a case's score does
    not depend on its batch."""
    scores = []
    size = model.training.batch_size
    for start in range(0, len(cases), size):
        batch = Batch(
            image=cases.images[start : start + size, None].float(),
            label=cases.labels[start : start + size].long(),
        )
        generator = torch_generator(seed, "membership")
        scores.append(model.membership_scores(batch, generator, settings.membership_timesteps))
    return torch.cat(scores).double().numpy() if scores else np.zeros(0)


def membership_attack(
    model: GenerativeModel, train: CaseSet, holdout: CaseSet, settings: AuditConfig, seed: int
) -> Membership:
    """Score ``train`` (members) and ``holdout`` (non-members) and summarise the attack.

    Raises:
        ValueError: ``train`` or ``holdout`` is empty.
        ConfigError: a diffusion model with a timestep not below its ``model.diffusion-steps``.
    """
    if len(train) == 0 or len(holdout) == 0:
        raise ValueError("membership inference needs training and held-out cases")
    members = attack_scores(model, train, settings, seed)
    non_members = attack_scores(model, holdout, settings, seed)
    interval = bootstrap_interval(
        members,
        non_members,
        settings.membership_bootstrap,
        settings.membership_bootstrap_level,
        numpy_rng(seed, "membership-bootstrap"),
    )
    return Membership(
        family=model.family,
        attack=model.membership_attack,
        auc=roc_auc(members, non_members),
        interval=interval,
        level=settings.membership_bootstrap_level,
        resamples=settings.membership_bootstrap,
        members=len(train),
        non_members=len(holdout),
        timesteps=settings.membership_timesteps if model.membership_uses_timesteps else None,
    )
