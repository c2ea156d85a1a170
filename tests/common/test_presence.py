"""Sampling with the tumour's presence drawn first: redraws by hand on a scripted model, the
calibration sampling by the same rule, what a site sends for it, and its settings."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import cast

import pytest
import torch
from model_support import CALIBRATED, tiny_cohort, tiny_config

from common.config import ModelConfig, Scalar
from common.data.dataset import CachedCases
from common.errors import ConfigError
from common.exchange import TUMOUR_PRESENT_KEY, TUMOUR_VOXELS_KEY
from common.models.calibration import (
    VolumeTargets,
    calibrate_tumour_volume,
    site_volume_metrics,
    volume_targets,
)
from common.models.diffusion import DiffusionModel
from common.models.interface import GenerativeModel, SyntheticPairs
from common.models.presence import has_tumour, sample_with_presence
from common.models.registry import build_model

SHAPE = (2, 2, 2)
CT_TUMOUR = 1
"""The CT schema's tumour label (3 classes with the background: tumour, bone)."""


class ScriptedModel:
    """Draws the cases of a script in order: a tumour voxel or none (bone instead), and an
    image filled with the draw's number, so that a test can tell which draw ended where."""

    def __init__(self, script: list[bool], presence: float, redraws: int) -> None:
        self.config = dataclasses.replace(
            ModelConfig(), tumour_presence=presence, tumour_presence_redraws=redraws
        )
        self.num_classes = 3
        self.script = script
        self.drawn = 0
        self.calls: list[int] = []

    def sample(self, n: int, generator: torch.Generator) -> SyntheticPairs:
        self.calls.append(n)
        labels = torch.full((n, *SHAPE), 2, dtype=torch.long)
        images = torch.zeros((n, 1, *SHAPE))
        for i in range(n):
            if self.script[self.drawn]:
                labels[i, 0, 0, 0] = CT_TUMOUR
            images[i] = self.drawn
            self.drawn += 1
        return SyntheticPairs(images, labels)


def _sample(model: ScriptedModel, n: int, seed: int = 0) -> SyntheticPairs:
    return sample_with_presence(
        cast(GenerativeModel, model), n, torch.Generator().manual_seed(seed)
    )


def _draws(pairs: SyntheticPairs) -> list[int]:
    return [int(image.flatten()[0]) for image in pairs.image]


def test_cases_without_the_drawn_tumour_are_drawn_again_together() -> None:
    """Every case wants a tumour. Draws 0-3 are T F T F: cases 1 and 3 are redrawn together
    (draws 4, 5 = F T), then case 1 alone (draw 6 = T)."""
    model = ScriptedModel([True, False, True, False, False, True, True], 1.0, redraws=2)
    pairs = _sample(model, 4)
    assert model.calls == [4, 2, 1]
    assert _draws(pairs) == [0, 6, 2, 5]
    assert has_tumour(pairs.label, (CT_TUMOUR,)).tolist() == [True] * 4


def test_the_redraws_are_a_limit() -> None:
    """Draws F F, then one redraw of both: F T. Case 0 keeps its last draw, without a tumour."""
    model = ScriptedModel([False, False, False, True], 1.0, redraws=1)
    pairs = _sample(model, 2)
    assert model.calls == [2, 2]
    assert _draws(pairs) == [2, 3]
    assert has_tumour(pairs.label, (CT_TUMOUR,)).tolist() == [False, True]


def test_each_case_draws_its_presence_at_the_set_rate() -> None:
    """Rate 0.5: the presence each case wants is the generator's first n uniforms below 0.5;
    every first draw has a tumour, every redraw none, so each case ends as it wanted."""
    wanted = (torch.rand(8, generator=torch.Generator().manual_seed(7)) < 0.5).tolist()
    assert 0 < sum(wanted) < 8  # a mix, for this seed
    model = ScriptedModel([True] * 8 + [False] * 8, 0.5, redraws=1)
    pairs = _sample(model, 8, seed=7)
    assert has_tumour(pairs.label, (CT_TUMOUR,)).tolist() == wanted
    assert model.calls == [8, 8 - sum(wanted)]


