"""Membership inference against memorisers and their DP-SGD twins (issue 12).

For each family (GAN, diffusion) and seed, a model is trained on ``MEMBERS`` phantom CT cases
for many steps without DP (a memoriser) and again, with the same settings, with DP-SGD at
``--epsilon`` (its twin); the attack of ``common.audit.membership`` then scores those members
against ``--non-members`` held-out cases of the same site profile (the same scanner, patients
drawn alike, so that only membership differs). Each arm reports its ROC AUC with the bootstrap
interval, its steps, epsilon, noise multiplier, training's wall and CPU seconds (on a shared
machine the CPU seconds, with one torch thread, say what the training costs; the wall seconds
also what else ran: the load average at its start is kept beside them); each family and arm the
mean AUC
over the seeds. tests/client/test_memorisers.py runs one seed of these settings.

    python -m bench.membership [--seeds 1,2,3,4 --non-members 8 --epsilon 8]

Results go to bench/results.json under "membership".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import save
from client.training import TrainingOutcome, train_local
from common.audit.inputs import load_real_cases
from common.audit.membership import Membership, membership_attack
from common.config import FedsynthConfig, Scalar, load_config
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.models.registry import build_model
from common.privacy.ledger import PrivacyLedger
from simulations.phantoms import make_case, site_profiles
from simulations.phantoms.writers import write_case, write_dataset_json

MEMBERS = 4
"""The issue's memorisers train on 4 cases: one batch, every step sees all of them."""
GRID: dict[str, Scalar] = {
    "phantoms.size": 8,
    "data.target-shape": "8,8,8",
    "data.target-spacing": "25,25,25",
    "training.batch-size": MEMBERS,
}
"""8^3 phantoms at 25 mm: a step costs milliseconds, so a few hundred steps (a memoriser) and
their DP-SGD twin fit in the default test suite."""
FAMILIES: dict[str, dict[str, Scalar]] = {
    "gan": {
        **GRID,
        "model.family": "gan",
        "model.channels": "8,16",
        "model.norm-groups": 4,
        "training.local-epochs": 300,
    },
    "diffusion": {
        **GRID,
        "model.family": "diffusion",
        "model.channels": "16,32",
        "model.norm-groups": 4,
        "model.denoiser-output": "class-probabilities",
        "model.diffusion-steps": 100,
        "model.tumour-weight": 0.0,
        "audit.membership-timesteps": "10,30,60",
        "training.learning-rate": 1e-3,
        "training.local-epochs": 120,
    },
}
"""Per family, what makes a memoriser in few steps (measured with 8 non-members).
GAN: at the default learning rates the discriminator tells its 4 training pairs from others
within 100-300 steps; AUC 1.0 at 300 steps on seeds 1-8 (0.88-1.0 at 200, as the generator
catches up now and then). Diffusion, where the defaults reached only AUC 0.69-0.75 after
200-300 steps (seed 12): a class-probabilities denoiser (cross-entropy) at learning rate 1e-3,
100 diffusion steps so that every level is trained often, channels 16-32, attack timesteps 10,
30 and 60 of the 100, and no tumour weight: with weight 5, each case's tumour size ranked its
loss more than membership did (seed 2 at 100 steps: AUC 0.78 at every timestep from 5 to 95;
0.94 without); AUC 0.94-1.0 at 120 steps on seeds 1-6."""


@dataclass(frozen=True)
class Arm:
    """One model trained on the members and attacked."""

    membership: Membership
    outcome: TrainingOutcome
    seconds: float
    """Training's wall time."""
    cpu_seconds: float
    """Training's CPU time (this process)."""
    load_average: float
    """The machine's 1-minute load average when training started."""


def split_site(config: FedsynthConfig, root: Path, non_members: int) -> tuple[Path, Path]:
    """Two site folders of phantoms of one site profile: ``MEMBERS`` cases to train on
    (cases 0-3) and ``non_members`` held-out cases (the next ones)."""
    profile = site_profiles("ct", config)[0]
    halves = (
        (root / "members", range(MEMBERS)),
        (root / "holdout", range(MEMBERS, MEMBERS + non_members)),
    )
    for folder, indices in halves:
        folder.mkdir(parents=True)
        for index in indices:
            write_case(make_case("ct", profile, index, config), folder, "nnunet")
        write_dataset_json(folder, "ct", profile.name, len(indices))
    return halves[0][0], halves[1][0]


