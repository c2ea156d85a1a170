"""The tumour-volume calibration: the shift search by hand, and on a real (untrained) model."""

from __future__ import annotations

import math

import pytest
import torch
from model_support import tiny_config

from common.errors import ConfigError
from common.models.calibration import (
    SHIFT_BOUND,
    calibrate_tumour_volume,
    mean_tumour_voxels,
    search_shift,
)
from common.models.diffusion import DiffusionModel
from common.models.registry import build_model

CALIBRATED = {
    "model.family": "diffusion",
    "model.denoiser-output": "class-probabilities",
    "model.diffusion-steps": 10,
    "model.sampling-steps": 2,
    "model.tumour-calibration-cases": 2,
    "privacy.enabled": False,
}


def test_the_search_by_hand() -> None:
    """volume(s) = 50 e^(3s), target 400. Try 0: 50; g0 = ln 51 - ln 401 = -2.06221, so the
    first step assumes a slope of 2: s1 = 1.03107, volume 1,102.4, g1 = ln 1103.4 - ln 401
    = 1.01217; the secant: s2 = s1 - g1 (s1 - 0) / (g1 - g0) = 0.69160, volume 398.2."""
    found = search_shift(lambda s: 50 * math.exp(3 * s), 400.0, tolerance=0.1, tries=6)
    assert [s for s, _ in found.tried] == pytest.approx([0.0, 1.03107, 0.69160], abs=1e-5)
    assert found.shift == pytest.approx(0.69160, abs=1e-5)
    assert found.volume == pytest.approx(398.2, abs=0.1)
    assert found.to_json()["tumour_logit_shift"] == found.shift


def test_a_volume_already_close_is_kept_and_the_tries_are_a_limit() -> None:
    found = search_shift(lambda s: 105.0 + 100 * s, 100.0, tolerance=0.1, tries=6)
    assert (found.shift, found.tried) == (0.0, [(0.0, 105.0)])
    limited = search_shift(lambda s: 50 * math.exp(3 * s), 400.0, tolerance=0.0, tries=2)
    assert len(limited.tried) == 2
    assert limited.shift == pytest.approx(1.03107, abs=1e-5)  # 1,102 is closer than 50


def test_an_unreachable_target_stops_at_the_bound_with_the_closest_try() -> None:
    """No tumour at any shift: s1 = ln 301 / 2 = 2.85356, then flat, so the step doubles, to
    the bound; one more would repeat it."""
    found = search_shift(lambda s: 0.0, 300.0, tolerance=0.1, tries=10)
    assert [s for s, _ in found.tried] == pytest.approx([0.0, 2.85356, SHIFT_BOUND], abs=1e-5)
    assert found.shift == 0.0  # every try equally far: the first


def test_the_search_bisects_when_a_secant_step_leaves_the_bracket() -> None:
    """A step function, 10 voxels below a shift of 0.3 and 1,000 above, target 100: never
    within tolerance, so all 8 tries are spent closing the bracket around 0.3."""
    found = search_shift(lambda s: 10.0 if s < 0.3 else 1000.0, 100.0, tolerance=0.1, tries=8)
    assert len(found.tried) == 8
    below = max(s for s, v in found.tried if v == 10.0)
    above = min(s for s, v in found.tried if v == 1000.0)
    assert below < 0.3 <= above
    assert above - below < 0.1
    assert found.volume == 10.0  # |ln 11 - ln 101| < |ln 1001 - ln 101|


def test_bad_search_arguments() -> None:
    with pytest.raises(ValueError, match="target -1"):
        search_shift(lambda s: 1.0, -1.0, tolerance=0.1, tries=3)
    with pytest.raises(ValueError, match="tries 0"):
        search_shift(lambda s: 1.0, 1.0, tolerance=0.1, tries=0)
    with pytest.raises(ValueError, match="no label maps"):
        mean_tumour_voxels([], (1,))


def test_mean_tumour_voxels_counts_every_tumour_label() -> None:
    labels = torch.zeros((2, 4, 4, 4), dtype=torch.long)
    labels[0, :2, :2, :2] = 1  # 8 voxels of label 1
    labels[1, 0, 0, :3] = 3  # 3 voxels of label 3
    labels[1, 3, 3, 3] = 2  # not a tumour label here
    assert mean_tumour_voxels(labels, (1, 3)) == pytest.approx((8 + 3) / 2)


def test_an_untrained_model_is_calibrated_to_a_whole_volume_of_tumour() -> None:
    """Zero logits draw air everywhere (0 tumour voxels); any positive shift makes the tumour
    the argmax everywhere (16^3 = 4,096 voxels). Target 4,096: 0 -> 0 voxels, then the first
    step, ln 4097 / 2 = 4.15901 -> 4,096."""
    config = tiny_config(**CALIBRATED)
    model = build_model(config)
    assert isinstance(model, DiffusionModel)
    calibrated, found = calibrate_tumour_volume(model, config, 4096.0)
    assert found.tried == [(0.0, 0.0), (pytest.approx(math.log(4097) / 2), 4096.0)]
    assert calibrated.model.tumour_logit_shift == model.config.tumour_logit_shift == found.shift
    assert int((model.sample(1, torch.Generator().manual_seed(0)).label == 1).sum()) == 4096


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"privacy.enabled": True}, "must be 0 with DP-SGD"),
        ({"model.denoiser-output": "velocity"}, "needs model.family = diffusion and"),
        ({"model.family": "gan"}, "needs model.family = diffusion and"),
        ({"model.tumour-calibration-cases": -1}, "model.tumour-calibration-cases"),
        ({"model.tumour-calibration-tries": 0}, "model.tumour-calibration-tries"),
    ],
)
def test_calibration_settings_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(**{**CALIBRATED, **overrides})  # type: ignore[arg-type]