def test_without_redraws_the_model_samples_once_and_the_generator_is_untouched() -> None:
    model = ScriptedModel([False, False], 1.0, redraws=0)
    generator = torch.Generator().manual_seed(1)
    before = generator.get_state()
    pairs = sample_with_presence(cast(GenerativeModel, model), 2, generator)
    assert model.calls == [2]
    assert _draws(pairs) == [0, 1]
    assert torch.equal(generator.get_state(), before)


PRESENCE: dict[str, Scalar] = {**CALIBRATED, "model.tumour-presence-redraws": 2}


def test_the_calibration_samples_with_the_sites_presence(monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrained CT model draws air everywhere at shift 0. The sites' cases all have a
    tumour (4,096 voxels): at shift 0 both calibration cases are drawn again twice (3 calls),
    still without one (0 voxels); the next shift, ln 4097 / 2, draws tumour everywhere at the
    first draw (1 call). The rate found is the model's from then on."""
    config = tiny_config(**PRESENCE)
    model = build_model(config)
    assert isinstance(model, DiffusionModel)
    calls: list[int] = []
    sample = model.sample

    def counted(n: int, generator: torch.Generator) -> SyntheticPairs:
        calls.append(n)
        return sample(n, generator)

    monkeypatch.setattr(model, "sample", counted)
    calibrated, found = calibrate_tumour_volume(model, config, VolumeTargets(4096.0, {}, 1.0))
    assert calls == [2, 2, 2, 2]
    assert found.tried == [(0.0, 0.0), (pytest.approx(math.log(4097) / 2), 4096.0)]
    assert (found.presence, found.to_json()["tumour_presence"]) == (1.0, 1.0)
    assert calibrated.model.tumour_presence == model.config.tumour_presence == 1.0
    none_wanted, found = calibrate_tumour_volume(model, config, VolumeTargets(0.0, {}, 0.0))
    assert found.tried == [(0.0, 0.0)]
    assert none_wanted.model.tumour_presence == 0.0  # the sites' rate, not the setting's 1.0


def test_a_site_sends_the_fraction_of_its_cases_with_a_tumour(tmp_path: Path) -> None:
    """Three phantom cases, the tumour erased from one: 2/3. Without redraws it is not sent."""
    config = tiny_config(**{**PRESENCE, "phantoms.cases-per-site": 3})
    cases = tiny_cohort(tmp_path, config)
    pairs = [cases[i] for i in range(len(cases))]
    image, label = pairs[0]
    pairs[0] = (image, torch.where(label == CT_TUMOUR, torch.zeros_like(label), label))
    assert all(bool((lab == CT_TUMOUR).any()) for _, lab in pairs[1:])
    sent = site_volume_metrics(cast(CachedCases, pairs), config)
    assert sent[TUMOUR_PRESENT_KEY] == pytest.approx(2 / 3)
    off = tiny_config(**{**PRESENCE, "model.tumour-presence-redraws": 0})
    assert TUMOUR_PRESENT_KEY not in site_volume_metrics(cast(CachedCases, pairs), off)


def test_the_presence_target_is_read_from_the_aggregated_metrics() -> None:
    config = tiny_config(**PRESENCE)
    metrics = {TUMOUR_VOXELS_KEY: 6.0, TUMOUR_PRESENT_KEY: 0.75}
    assert volume_targets(metrics, config) == VolumeTargets(6.0, {}, 0.75)
    assert volume_targets({TUMOUR_VOXELS_KEY: 6.0}, config) is None  # the fraction missing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.tumour-presence": 1.5}, "model.tumour-presence"),
        ({"model.tumour-presence": -0.1}, "model.tumour-presence"),
        ({"model.tumour-presence-redraws": 21}, "model.tumour-presence-redraws"),
        ({"model.tumour-presence-redraws": -1}, "model.tumour-presence-redraws"),
    ],
)
def test_presence_settings_are_checked(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(**{**PRESENCE, **overrides})