def train_and_attack(settings: dict[str, Scalar], root: Path, non_members: int) -> Arm:
    """Train a model of ``settings`` on ``MEMBERS`` phantoms, with DP-SGD and a fresh ledger
    when ``privacy.enabled``, and attack it with ``non_members`` held-out phantoms."""
    config = load_config(settings)
    members_dir, holdout_dir = split_site(config, root / "sites", non_members)
    prepare_site(members_dir, root / "cache", config.data)
    dataset = CachedCases(root / "cache")
    ledger = None
    if config.privacy.enabled:
        ledger = PrivacyLedger.for_cache(root / "ledger", dataset.index, config.privacy)
    model = build_model(config)
    load_average = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = train_local(
        model, dataset, config, stage=("bench-membership",), ledger=ledger, run_id=root.name
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    members, _ = load_real_cases(members_dir, config)
    holdout, _ = load_real_cases(holdout_dir, config)
    model.train_mode(False)
    return Arm(
        membership_attack(model, members, holdout, config.audit, config.seed),
        outcome,
        seconds,
        cpu_seconds,
        load_average,
    )


def twin_settings(family: str, seed: int, epsilon: float | None) -> dict[str, Scalar]:
    """``FAMILIES[family]`` at ``seed``: without DP (the memoriser) when ``epsilon`` is None,
    else with DP-SGD at that epsilon (its twin, budgeted exactly that)."""
    settings: dict[str, Scalar] = {**FAMILIES[family], "seed": seed, "privacy.enabled": False}
    if epsilon is not None:
        settings |= {
            "privacy.enabled": True,
            "privacy.target-epsilon": epsilon,
            "privacy.budget-epsilon": epsilon,
        }
    return settings


def arm_json(arm: Arm, seed: int) -> dict[str, Any]:
    """One arm's figures for bench/results.json."""
    return {
        **arm.membership.to_json(),
        "seed": seed,
        "steps": arm.outcome.steps,
        "epsilon": arm.outcome.epsilon,
        "noise_multiplier": arm.outcome.noise_multiplier,
        "train_seconds": round(arm.seconds, 1),
        "train_cpu_seconds": round(arm.cpu_seconds, 1),
        "load_average_1min_at_start": round(arm.load_average, 2),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean, minimum and maximum AUC of an arm's seeds."""
    aucs = np.array([run["auc"] for run in runs])
    return {
        "seeds": len(runs),
        "mean_auc": float(aucs.mean()),
        "min_auc": float(aucs.min()),
        "max_auc": float(aucs.max()),
    }


def main() -> None:
    """Train and attack every family, arm and seed; write bench/results.json's "membership"."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--non-members", type=int, default=8)
    parser.add_argument("--epsilon", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the test suite's workers, whose seeds these runs repeat
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for family in FAMILIES:
            for name, epsilon in (("no-dp", None), ("dp", args.epsilon)):
                key = f"{family}-{name}"
                for seed in seeds:
                    root = Path(folder) / f"{key}-{seed}"
                    arm = train_and_attack(
                        twin_settings(family, seed, epsilon), root, args.non_members
                    )
                    print(f"{key} seed {seed}: {arm.membership.sentence()}", flush=True)
                    runs.setdefault(key, []).append(arm_json(arm, seed))
                    save(  # after every arm: a long run that is stopped keeps what it measured
                        "membership",
                        {
                            "cases": {"members": MEMBERS, "non_members": args.non_members},
                            "grid": GRID["data.target-shape"],
                            "target_epsilon": args.epsilon,
                            "settings": FAMILIES,
                            "summary": {k: summary(v) for k, v in runs.items()},
                            "arms": runs,
                        },
                    )


if __name__ == "__main__":
    main()
