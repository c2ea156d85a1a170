"""Preprocessing: orientation, resampling, crop/pad, intensities, and the way back to the world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.config import DataConfig
from common.data.crop import crop_or_pad, crop_start, largest_component, mask_centre
from common.data.imageio import Geometry, from_array
from common.data.intensity import IntensityMapping
from common.data.preprocess import (
    PreparedCase,
    label_on_source,
    prepare_case,
    release_geometry,
    to_world_image,
)
from common.data.problems import ProblemKind
from common.data.resample import grid_centre, resample_to_reference, respaced_geometry
from common.errors import DataError

REAL = (Path(__file__).resolve().parents[2] / "../shared/data/real").resolve()
requires_real = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"shared real test cases not found at {REAL} (CI has them)"
)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _image(array: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _ct(**changes: object) -> DataConfig:
    return DataConfig(modality="ct", **changes)  # type: ignore[arg-type]


def _forward_hu(hu: float) -> float:
    """Default CT window -1024..2048 HU onto [-1, 1], by hand."""
    return (hu + 1024.0) * 2.0 / 3072.0 - 1.0


def _world_centroid(label: sitk.Image) -> np.ndarray:
    index = np.argwhere(sitk.GetArrayViewFromImage(label) > 0).mean(axis=0)[::-1]
    return np.asarray(label.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


# --- grids -------------------------------------------------------------------------------------


def test_respaced_geometry_keeps_the_centre_and_rounds_the_voxel_count() -> None:
    geometry = Geometry((10, 4, 3), (0.78, 1.0, 6.5), (1.0, 2.0, 3.0), IDENTITY)
    grid = respaced_geometry(geometry, (2.0, 2.0, 2.0))
    # 7.8 mm / 2 = 3.9 -> 4 voxels; 4 mm -> 2; 19.5 mm -> 9.75 -> 10.
    assert grid.size == (4, 2, 10)
    # x: centre 1 + 4.5 * 0.78 = 4.51, new origin 4.51 - 1.5 * 2 = 1.51.
    np.testing.assert_allclose(grid.origin, (1.51, 2.5, 3.0 + 6.5 - 9.0), atol=1e-12)
    np.testing.assert_allclose(grid_centre(grid), grid_centre(geometry), atol=1e-12)


def test_resampling_a_ramp_to_double_spacing_averages_blocks() -> None:
    ramp = np.arange(64, dtype=np.float32).reshape(4, 4, 4)  # value = 16 z + 4 y + x
    image = _image(ramp, (1.0, 1.0, 1.0), (10.0, 20.0, 30.0))
    grid = respaced_geometry(Geometry.of(image), (2.0, 2.0, 2.0))
    out = resample_to_reference(image, grid, label=False)
    assert out.GetSize() == (2, 2, 2)
    assert out.GetOrigin() == (10.5, 20.5, 30.5)
    centres = np.array([0.5, 2.5])
    z, y, x = np.meshgrid(centres, centres, centres, indexing="ij")
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), 16 * z + 4 * y + x, atol=1e-5)


def test_release_geometry_is_centred_on_the_world_origin() -> None:
    data = _ct(target_shape=(8, 10, 12), target_spacing=(2.0, 1.0, 0.5))
    geometry = release_geometry(data)
    assert geometry.size == (8, 10, 12)
    assert geometry.spacing == (2.0, 1.0, 0.5)
    assert geometry.direction == IDENTITY
    assert geometry.origin == (-7.0, -4.5, -2.75)
    np.testing.assert_allclose(grid_centre(geometry), 0.0, atol=1e-12)


# --- crop / pad --------------------------------------------------------------------------------


def test_crop_or_pad_by_hand() -> None:
    np.testing.assert_array_equal(crop_or_pad(np.arange(5), (-2,), (4,), -1), [-1, -1, 0, 1])
    np.testing.assert_array_equal(crop_or_pad(np.arange(5), (3,), (4,), -1), [3, 4, -1, -1])
    np.testing.assert_array_equal(crop_or_pad(np.arange(5), (9,), (2,), -1), [-1, -1])
    assert crop_start((4.5,), (12,)) == (-1,)
    assert crop_start((4.5,), (8,)) == (1,)
    assert crop_start((4.5,), (11,)) == (0,)  # window centre 5.0: the tie rounds up


def test_body_is_the_largest_component_and_an_empty_mask_centres_on_the_array() -> None:
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[3:6, 3:6, 3:6] = True  # 27 voxels
    largest = largest_component(mask)
    assert largest.sum() == 27
    assert mask_centre(largest) == (4.0, 4.0, 4.0)
    assert mask_centre(np.zeros((4, 5, 6), dtype=bool)) == (1.5, 2.0, 2.5)


def _ramp_ct() -> tuple[sitk.Image, sitk.Image]:
    """10^3 voxels of 2 mm at origin (5, 6, 7); HU = 100 * x index, so all of it is body."""
    hu = np.broadcast_to(100.0 * np.arange(10), (10, 10, 10)).astype(np.int16)
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[4, 5, 6] = 1
    return _image(hu, (2.0,) * 3, (5.0, 6.0, 7.0)), _image(label, (2.0,) * 3, (5.0, 6.0, 7.0))


def test_padding_to_12_cubed_adds_one_air_voxel_each_side() -> None:
    image, label = _ramp_ct()
    case = prepare_case("c", image, label, _ct(target_spacing=(2.0,) * 3, target_shape=(12,) * 3))
    assert case.geometry.origin == (3.0, 4.0, 5.0)
    expected = [-1.0] + [_forward_hu(100.0 * x) for x in range(10)] + [-1.0]
    np.testing.assert_allclose(case.image[5, 5], expected, atol=1e-6)
    np.testing.assert_array_equal(case.image[0], -1.0)
    assert case.label[5, 6, 7] == 1
    assert case.label.sum() == 1


def test_cropping_to_8_cubed_drops_one_voxel_each_side() -> None:
    image, label = _ramp_ct()
    case = prepare_case("c", image, label, _ct(target_spacing=(2.0,) * 3, target_shape=(8,) * 3))
    assert case.geometry.origin == (7.0, 8.0, 9.0)
    assert case.geometry.size == (8, 8, 8)
    expected = [_forward_hu(100.0 * x) for x in range(1, 9)]
    np.testing.assert_allclose(case.image[3, 4], expected, atol=1e-6)
    assert case.label[3, 4, 5] == 1


def test_the_crop_centres_on_the_largest_body_part_only() -> None:
    hu = np.full((20, 20, 20), -1024, dtype=np.int16)  # air, at the window floor
    hu[14:18, 10:14, 2:6] = 0  # the body: z 14..17, y 10..13, x 2..5
    hu[1:3, 1:3, 15:17] = 0  # a smaller piece, far away: must not move the crop
    label = np.zeros_like(hu, dtype=np.uint8)
    label[15, 11, 3] = 1
    origin = (-10.0, -20.0, -30.0)
    data = _ct(target_spacing=(1.0,) * 3, target_shape=(8,) * 3)
    case = prepare_case(
        "c", _image(hu, (1.0,) * 3, origin), _image(label, (1.0,) * 3, origin), data
    )
    # Box centre (x 3.5, y 11.5, z 15.5) -> window starts at x 0, y 8, z 12.
    assert case.geometry.origin == (-10.0, -12.0, -18.0)
    body = case.image > -1.0
    np.testing.assert_array_equal(np.argwhere(body).min(axis=0), [2, 2, 2])
    np.testing.assert_array_equal(np.argwhere(body).max(axis=0), [5, 5, 5])
    assert case.label[3, 3, 3] == 1


# --- intensities -------------------------------------------------------------------------------


def test_intensity_mapping_by_hand() -> None:
    mapping = IntensityMapping("ct", -1000.0, 1000.0)
    np.testing.assert_allclose(
        mapping.forward(np.array([-2000.0, -1000, 0, 500, 3000])), [-1.0, -1.0, 0.0, 0.5, 1.0]
    )
    np.testing.assert_allclose(
        mapping.inverse(np.array([-1.0, 0.0, 0.5, 1.0])), [-1000.0, 0.0, 500.0, 1000.0]
    )
    assert IntensityMapping.from_json(mapping.to_json()) == mapping
    with pytest.raises(ValueError, match="low < high"):
        IntensityMapping("mri", 5.0, 5.0)


def test_mri_body_percentiles_map_to_minus_and_plus_one() -> None:
    values = np.zeros((20, 20, 20), dtype=np.int16)
    values[5:15, 5:15, 5:15] = np.arange(1, 1001).reshape(10, 10, 10)
    image, label = (
        _image(values, (1.0,) * 3, (0.0,) * 3),
        _image(values * 0, (1.0,) * 3, (0.0,) * 3),
    )
    data = DataConfig(modality="mri", target_spacing=(1.0,) * 3, target_shape=(20,) * 3)
    case = prepare_case("m", image, label, data)
    # 99th percentile of 7000 zeros and 1..1000 is 920.01: the body is 93..1000 (> 92.001);
    # its 0.5 and 99.5 percentiles are 93 + 0.005 * 907 and 93 + 0.995 * 907.
    assert case.intensity.low == pytest.approx(97.535)
    assert case.intensity.high == pytest.approx(995.465)
    inside = case.image[5:15, 5:15, 5:15].ravel()
    assert inside[999] == 1.0  # 1000 is above the high percentile
    assert inside[49] == -1.0  # 50 is below the low percentile
    assert inside[499] == pytest.approx(2 * (500 - 97.535) / (995.465 - 97.535) - 1, abs=1e-6)
    assert case.image[0, 0, 0] == -1.0


def test_an_mri_without_contrast_is_a_data_error() -> None:
    flat = _image(np.full((8, 8, 8), 5, dtype=np.int16), (1.0,) * 3, (0.0,) * 3)
    data = DataConfig(modality="mri", target_spacing=(1.0,) * 3, target_shape=(8,) * 3)
    with pytest.raises(DataError, match="no contrast") as caught:
        prepare_case("flat", flat, flat, data)
    assert caught.value.kind == ProblemKind.NO_CONTRAST.value


# --- orientation -------------------------------------------------------------------------------


def test_a_flipped_direction_gives_the_same_prepared_case() -> None:
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 1500, size=(12, 14, 16)).astype(np.int16)
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[3:6, 2:5, 9:14] = 1
    spacing, origin = (1.5, 1.25, 2.0), (3.0, -4.0, 5.0)
    plain = prepare_case(
        "p", _image(hu, spacing, origin), _image(label, spacing, origin), _ct(target_shape=(8,) * 3)
    )
    # The same voxels stored with x and y reversed: direction diag(-1, -1, 1), origin at the far
    # corner (x 3 + 15 * 1.5, y -4 + 13 * 1.25).
    far = (3.0 + 15 * 1.5, -4.0 + 13 * 1.25, 5.0)
    flipped_image = _image(np.ascontiguousarray(hu[:, ::-1, ::-1]), spacing, far)
    flipped_label = _image(np.ascontiguousarray(label[:, ::-1, ::-1]), spacing, far)
    for image in (flipped_image, flipped_label):
        image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    flipped = prepare_case("p", flipped_image, flipped_label, _ct(target_shape=(8,) * 3))
    np.testing.assert_allclose(flipped.image, plain.image, atol=1e-6)
    np.testing.assert_array_equal(flipped.label, plain.label)
    assert plain.label.sum() > 0
    np.testing.assert_allclose(flipped.geometry.origin, plain.geometry.origin, atol=1e-9)
    assert flipped.geometry.direction == plain.geometry.direction == IDENTITY


# --- back to the world -------------------------------------------------------------------------


def test_to_world_image_restores_hu_and_geometry() -> None:
    geometry = Geometry((3, 2, 1), (2.0, 2.0, 3.0), (1.0, 2.0, 3.0), IDENTITY)
    mapping = IntensityMapping("ct", -1024.0, 2048.0)
    normalised = np.array([[[-1.0, 0.0, 1.0], [0.5, -0.5, 0.25]]], dtype=np.float32)
    image = to_world_image(normalised, geometry, mapping)
    assert Geometry.of(image) == geometry
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(image), [[[-1024.0, 512.0, 2048.0], [1280.0, -256.0, 896.0]]]
    )
    label = to_world_image(np.array([[[0, 1, 2], [2, 1, 0]]]), geometry, None)
    assert label.GetPixelID() == sitk.sitkUInt8
    with pytest.raises(ValueError, match="geometry"):
        to_world_image(np.zeros((3, 2, 1), dtype=np.float32), geometry, mapping)
    with pytest.raises(ValueError, match="integer"):
        to_world_image(np.zeros((1, 2, 3), dtype=np.float32), geometry, None)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        to_world_image(np.full((1, 2, 3), 300), geometry, None)


def test_prepared_case_rejects_arrays_that_do_not_fit_its_grid() -> None:
    geometry = Geometry((4, 4, 4), (1.0,) * 3, (0.0,) * 3, IDENTITY)
    mapping = IntensityMapping("ct", -1024.0, 2048.0)
    good = np.zeros((4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="image must be float32"):
        PreparedCase(
            "x", good.astype(np.float64), good.astype(np.uint8), geometry, mapping, geometry
        )
    with pytest.raises(ValueError, match="label must be uint8"):
        PreparedCase("x", good, np.zeros((4, 4, 5), np.uint8), geometry, mapping, geometry)


def test_a_label_on_an_unchanged_grid_goes_back_exactly() -> None:
    image, label = _ramp_ct()
    case = prepare_case("c", image, label, _ct(target_spacing=(2.0,) * 3, target_shape=(12,) * 3))
    back = label_on_source(case)
    assert Geometry.of(back) == Geometry.of(label)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label))


# --- real cases --------------------------------------------------------------------------------


def _real(folder: str, image: str, label: str) -> tuple[sitk.Image, sitk.Image]:
    return sitk.ReadImage(str(REAL / folder / image)), sitk.ReadImage(str(REAL / folder / label))


def _check_geometry_and_tumour(
    image: sitk.Image, label: sitk.Image, case: PreparedCase, data: DataConfig
) -> None:
    assert case.geometry.spacing == data.target_spacing
    assert case.geometry.size == data.target_shape
    assert case.geometry.direction == IDENTITY
    assert case.image.dtype == np.float32
    assert case.label.dtype == np.uint8
    assert case.image.min() >= -1.0
    assert case.image.max() <= 1.0
    assert case.source_geometry == Geometry.of(image)
    before = np.sum(sitk.GetArrayViewFromImage(label) == 1) * np.prod(image.GetSpacing())
    after = np.sum(case.label == 1) * np.prod(data.target_spacing)
    assert after == pytest.approx(before, rel=0.15)
    shift = _world_centroid(label) - _world_centroid(from_array(case.label, case.geometry))
    assert np.linalg.norm(shift) < max(data.target_spacing)


@requires_real
def test_real_brain_mri() -> None:
    image, label = _real("pyradiomics-brain1", "brain1_image.nrrd", "brain1_label.nrrd")
    assert sitk.GetArrayViewFromImage(label).sum() == 4137
    data = DataConfig(modality="mri", target_spacing=(2.0,) * 3, target_shape=(96, 96, 80))
    case = prepare_case("brain1", image, label, data)
    _check_geometry_and_tumour(image, label, case, data)
    # The 99.5th body percentile is +1: about 0.5 % of the head is there (the head mask here is
    # the test's own, from the source voxels' 99th percentile).
    source = resample_to_reference(image, case.geometry, label=False)
    reference = np.percentile(sitk.GetArrayViewFromImage(image), 99)
    head = largest_component(sitk.GetArrayFromImage(source) > 0.1 * reference)
    assert 0.004 < np.mean(case.image[head] == 1.0) < 0.006
    assert 0.001 < np.mean(case.image[head] == -1.0) < 0.01
    back = sitk.GetArrayFromImage(label_on_source(case)) == 1
    assert _dice(back, sitk.GetArrayViewFromImage(label) == 1) > 0.9


@requires_real
def test_real_brain_mri_with_its_y_flip_undone_gives_the_same_case() -> None:
    image, label = _real("pyradiomics-brain1", "brain1_image.nrrd", "brain1_label.nrrd")
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    far_corner = image.TransformIndexToPhysicalPoint((0, image.GetSize()[1] - 1, 0))
    unflipped = []
    for source in (image, label):
        flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(source)[:, ::-1, :])
        flipped.SetSpacing(source.GetSpacing())
        flipped.SetOrigin(far_corner)
        unflipped.append(flipped)
    data = DataConfig(modality="mri", target_spacing=(4.0,) * 3, target_shape=(48, 48, 40))
    original = prepare_case("brain1", image, label, data)
    same = prepare_case("brain1", unflipped[0], unflipped[1], data)
    np.testing.assert_allclose(same.image, original.image, atol=1e-6)
    np.testing.assert_array_equal(same.label, original.label)
    np.testing.assert_allclose(same.geometry.origin, original.geometry.origin, atol=1e-6)


@requires_real
def test_real_lung_ct_keeps_hounsfield_units() -> None:
    image, label = _real("pyradiomics-lung1", "lung1_image.nrrd", "lung1_label.nrrd")
    assert sitk.GetArrayViewFromImage(label).sum() == 837
    data = _ct(target_spacing=(3.0,) * 3, target_shape=(48,) * 3)
    case = prepare_case("lung1", image, label, data)
    _check_geometry_and_tumour(image, label, case, data)
    assert case.intensity == IntensityMapping("ct", -1024.0, 2048.0)
    # The source sampled straight onto the prepared grid agrees with the inverse mapping, in HU,
    # wherever the window did not clip it: the prepared grid's origin is right.
    world = to_world_image(case.image, case.geometry, case.intensity)
    expected = sitk.GetArrayFromImage(resample_to_reference(image, case.geometry, label=False))
    got = sitk.GetArrayFromImage(world)
    inside = (expected > -1024.0) & (expected < 2048.0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], expected[inside], atol=0.05)
    np.testing.assert_array_equal(got[expected <= -1024.0], -1024.0)
