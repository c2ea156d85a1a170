"""Named bundles of run settings for simulations on one machine.

A preset is a plain run config: the user's ``--config`` and ``--run-config`` are applied on top.
"""

from __future__ import annotations

from common.config import Scalar
from common.errors import ConfigError

PRESETS: dict[str, dict[str, Scalar]] = {
    # The README's main job: three small hospitals of head-and-neck CT, CPU-sized volumes,
    # a few rounds with DP-SGD whose noise is set so the whole run spends epsilon 8 per site.
    "demo": {
        "data.modality": "ct",
        "phantoms.sites": 3,
        "phantoms.cases-per-site": 8,
        "phantoms.size": 32,
        "data.target-shape": "32,32,32",
        "data.target-spacing": "6.25,6.25,6.25",  # the 200 mm reference field of view
        "model.family": "diffusion",
        "model.channels": "16,32,32",
        "model.sampling-steps": 25,
        "training.batch-size": 2,
        "training.local-epochs": 2,
        "federation.num-rounds": 3,
        "federation.min-sites": 3,
        "federation.release-cases": 4,
        "privacy.target-epsilon": 8.0,
    },
    # The smallest run that still goes through every step, for tests.
    "smoke": {
        "data.modality": "ct",
        "phantoms.sites": 2,
        "phantoms.cases-per-site": 2,
        "phantoms.size": 16,
        "data.target-shape": "16,16,16",
        "data.target-spacing": "12.5,12.5,12.5",
        "model.channels": "8,16",
        "model.norm-groups": 4,
        "model.sampling-steps": 5,
        "training.batch-size": 1,
        "training.max-steps": 2,
        "federation.num-rounds": 2,
        "federation.release-cases": 2,
        "privacy.target-epsilon": 8.0,
    },
}


def preset(name: str) -> dict[str, Scalar]:
    """The run settings of preset ``name``.

    Raises:
        ConfigError: no preset has that name (the known ones are listed).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])
