"""Membership inference against memorisers and their DP-SGD twins (issue 12).

For each family (GAN, diffusion), a model is trained on 4 phantom CT cases for many steps
without DP (a memoriser) and again with DP-SGD at ``--epsilon``; the attack of
``common.audit.membership`` then scores those 4 members against 4 held-out cases of the same
site profile (the same scanner and patients drawn alike, so only membership differs). Each
arm reports its ROC AUC with the bootstrap interval, its steps, epsilon and seconds.

    python -m bench.membership [--gan-steps 100 --diffusion-steps 300 --epsilon 8]

Results go to bench/results.json under "membership".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import save
from client.training import train_local
from common.audit.inputs import load_real_cases
from common.audit.membership import membership_attack
from common.config import FedsynthConfig, Scalar, load_config
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.models.registry import build_model
from common.privacy.ledger import PrivacyLedger
from simulations.phantoms import make_case, site_profiles
from simulations.phantoms.writers import write_case, write_dataset_json

CASES = 4
"""Members and non-members each."""
SETTINGS: dict[str, Scalar] = {
    "seed": 12,
    "phantoms.size": 8,
    "data.target-shape": "8,8,8",
    "data.target-spacing": "25,25,25",
    "model.channels": "8,16",
    "model.norm-groups": 4,
    "training.batch-size": CASES,
    "privacy.budget-epsilon": 1000.0,
}
"""A small grid (8^3, 25 mm) where a few hundred CPU steps memorise 4 cases."""
FAMILIES: dict[str, dict[str, Scalar]] = {
    "gan": {"model.family": "gan"},
    "diffusion": {"model.family": "diffusion"},
}


def split_site(config: FedsynthConfig, root: Path) -> tuple[Path, Path]:
    """Two site folders of ``CASES`` phantoms each, drawn from one site profile: the members
    (cases 0-3) and the held-out cases (4-7)."""
    profile = site_profiles("ct", config)[0]
    folders = (root / "members", root / "holdout")
    for half, folder in enumerate(folders):
        folder.mkdir(parents=True)
        for index in range(half * CASES, (half + 1) * CASES):
            write_case(make_case("ct", profile, index, config), folder, "nnunet")
        write_dataset_json(folder, "ct", profile.name, CASES)
    return folders


def arm(family: str, private: bool, steps: int, epsilon: float, root: Path) -> dict[str, Any]:
    """Train one model on the members and attack it."""
    settings = {
        **SETTINGS,
        **FAMILIES[family],
        "training.local-epochs": steps,
        "privacy.enabled": private,
        "privacy.target-epsilon": epsilon,
    }
    config = load_config(settings)
    work = root / f"{family}-{'dp' if private else 'plain'}"
    members_dir, holdout_dir = split_site(config, work / "sites")
    prepare_site(members_dir, work / "cache", config.data)
    dataset = CachedCases(work / "cache")
    ledger = None
    if private:
        ledger = PrivacyLedger.for_cache(work / "ledger", dataset.index, config.privacy)
    model = build_model(config)
    started = time.perf_counter()
    outcome = train_local(
        model, dataset, config, stage=("bench-membership",), ledger=ledger, run_id=work.name
    )
    seconds = time.perf_counter() - started
    members, _ = load_real_cases(members_dir, config)
    holdout, _ = load_real_cases(holdout_dir, config)
    model.train_mode(False)
    result = membership_attack(model, members, holdout, config.audit, config.seed)
    print(f"{family} {'DP' if private else 'no DP'}: {result.sentence()}", flush=True)
    return {
        **result.to_json(),
        "steps": outcome.steps,
        "epsilon": outcome.epsilon,
        "noise_multiplier": outcome.noise_multiplier,
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    """Train and attack every arm; write bench/results.json's "membership"."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gan-steps", type=int, default=100)
    parser.add_argument("--diffusion-steps", type=int, default=300)
    parser.add_argument("--epsilon", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    steps = {"gan": args.gan_steps, "diffusion": args.diffusion_steps}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for family in FAMILIES:
            for private in (False, True):
                key = f"{family}-{'dp' if private else 'no-dp'}"
                results[key] = arm(family, private, steps[family], args.epsilon, Path(folder))
                save(  # after every arm: a long run that is stopped keeps what it measured
                    "membership",
                    {
                        "cases": {"members": CASES, "non_members": CASES},
                        "grid": SETTINGS["data.target-shape"],
                        "target_epsilon": args.epsilon,
                        "arms": results,
                    },
                )


if __name__ == "__main__":
    main()
