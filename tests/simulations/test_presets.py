"""Presets: valid settings, each family's own settings on top, what the quality presets hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import shared_case

from common.config import Scalar, load_config
from common.data.nnunet import case_paths
from common.errors import ConfigError
from simulations.phantoms import write_cohort
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
    # the settings chosen on the validation split (simulations/presets.py says with what)
    assert mri.model.denoiser_output == "class-probabilities"
    assert mri.model.self_conditioning
    assert mri.model.tumour_weight == 1.0
    for config in (ct, mri):
        assert config.model.zero_terminal_snr
    assert ct.model.denoiser_output == "class-probabilities"
    assert ct.model.image_decoder == "quantiles"
    assert ct.training.amp == "bf16"
    assert ct.training.local_epochs * ct.federation.num_rounds == 40 * 3  # 1,200 steps of 4
    # the shipped prior's recipe is quality-ct's, and every preset it seeds has it
    for name in ("quality-ct-dp", "demo", "prior-ct"):
        config = load_config(preset(name))
        assert config.model.denoiser_output == ct.model.denoiser_output
        assert config.model.self_conditioning
        assert config.model.zero_terminal_snr
        assert config.model.image_decoder == "quantiles"
        assert config.model.tumour_weight == ct.model.tumour_weight
    assert dp.phantoms.sites == 3
    assert dp.privacy.enabled
    assert dp.privacy.target_epsilon == 8.0
    assert dp.privacy.delta == 1e-5
    assert dp.model.prior == "phantom-ct-32"
    assert load_config(preset("demo")).model.prior == "phantom-ct-32"


def test_the_one_site_gan_learns_from_real_pairs_and_the_dp_gan_does_not() -> None:
    """Without DP the GAN learns from real pairs and calibrates its label volumes to the
    sites' means (quality-ct and quality-mri); DP-SGD forbids all three (each hands
    the generator something of the site's data that the accountant does not cover)."""
    for name in ("quality-ct", "quality-mri"):
        gan = load_config(preset(name, "gan"))
        assert gan.model.l1_weight == 100.0
        assert gan.model.feature_matching_weight == 10.0
        assert gan.training.local_epochs * gan.federation.num_rounds == 55 * 3  # 1,650 steps
        assert gan.model.tumour_calibration_cases == 48
        assert gan.model.label_calibration_tries == 4
    for name in ("quality-ct-dp", "demo"):
        gan = load_config(preset(name, "gan"))
        assert gan.privacy.enabled
        assert gan.model.l1_weight == gan.model.feature_matching_weight == 0.0
        assert gan.model.tumour_calibration_cases == 0


def test_quality_mri_calibrates_both_families_on_48_samples() -> None:
    """A glioma model draws no tumour in a third of its cases, so one mean over 24 draws was
    off by a third (README, "Presets and the quality benchmark"): both families average 48."""
    for family in ("diffusion", "gan"):
        config = load_config(preset("quality-mri", family))
        assert config.model.tumour_calibration_cases == 48
        assert config.model.label_calibration_tries > 0


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


def _core_cm3(settings: dict[str, Scalar], folder: Path) -> np.ndarray:
    """Tumour-core volumes (necrotic + enhancing labels) of 10 phantoms drawn like that."""
    drawn = {k: v for k, v in settings.items() if k.startswith("phantoms.")}
    config = load_config(
        {**drawn, "data.modality": "mri", "phantoms.sites": 1, "phantoms.cases-per-site": 10}
    )
    write_cohort(config, folder)
    volumes = []
    labels = case_paths(folder / "site-01", "any")[1].parent
    for path in sorted(labels.iterdir()):
        label = sitk.ReadImage(str(path))
        core = np.isin(sitk.GetArrayFromImage(label), (1, 3)).sum()
        volumes.append(core * np.prod(label.GetSpacing()) / 1000.0)
    return np.array(volumes)


def test_quality_mri_draws_gliomas_of_the_real_case_size(tmp_path: Path) -> None:
    real = sitk.ReadImage(str(shared_case("real", "pyradiomics-brain1", "brain1_label.nrrd")))
    real_cm3 = (sitk.GetArrayFromImage(real) == 1).sum() * np.prod(real.GetSpacing()) / 1000.0
    assert real_cm3 == pytest.approx(16.4, abs=0.1)  # 4,137 voxels of 0.78 x 0.78 x 6.5 mm
    settings = preset("quality-mri")
    quality = _core_cm3(settings, tmp_path / "quality")
    small = {
        **settings,
        "phantoms.tumour-radius-min-mm": 6.0,
        "phantoms.tumour-radius-max-mm": 16.0,
    }
    default = _core_cm3(small, tmp_path / "default")
    assert quality.min() < real_cm3 < quality.max()
    # radii uniform in 10-20 mm against 6-16: E[r^3] = (20^4 - 10^4) / (16^4 - 6^4) = 2.33x
    assert 1.8 < quality.mean() / default.mean() < 3.0
