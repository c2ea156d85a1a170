"""Presets: valid settings, each family's own settings on top, what the quality presets hold."""

from __future__ import annotations

import pytest

from common.config import load_config
from common.errors import ConfigError
from simulations.presets import CPU_DIFFUSION, CPU_GAN, PRESETS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("family", [None, "diffusion", "gan"])
def test_every_preset_is_a_valid_config_for_each_family(name: str, family: str | None) -> None:
    config = load_config(preset(name, family))
    if family is not None:
        assert config.model.family == family


def test_family_settings_go_on_top_of_the_preset() -> None:
    diffusion, gan = preset("quality-ct", "diffusion"), preset("quality-ct", "gan")
    assert diffusion["training.learning-rate"] == CPU_DIFFUSION["training.learning-rate"]
    assert gan["training.learning-rate"] == CPU_GAN["training.learning-rate"]
    assert preset("quality-ct") == diffusion  # the preset's own family
    assert diffusion["data.target-spacing"] == gan["data.target-spacing"] == "3.0,3.0,3.0"


def test_quality_presets_hold_the_issue_settings() -> None:
    ct, mri, dp = (load_config(preset(n)) for n in ("quality-ct", "quality-mri", "quality-ct-dp"))
    for config in (ct, mri):
        assert (config.phantoms.sites, config.phantoms.cases_per_site) == (1, 40)
        assert config.data.target_shape == (32, 32, 32)
        assert not config.privacy.enabled
    assert mri.data.modality == "mri"
    assert dp.phantoms.sites == 3
    assert dp.privacy.enabled
    assert dp.privacy.target_epsilon == 8.0
    assert dp.privacy.delta == 1e-5
    assert dp.model.prior == "phantom-ct-32"
    assert load_config(preset("demo")).model.prior == "phantom-ct-32"


def test_the_prior_preset_draws_another_population() -> None:
    prior, sites = load_config(preset("prior-ct")), load_config(preset("quality-ct-dp"))
    assert prior.phantoms.anatomy_scale != sites.phantoms.anatomy_scale
    assert prior.phantoms.contrast_scale != sites.phantoms.contrast_scale
    assert prior.phantoms.noise_min > sites.phantoms.noise_max
    assert prior.phantoms.size != sites.phantoms.size
    assert prior.seed != sites.seed
    assert not prior.privacy.enabled  # public data
    for key in ("data.target-shape", "data.target-spacing", "model.channels"):
        assert preset("prior-ct")[key] == preset("quality-ct-dp")[key]


def test_unknown_presets_are_named() -> None:
    with pytest.raises(
        ConfigError, match="unknown preset 'nope': choose one of demo, gpu, prior-ct, quality-ct"
    ):
        preset("nope")
