"""The release gate: only candidates that pass every site's audit are released.

The server samples ``federation.release-cases`` candidates from the global model and sends
them to every site (:func:`server.audit.audit_candidates`). A candidate flagged at any site is
withheld; the missing cases are sampled and audited again, until ``release-cases`` pass or
``audit.max-candidate-factor`` x ``release-cases`` candidates have been drawn in all (then the
release holds fewer cases, and its manifest says so). The release is refused outright when a
site's ledger is over ``privacy.budget-epsilon``, when a site fails the audit, or when no
candidate passes. Candidates are drawn from one generator seeded by the run seed, so an audit
that flags nothing releases exactly the cases an unaudited release would hold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.serverapp import Grid

from common.audit.exchange import SiteAudit, candidate_set
from common.audit.search import SPACES
from common.config import FedsynthConfig
from common.models.interface import GenerativeModel, SyntheticPairs
from common.release import CASE_PREFIX
from common.seeding import torch_generator
from server.audit import ReleaseRefusedError, audit_candidates
from server.sampling import sample_pairs

LOGGER = logging.getLogger("fedsynth.server")

CandidateSampler = Callable[[int], SyntheticPairs]
"""Draws the next ``n`` candidate pairs (each call continues the same random stream)."""


class OverBudgetError(ReleaseRefusedError):
    """A site's privacy ledger is over ``privacy.budget-epsilon``."""


class AllWithheldError(ReleaseRefusedError):
    """Every candidate the gate could draw was flagged by some site."""


def model_sampler(model: GenerativeModel, config: FedsynthConfig) -> CandidateSampler:
    """Candidates from ``model``, drawn with the release's generator (seeded by the run seed)."""
    generator = torch_generator(config.seed, "release")
    model.train_mode(False)
    return lambda n: sample_pairs(model, n, config.training.batch_size, generator)


@dataclass(frozen=True)
class GatedRelease:
    """The candidates that passed, and what the manifest records of the audit."""

    pairs: SyntheticPairs
    record: dict[str, Any]


def check_budgets(audits: dict[str, SiteAudit], config: FedsynthConfig) -> None:
    """Refuse the release when a site's ledger has spent more than the budget.

    Raises:
        OverBudgetError: the sites over budget, with their epsilon.
    """
    budget = config.privacy.budget_epsilon
    over = [
        f"{site} has spent epsilon {audit.epsilon:.4g}"
        for site, audit in sorted(audits.items())
        if audit.epsilon is not None and audit.epsilon > budget
    ]
    if over:
        raise OverBudgetError(
            f"nothing is released: {'; '.join(over)}, over privacy.budget-epsilon = {budget:g} "
            "(its ledger counts every run on its patients). A release from a model whose "
            "training spent more than the sites allow is refused; train within the budget"
        )


def _site_record(first: SiteAudit, batches: list[SiteAudit]) -> dict[str, Any]:
    return {
        "calibration": first.calibration,
        "thresholds": first.thresholds,
        "train_cases": first.counts["train"],
        "holdout_cases": first.counts["holdout"],
        "flagged": sum(batch.counts["flagged"] for batch in batches),
        "epsilon": first.epsilon,
        "delta": first.delta,
        "figures": [batch.figures for batch in batches],
    }


def gated_release(
    grid: Grid,
    config: FedsynthConfig,
    run_id: str,
    sampler: CandidateSampler,
    contributors: Iterable[str],
) -> GatedRelease:
    """Sample, audit at every site and keep the candidates no site flags (module docstring).

    Raises:
        AuditFailedError: a site failed the audit.
        OverBudgetError: a site's ledger is over budget.
        AllWithheldError: no candidate passed within the attempt limit.
    """
    wanted = config.federation.release_cases
    limit = math.ceil(config.audit.max_candidate_factor * wanted)
    sites = sorted(set(contributors))
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    released: list[dict[str, Any]] = []
    withheld: list[dict[str, Any]] = []
    per_site: dict[str, list[SiteAudit]] = {}
    drawn = 0
    while len(released) < wanted and drawn < limit:
        count = min(wanted - len(released), limit - drawn)
        pairs = sampler(count)
        audits = audit_candidates(
            grid, config, run_id, candidate_set(pairs.image, pairs.label), sites
        )
        check_budgets(audits, config)
        for site, audit in audits.items():
            per_site.setdefault(site, []).append(audit)
        for i in range(count):
            flagged_by = sorted(site for site, audit in audits.items() if audit.flagged[i])
            nearest = {
                site: {space: audit.nearest[space][i] for space in SPACES}
                for site, audit in sorted(audits.items())
            }
            entry = {"candidate": drawn + i, "nearest": nearest}
            if flagged_by:
                withheld.append({**entry, "flagged_by": flagged_by})
            else:
                released.append({"case": f"{CASE_PREFIX}_{len(released):04d}", **entry})
                images.append(pairs.image[i : i + 1])
                labels.append(pairs.label[i : i + 1])
        drawn += count
    if len(released) < wanted:
        LOGGER.warning(
            "release gate: %d of %d cases passed every site's audit after %d candidates "
            "(audit.max-candidate-factor = %g): the release holds %d",
            len(released),
            wanted,
            drawn,
            config.audit.max_candidate_factor,
            len(released),
        )
    if not released:
        raise AllWithheldError(
            f"nothing is released: all {drawn} candidates were flagged by a site's audit (too "
            "close to a training case), at most audit.max-candidate-factor = "
            f"{config.audit.max_candidate_factor:g} x federation.release-cases = {wanted} "
            "drawn. The model memorises its training cases: train with DP-SGD, more cases or "
            "fewer steps"
        )
    record = {
        "federated": True,
        "spaces": list(SPACES),
        "requested": wanted,
        "released": len(released),
        "candidates": drawn,
        "max_candidates": limit,
        "withheld": len(withheld),
        "audits": max((len(batches) for batches in per_site.values()), default=0),
        "sites": {site: _site_record(batches[0], batches) for site, batches in per_site.items()},
        "cases": released,
        "withheld_candidates": withheld,
    }
    return GatedRelease(SyntheticPairs(torch.cat(images), torch.cat(labels)), record)
