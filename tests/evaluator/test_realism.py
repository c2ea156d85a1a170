"""Realism metrics: MAE inside the body, 3D MS-SSIM settings, paired MS-SSIM and diversity."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import numpy as np
import pytest
import torch
from monai.metrics.regression import compute_ms_ssim
from scipy import ndimage

from common.config import DataConfig
from common.errors import FedsynthError
from evaluator.realism import (
    MONAI_KERNEL_SIGMA,
    MONAI_KERNEL_SIZE,
    MONAI_WEIGHTS,
    SSIM_K1,
    SSIM_K2,
    MsssimSettings,
    RealismError,
    body_mask,
    diversity,
    msssim,
    msssim_settings,
    paired_mae,
    paired_msssim,
    pairwise_msssim,
    sample_pairs,
)

CT_WINDOW = (-1024.0, 2048.0)
AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 700.0
TEXTURE_HU = 30.0


def _ellipsoid(size: int, radii: tuple[float, float, float]) -> np.ndarray:
    centre = (size - 1) / 2
    z, y, x = np.ogrid[:size, :size, :size]
    rz, ry, rx = (radius * size for radius in radii)
    return np.asarray(
        ((z - centre) / rz) ** 2 + ((y - centre) / ry) ** 2 + ((x - centre) / rx) ** 2 <= 1
    )


def _body(size: int) -> np.ndarray:
    return _ellipsoid(size, (0.35, 0.4, 0.3))


def _ct(size: int = 32, seed: int = 0) -> np.ndarray:
    """A head-like CT in integer HU: air, soft tissue with smooth texture, a bone shell."""
    rng = np.random.default_rng(seed)
    body = _body(size)
    shell = body & ~_ellipsoid(size, (0.28, 0.33, 0.23))
    texture = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), sigma=1.5)
    texture *= TEXTURE_HU / texture.std()
    image = np.full((size,) * 3, AIR_HU)
    image[body] = SOFT_TISSUE_HU + texture[body]
    image[shell] = BONE_HU
    return np.round(image).astype(np.float32)


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    return _ct()


@pytest.fixture(scope="module")
def settings() -> MsssimSettings:
    return msssim_settings((32, 32, 32), CT_WINDOW)


# ---- MAE ----------------------------------------------------------------------------------------


def test_identical_images_have_mae_zero(ct: np.ndarray) -> None:
    assert paired_mae(ct, ct.copy(), _body(32)) == 0.0


def test_constant_offset_inside_body_gives_mae_of_that_offset(ct: np.ndarray) -> None:
    body = _body(32)
    synthetic = ct.copy()
    synthetic[body] += 10.0
    assert paired_mae(ct, synthetic, body) == 10.0
    assert paired_mae(ct, 2 * ct - synthetic, body) == 10.0  # -10 HU counts the same


def test_mae_averages_absolute_differences_over_body_voxels_only() -> None:
    real = np.zeros((16, 16, 16), dtype=np.float32)
    body = np.zeros(real.shape, dtype=np.uint8)
    body[4:6, 4:6, 4:6] = 1  # 8 voxels, an integer mask
    synthetic = real.copy()
    synthetic[4:6, 4:6, 4:6] = np.array([1, -2, 3, -4, 5, -6, 7, -8]).reshape(2, 2, 2)
    assert paired_mae(real, synthetic, body) == 4.5  # (1 + 2 + ... + 8) / 8
    synthetic[0, 0, 0] = 1000.0
    synthetic[15, 15, 15] = np.nan  # outside the body: neither counted nor an error
    assert paired_mae(real, synthetic, body) == 4.5


def test_body_mask_of_ct_is_the_body_above_the_air_threshold(ct: np.ndarray) -> None:
    mask = body_mask(ct, DataConfig())
    np.testing.assert_array_equal(mask, _body(32))


def test_body_mask_of_mri_is_above_a_fraction_of_the_robust_max() -> None:
    head = _ellipsoid(24, (0.35, 0.35, 0.35))
    image = np.where(head, 100.0, 2.0).astype(np.float32)  # 2 < 0.1 * 100: background
    image[12, 12, 12] = 5000.0  # one very bright voxel does not move the 99th percentile
    mask = body_mask(image, dataclasses.replace(DataConfig(), modality="mri"))
    np.testing.assert_array_equal(mask, head)


# ---- MS-SSIM settings ---------------------------------------------------------------------------


def test_module_constants_are_monai_defaults() -> None:
    defaults = inspect.signature(compute_ms_ssim).parameters
    assert defaults["weights"].default == MONAI_WEIGHTS
    assert defaults["kernel_size"].default == MONAI_KERNEL_SIZE
    assert defaults["kernel_sigma"].default == MONAI_KERNEL_SIGMA
    assert (defaults["k1"].default, defaults["k2"].default) == (SSIM_K1, SSIM_K2)


@pytest.mark.parametrize(
    ("side", "scales", "kernel"),
    [(16, 2, 7), (32, 3, 7), (64, 4, 7), (128, 5, 7), (160, 5, 9), (175, 5, 9), (200, 5, 11)],
)
def test_settings_fit_the_volume(side: int, scales: int, kernel: int) -> None:
    chosen = msssim_settings((side, side, side), CT_WINDOW)
    assert (chosen.scales, chosen.kernel_size) == (scales, kernel)
    assert side // 2 ** (chosen.scales - 1) >= chosen.kernel_size  # coarsest level holds window
    assert side // max(1, chosen.scales - 1) ** 2 >= chosen.kernel_size  # MONAI's own check
    assert chosen.kernel_sigma == pytest.approx(1.5 * kernel / 11)
    assert sum(chosen.weights) == pytest.approx(sum(MONAI_WEIGHTS) if scales == 5 else 1.0)
    ratios = np.asarray(chosen.weights) / np.asarray(MONAI_WEIGHTS[:scales])
    np.testing.assert_allclose(ratios, ratios[0])  # MONAI's weights, rescaled together
    assert chosen.data_range == 3072.0


def test_monai_defaults_from_176_voxels_and_not_below() -> None:
    for side in (176, 177, 256):
        chosen = msssim_settings((side, side, side), CT_WINDOW)
        assert (chosen.kernel_size, chosen.kernel_sigma) == (11, 1.5)
        assert chosen.weights == MONAI_WEIGHTS
    assert msssim_settings((175, 175, 175), CT_WINDOW).kernel_size < 11
    too_small = torch.zeros(1, 1, 175, 175, 175)  # MONAI's check rejects it before computing
    with pytest.raises(ValueError, match=r"larger than 160"):
        compute_ms_ssim(too_small, too_small, spatial_dims=3)


def test_smallest_side_decides_and_monai_accepts_every_small_side() -> None:
    assert msssim_settings((16, 64, 64), CT_WINDOW) == msssim_settings((16, 16, 16), CT_WINDOW)
    rng = np.random.default_rng(1)
    for side in range(5, 41):
        shape = (side, side + 3, side + 8)
        volume = rng.normal(0.0, 200.0, shape).astype(np.float32)
        value = msssim(volume, volume + 20.0, msssim_settings(shape, CT_WINDOW))
        assert 0.0 < value < 1.0


def test_settings_record_their_choice_as_json(settings: MsssimSettings) -> None:
    recorded = settings.to_json()
    assert recorded["kernel_size"] == 7
    assert recorded["scales"] == 3
    assert recorded["window"] == [-1024.0, 2048.0]
    assert recorded["data_range"] == 3072.0
    assert recorded["weights"] == pytest.approx([0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305])


# ---- MS-SSIM ------------------------------------------------------------------------------------


def test_identical_volumes_have_msssim_one(ct: np.ndarray, settings: MsssimSettings) -> None:
    assert msssim(ct, ct.copy(), settings) == pytest.approx(1.0, abs=1e-6)


def test_msssim_falls_as_noise_grows(ct: np.ndarray, settings: MsssimSettings) -> None:
    noise = np.random.default_rng(2).normal(size=ct.shape).astype(np.float32)
    values = [msssim(ct, ct + std * noise, settings) for std in (5.0, 20.0, 80.0, 320.0, 1000.0)]
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[0] > 0.999  # 5 HU of noise in a 3072 HU window
    assert values[-1] < 0.8


def test_shifted_volume_is_less_similar(ct: np.ndarray, settings: MsssimSettings) -> None:
    assert msssim(ct, np.roll(ct, 2, axis=2), settings) < 0.7  # 2 voxels: 0.58


def test_msssim_is_symmetric(ct: np.ndarray, settings: MsssimSettings) -> None:
    other = _ct(seed=5)
    assert msssim(ct, other, settings) == pytest.approx(msssim(other, ct, settings), abs=1e-7)


def test_values_outside_the_window_are_clipped(ct: np.ndarray, settings: MsssimSettings) -> None:
    brighter = ct.copy()
    brighter[ct >= BONE_HU] = 3000.0  # above the 2048 HU window edge: the same as 2048
    at_edge = ct.copy()
    at_edge[ct >= BONE_HU] = 2048.0
    assert msssim(ct, brighter, settings) == msssim(ct, at_edge, settings)


def test_paired_msssim_gives_one_value_per_pair(ct: np.ndarray, settings: MsssimSettings) -> None:
    other = np.roll(ct, 3, axis=1)
    values = paired_msssim([ct, ct], [ct.copy(), other], settings)
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[1] == msssim(ct, other, settings)
    assert values[1] < 0.9


# ---- diversity ----------------------------------------------------------------------------------


def test_diversity_of_copies_is_one(ct: np.ndarray, settings: MsssimSettings) -> None:
    assert diversity([ct, ct.copy(), ct.copy()], settings) == pytest.approx(1.0, abs=1e-6)


def test_noise_is_far_more_diverse_than_perturbed_copies(
    ct: np.ndarray, settings: MsssimSettings
) -> None:
    rng = np.random.default_rng(4)
    perturbed = [ct + rng.normal(0.0, 5.0, ct.shape).astype(np.float32) for _ in range(4)]
    noise = [rng.uniform(*CT_WINDOW, ct.shape).astype(np.float32) for _ in range(4)]
    collapsed, varied = diversity(perturbed, settings), diversity(noise, settings)
    assert collapsed > 0.98
    assert varied < 0.2


def test_diversity_is_the_mean_over_all_pairs(settings: MsssimSettings) -> None:
    volumes = [_ct(seed=seed) for seed in range(3)]
    by_hand = [msssim(volumes[i], volumes[j], settings) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert max(by_hand) < 1.0  # the textures differ
    assert diversity(volumes, settings) == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert pairwise_msssim(volumes, settings) == pytest.approx(by_hand, rel=1e-12)  # pair order


def test_diversity_of_a_seeded_subset_of_pairs(settings: MsssimSettings) -> None:
    volumes = [_ct(seed=seed) for seed in range(4)]
    pairs = sample_pairs(4, max_pairs=2, seed=7)
    assert len(pairs) == 2
    assert len(set(pairs)) == 2
    assert all(0 <= i < j < 4 for i, j in pairs)
    assert pairs == sample_pairs(4, max_pairs=2, seed=7)
    expected = np.mean([msssim(volumes[i], volumes[j], settings) for i, j in pairs])
    assert diversity(volumes, settings, max_pairs=2, seed=7) == pytest.approx(expected, rel=1e-12)


def test_sample_pairs_returns_all_pairs_when_few() -> None:
    everything = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert sample_pairs(4) == everything
    assert sample_pairs(4, max_pairs=6) == everything
    assert sample_pairs(4, max_pairs=100) == everything
    seeds = {tuple(sample_pairs(30, max_pairs=5, seed=seed)) for seed in range(5)}
    assert len(seeds) > 1  # the seed matters


# ---- errors -------------------------------------------------------------------------------------


def test_realism_error_is_a_fedsynth_error() -> None:
    assert issubclass(RealismError, FedsynthError)
    assert issubclass(RealismError, ValueError)


def test_mae_rejects_shape_mismatch(ct: np.ndarray) -> None:
    with pytest.raises(RealismError, match=r"different shapes.*same grid"):
        paired_mae(ct, ct[:-1], _body(32))
    with pytest.raises(RealismError, match=r"body mask have different shapes"):
        paired_mae(ct, ct, _body(16))


def test_mae_rejects_empty_body(ct: np.ndarray) -> None:
    with pytest.raises(RealismError, match=r"body mask is empty.*body_mask\(real, data\)"):
        paired_mae(ct, ct, np.zeros(ct.shape, dtype=bool))


def test_mae_rejects_float_body_mask(ct: np.ndarray) -> None:
    with pytest.raises(RealismError, match=r"bool or integer.*threshold it"):
        paired_mae(ct, ct, _body(32).astype(np.float32))


def test_mae_rejects_non_finite_values_inside_body(ct: np.ndarray) -> None:
    synthetic = ct.copy()
    synthetic[16, 16, 16] = np.nan
    with pytest.raises(RealismError, match=r"synthetic image holds NaN.*leave out"):
        paired_mae(ct, synthetic, _body(32))


def test_non_3d_arrays_are_rejected(ct: np.ndarray, settings: MsssimSettings) -> None:
    flat = ct[0]
    with pytest.raises(RealismError, match=r"3D.*drop channel"):
        paired_mae(flat, flat, _body(32)[0])
    with pytest.raises(RealismError, match=r"3D.*drop channel"):
        msssim(ct[None], ct[None], settings)
    with pytest.raises(RealismError, match=r"3D.*drop channel"):
        body_mask(flat, DataConfig())


def test_body_mask_rejects_an_image_without_body() -> None:
    air = np.full((16, 16, 16), AIR_HU, dtype=np.float32)
    with pytest.raises(RealismError, match=r"no body found.*HU for CT"):
        body_mask(air, DataConfig())


def test_body_mask_rejects_non_finite_image(ct: np.ndarray) -> None:
    broken = ct.copy()
    broken[0, 0, 0] = np.inf
    with pytest.raises(RealismError, match=r"NaN or infinite"):
        body_mask(broken, DataConfig())


def test_msssim_rejects_shape_mismatch(ct: np.ndarray, settings: MsssimSettings) -> None:
    with pytest.raises(RealismError, match=r"different shapes.*same grid"):
        msssim(ct, ct[:, :, :-1], settings)


def test_msssim_rejects_settings_for_a_larger_volume(settings: MsssimSettings) -> None:
    small = _ct(size=16)
    with pytest.raises(RealismError, match=r"does not fit.*msssim_settings\(\(16, 16, 16\)"):
        msssim(small, small, settings)


def test_msssim_rejects_non_finite_values(ct: np.ndarray, settings: MsssimSettings) -> None:
    broken = ct.copy()
    broken[0, 0, 0] = np.nan
    with pytest.raises(RealismError, match=r"second volume holds NaN"):
        msssim(ct, broken, settings)


@pytest.mark.parametrize("shape", [(4, 32, 32), (32, 32), (0, 8, 8)])
def test_settings_reject_volumes_too_small_or_not_3d(shape: tuple[int, ...]) -> None:
    with pytest.raises(RealismError, match=r"MS-SSIM"):
        msssim_settings(shape, CT_WINDOW)
    if len(shape) == 3 and min(shape) > 0:
        with pytest.raises(RealismError, match=r"at least 5 voxels.*larger grid"):
            msssim_settings(shape, CT_WINDOW)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window_low": 100.0, "window_high": 100.0}, "low < high"),
        ({"window_high": float("inf")}, "must be finite"),
        ({"kernel_size": 6}, "positive odd"),
        ({"kernel_sigma": 0.0}, "sigma must be > 0"),
        ({"weights": ()}, "one positive weight per scale"),
        ({"weights": (0.5, -0.5)}, "one positive weight per scale"),
    ],
)
def test_invalid_settings_are_rejected(
    settings: MsssimSettings, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(RealismError, match=message):
        dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def test_paired_msssim_rejects_unpaired_lists(ct: np.ndarray, settings: MsssimSettings) -> None:
    with pytest.raises(RealismError, match=r"one synthetic volume per real label map"):
        paired_msssim([ct, ct], [ct], settings)
    with pytest.raises(RealismError, match=r"no pairs given"):
        paired_msssim([], [], settings)
    with pytest.raises(RealismError, match=r"different shapes.*one grid"):
        paired_msssim([ct], [ct[:-1]], settings)


def test_diversity_needs_two_volumes(ct: np.ndarray, settings: MsssimSettings) -> None:
    for volumes in ([], [ct]):
        with pytest.raises(RealismError, match=r"at least 2 volumes.*add volumes"):
            diversity(volumes, settings)


def test_diversity_rejects_bad_max_pairs_and_mixed_shapes(
    ct: np.ndarray, settings: MsssimSettings
) -> None:
    with pytest.raises(RealismError, match=r"max_pairs must be at least 1"):
        diversity([ct, ct], settings, max_pairs=0)
    with pytest.raises(RealismError, match=r"different shapes.*one grid"):
        diversity([ct, ct, ct[:-1]], settings)
