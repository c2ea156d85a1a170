"""Radiomics extraction: pyradiomics' own baselines reproduced, hand-computed values on tiny
volumes, settings files, parallel extraction, and every bad case reported with its id."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import shared_case
from radiomics.featureextractor import RadiomicsFeatureExtractor

from common.errors import ConfigError, DataError
from evaluator.radiomics import (
    FEATURE_CLASSES,
    ArrayVolume,
    CaseFailure,
    CaseFeatures,
    CaseResult,
    EmptyStructureError,
    RadiomicsCase,
    RadiomicsExtractionError,
    RadiomicsSettingsError,
    baseline_features,
    check_settings,
    extract_case,
    extract_diagnostics,
    extract_features,
    extract_from_arrays,
    extract_many,
    settings_from_baseline,
    settings_from_file,
    settings_from_params_file,
    split_results,
)

CASES = ("brain1", "lung1")
FEATURES_PER_CASE = (
    107  # 18 first order + 14 shape + 24 GLCM + 16 GLRLM + 16 GLSZM + 14 GLDM + 5 NGTDM
)
BASELINE_TOLERANCE = 1e-3  # the brief's bar for every feature
MESH_FEATURES = {  # pyradiomics' marching-cubes mesh changed after its brain1 baseline (<= 9e-4)
    "original_shape_MeshVolume",
    "original_shape_SurfaceArea",
    "original_shape_SurfaceVolumeRatio",
    "original_shape_Sphericity",
}
EXACT_TOLERANCE = 1e-9  # every other feature agrees to rounding
SETTINGS = {"binWidth": 25}
SPACING = (1.0, 2.0, 3.0)
TRUNCATED_BYTES = 64  # cuts a .nii.gz inside its header (ITK zero-fills a file cut in its voxels)


def _case_dir(case: str) -> Path:
    return shared_case("real", f"pyradiomics-{case}")


@pytest.fixture(scope="module")
def real_features() -> dict[str, dict[str, float]]:
    """Each shared case extracted once, with the settings its firstorder baseline records."""
    out = {}
    for case in CASES:
        folder = _case_dir(case)
        image = sitk.ReadImage(str(folder / f"{case}_image.nrrd"))
        mask = sitk.ReadImage(str(folder / f"{case}_label.nrrd"))
        settings = settings_from_baseline(folder / "baseline_firstorder.csv")
        out[case] = extract_features(image, mask, settings["label"], settings)
    return out


def _relative_errors(case: str, features: dict[str, float]) -> dict[str, float]:
    errors = {}
    for csv_path in sorted(_case_dir(case).glob("baseline_*.csv")):
        for name, expected in baseline_features(csv_path).items():
            errors[name] = abs(features[name] - expected) / abs(expected)
    return errors


@pytest.mark.parametrize("case", CASES)
def test_every_baseline_feature_is_reproduced(
    case: str, real_features: dict[str, dict[str, float]]
) -> None:
    features = real_features[case]
    first = settings_from_baseline(_case_dir(case) / "baseline_firstorder.csv")
    for csv_path in sorted(_case_dir(case).glob("baseline_*.csv")):
        assert settings_from_baseline(csv_path) == first, f"{csv_path} records other settings"
    errors = _relative_errors(case, features)
    assert len(errors) == FEATURES_PER_CASE
    assert set(errors) == set(features)  # nothing missing, nothing extra
    assert max(errors.values()) <= BASELINE_TOLERANCE, max(errors.items(), key=lambda e: e[1])
    others = {name: err for name, err in errors.items() if name not in MESH_FEATURES}
    assert max(others.values()) <= EXACT_TOLERANCE


def test_baseline_settings_are_read_as_recorded() -> None:
    settings = settings_from_baseline(_case_dir("brain1") / "baseline_glcm.csv")
    assert settings["binWidth"] == 25
    assert settings["voxelArrayShift"] == 2000
    assert settings["label"] == 1
    assert settings["resampledPixelSpacing"] is None
    assert settings["distances"] == [1]


def test_diagnostics_are_kept_apart(real_features: dict[str, dict[str, float]]) -> None:
    folder = _case_dir("brain1")
    image = sitk.ReadImage(str(folder / "brain1_image.nrrd"))
    mask = sitk.ReadImage(str(folder / "brain1_label.nrrd"))
    settings = settings_from_baseline(folder / "baseline_shape.csv")
    features, diagnostics = extract_diagnostics(image, mask, 1, settings)
    assert features == real_features["brain1"]
    assert all(name.startswith("diagnostics_") for name in diagnostics)
    assert diagnostics["diagnostics_Mask-original_VoxelNum"] == "4137"
    assert not any(name.startswith("diagnostics_") for name in features)


# --- hand-computed values on a tiny volume ------------------------------------------------


def _ramp() -> tuple[np.ndarray, np.ndarray]:
    """Voxel (z, y, x) holds 36 z + 6 y + x; the structure is the 2x2x2 cube at 2..3."""
    image = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6)
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    return image, mask


def test_first_order_and_volume_of_a_tiny_cube() -> None:
    image, mask = _ramp()
    features = extract_from_arrays(image, mask, SPACING, 1, SETTINGS)
    assert len(features) == FEATURES_PER_CASE
    assert {name.split("_")[1] for name in features} == set(FEATURE_CLASSES)
    assert features["original_firstorder_Minimum"] == 72 + 12 + 2
    assert features["original_firstorder_Maximum"] == 108 + 18 + 3
    assert features["original_firstorder_Mean"] == pytest.approx(36 * 2.5 + 6 * 2.5 + 2.5)
    # deviations from the mean are +-18 (z), +-3 (y), +-0.5 (x): |d| averages 18
    assert features["original_firstorder_MeanAbsoluteDeviation"] == pytest.approx(18.0)
    assert features["original_shape_VoxelVolume"] == pytest.approx(8 * 1.0 * 2.0 * 3.0)


def test_settings_that_use_the_whole_image_get_it_whole() -> None:
    image = np.arange(12**3, dtype=np.float32).reshape(12, 12, 12)
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1  # its box plus 5 voxels is 0..9: a crop would drop 10..11
    settings = {"binWidth": 0.1, "normalize": True}
    features = extract_from_arrays(image, mask, SPACING, 1, settings)
    roi_mean = 144 * 2.5 + 12 * 2.5 + 2.5
    # pyradiomics normalises by the whole image's mean and sample SD (ITK's Normalize)
    whole = (roi_mean - image.mean()) / image.std(ddof=1)
    cropped = (roi_mean - image[:10, :10, :10].mean()) / image[:10, :10, :10].std(ddof=1)
    assert features["original_firstorder_Mean"] == pytest.approx(whole, rel=1e-6)
    assert abs(whole - cropped) > 0.1  # the check above tells cropped from whole


def test_cropping_to_the_structure_changes_no_feature() -> None:
    image = np.random.default_rng(3).normal(100.0, 30.0, (20, 24, 28)).astype(np.float32)
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[3:9, 10:15, 18:26] = 1
    checked = check_settings(SETTINGS)
    volumes = ArrayVolume(image, SPACING).to_image(), ArrayVolume(mask, SPACING).to_image()
    whole = RadiomicsFeatureExtractor(**checked).execute(*volumes, label=1)
    expected = {k: float(v) for k, v in whole.items() if k.startswith("original_")}
    assert extract_from_arrays(image, mask, SPACING, 1, SETTINGS) == expected  # bit for bit


def test_a_label_other_than_one() -> None:
    image, mask = _ramp()
    features = extract_from_arrays(image, mask * 3, SPACING, 3, SETTINGS)
    assert features["original_firstorder_Mean"] == pytest.approx(107.5)


def test_an_empty_structure_names_the_source_and_the_labels_present() -> None:
    image, mask = _ramp()
    with pytest.raises(EmptyStructureError, match=r"case-7: .*no voxel of label 2 .*present: 1\)"):
        extract_from_arrays(image, mask, SPACING, 2, SETTINGS, source="case-7")


@pytest.mark.parametrize("label", [0, -1, 1.5, True])
def test_a_label_must_be_a_positive_whole_number(label: object) -> None:
    image, mask = _ramp()
    with pytest.raises(ConfigError, match="label must be a positive whole number"):
        extract_from_arrays(image, mask, SPACING, label, SETTINGS)  # type: ignore[arg-type]


def test_arrays_of_different_shapes_are_a_grid_mismatch() -> None:
    image, mask = _ramp()
    with pytest.raises(DataError, match=r"arrays: label map size \(5, 6, 6\)") as caught:
        extract_from_arrays(image, mask[:, :, :5], SPACING, 1, SETTINGS)
    assert caught.value.kind == "grid-mismatch"


@pytest.mark.parametrize("spacing", [(1.0, 2.0), (1.0, 0.0, 1.0)])
def test_bad_spacing_is_refused(spacing: tuple[float, ...]) -> None:
    image, mask = _ramp()
    with pytest.raises(ConfigError, match="spacing must be three positive numbers"):
        extract_from_arrays(image, mask, spacing, 1, SETTINGS)  # type: ignore[arg-type]


def test_a_mask_off_the_image_grid_names_the_mask() -> None:
    image, mask = _ramp()
    moved = sitk.GetImageFromArray(mask)
    moved.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(DataError, match=r"m\.nrrd: label map origin") as caught:
        extract_features(sitk.GetImageFromArray(image), moved, 1, SETTINGS, source="m.nrrd")
    assert caught.value.kind == "grid-mismatch"


def test_a_2d_volume_is_refused() -> None:
    image, mask = _ramp()
    flat_image, flat_mask = sitk.GetImageFromArray(image[2]), sitk.GetImageFromArray(mask[2])
    with pytest.raises(DataError, match="not one scalar 3D volume") as caught:
        extract_features(flat_image, flat_mask, 1, SETTINGS)
    assert caught.value.kind == "not-3d"


def test_a_structure_pyradiomics_cannot_handle_is_a_typed_error() -> None:
    image, mask = _ramp()
    single = np.zeros_like(mask)
    single[2, 2, 2] = 1
    with pytest.raises(RadiomicsExtractionError, match=r"arrays: .*single voxel") as caught:
        extract_from_arrays(image, single, SPACING, 1, SETTINGS)
    assert caught.value.kind == "radiomics-failed"


# --- settings -------------------------------------------------------------------------------


def test_check_settings_names_the_refused_setting() -> None:
    with pytest.raises(RadiomicsSettingsError, match=r"my\.yaml: .*'binWidht' was not defined"):
        check_settings({"binWidht": 25}, source="my.yaml")
    with pytest.raises(RadiomicsSettingsError, match=r"/setting/binWidth"):
        check_settings({"binWidth": -1})


def test_check_settings_accepts_tuples_and_numpy_scalars() -> None:
    settings = check_settings({"resampledPixelSpacing": (1, 1, 1), "binWidth": np.float64(5)})
    assert settings == {"resampledPixelSpacing": [1, 1, 1], "binWidth": 5.0}
    assert type(settings["binWidth"]) is float


def test_settings_from_a_yaml_and_a_json_params_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "params.yaml"
    yaml_file.write_text(
        "imageType:\n  Original: {}\nsetting:\n  binWidth: 10\n  voxelArrayShift: 1000\n",
        encoding="utf-8",
    )
    assert settings_from_file(yaml_file) == {"binWidth": 10, "voxelArrayShift": 1000}
    json_file = tmp_path / "params.json"
    classes = {name: [] for name in FEATURE_CLASSES}
    json_file.write_text(json.dumps({"setting": {"binWidth": 5}, "featureClass": classes}))
    assert settings_from_file(json_file) == {"binWidth": 5}
    empty = tmp_path / "empty.yml"
    empty.write_text("", encoding="utf-8")
    assert settings_from_params_file(empty) == {}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "setting: [unclosed", r"bad\.yaml: not a valid params file"),
        ("bad.json", "{", r"bad\.json: not a valid params file"),
        ("list.yaml", "- 1\n- 2\n", r"list\.yaml: a params file is a mapping"),
        ("wave.yaml", "imageType:\n  Wavelet: {}\n", r"wave\.yaml: .*original image only"),
        ("cls.yaml", "featureClass:\n  glcm:\n", r"cls\.yaml: featureClass is fixed"),
        (
            "vox.yaml",
            "voxelSetting:\n  kernelRadius: 2\n",
            r"vox\.yaml: sections \['voxelSetting'\]",
        ),
        ("set.yaml", "setting: 3\n", r"set\.yaml: 'setting' must be a mapping"),
        ("key.yaml", "setting:\n  binwidth: 3\n", r"key\.yaml: .*'binwidth' was not defined"),
        ("x.txt", "binWidth: 3", r"x\.txt: unknown settings file type"),
    ],
)
def test_bad_params_files_are_refused_with_their_name(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RadiomicsSettingsError, match=message):
        settings_from_file(path)


def test_bad_baseline_files_are_refused_with_their_name(tmp_path: Path) -> None:
    with pytest.raises(RadiomicsSettingsError, match=r"none\.csv: settings file not found"):
        settings_from_baseline(tmp_path / "none.csv")
    no_row = tmp_path / "plain.csv"
    no_row.write_text("featureName,a\noriginal_firstorder_Mean,1.0\n", encoding="utf-8")
    with pytest.raises(RadiomicsSettingsError, match=r"plain\.csv: no diagnostics_Configuration"):
        settings_from_baseline(no_row)
    not_dict = tmp_path / "nodict.csv"
    not_dict.write_text('diagnostics_Configuration_Settings,"[1, 2"\n', encoding="utf-8")
    with pytest.raises(RadiomicsSettingsError, match=r"nodict\.csv: .* not a settings dict"):
        settings_from_baseline(not_dict)
    refused = tmp_path / "refused.csv"
    refused.write_text("diagnostics_Configuration_Settings,\"{'binWidth': 0}\"\n")
    with pytest.raises(RadiomicsSettingsError, match=r"refused\.csv: pyradiomics refuses"):
        settings_from_baseline(refused)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(RadiomicsSettingsError, match=r"binary\.csv: cannot be read as text"):
        settings_from_baseline(binary)


# --- many cases -----------------------------------------------------------------------------


class _KillsItsWorker:
    """Unpickling this in a worker process ends that process at once (as a crash would)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (3,))


def _blob(seed: int, size: int = 16) -> tuple[ArrayVolume, ArrayVolume]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 20.0, (size, size, size)).astype(np.float32)
    z, y, x = np.mgrid[:size, :size, :size] - size // 2
    mask = (z * z + y * y + x * x <= (3 + seed % 3) ** 2).astype(np.uint8)
    image[mask == 1] += 40.0
    return ArrayVolume(image, SPACING), ArrayVolume(mask, SPACING)


def _file_case(folder: Path, case_id: str, seed: int) -> RadiomicsCase:
    image, mask = _blob(seed)
    paths = folder / f"{case_id}_image.nii.gz", folder / f"{case_id}_label.nii.gz"
    for volume, path in zip((image, mask), paths, strict=True):
        sitk.WriteImage(volume.to_image(), str(path))
    return RadiomicsCase(case_id, paths[0], paths[1])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[RadiomicsCase]:
    folder = tmp_path_factory.mktemp("cohort")
    cases = [RadiomicsCase(f"array-{i}", *_blob(i)) for i in range(4)]
    cases.insert(2, _file_case(folder, "file-0", 7))
    return cases


@pytest.fixture(scope="module")
def serial(cohort: list[RadiomicsCase]) -> list[CaseResult]:
    return extract_many(cohort, 1, SETTINGS, workers=1)


def test_serial_extraction_answers_every_case_in_order(
    cohort: list[RadiomicsCase], serial: list[CaseResult]
) -> None:
    assert [r.case_id for r in serial] == [c.case_id for c in cohort]
    assert all(isinstance(r, CaseFeatures) and len(r.features) == FEATURES_PER_CASE for r in serial)
    volumes = [r.features["original_shape_VoxelVolume"] for r in serial]  # type: ignore[union-attr]
    assert len(set(volumes)) == 3  # radii 3, 4, 5 (and the file case's radius 4 again)


def test_parallel_extraction_equals_serial(
    cohort: list[RadiomicsCase], serial: list[CaseResult]
) -> None:
    seen: list[str] = []
    parallel = extract_many(
        cohort, 1, SETTINGS, workers=2, on_case=lambda r: seen.append(r.case_id)
    )
    assert parallel == serial  # same features, bit for bit, and the same order
    assert sorted(seen) == sorted(c.case_id for c in cohort)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_cases_are_reported_with_their_ids(
    tmp_path: Path, cohort: list[RadiomicsCase], workers: int
) -> None:
    image, _ = _blob(0)
    empty = RadiomicsCase(
        "empty-case", image, ArrayVolume(np.zeros((16, 16, 16), np.uint8), SPACING)
    )
    broken = _file_case(tmp_path, "broken-case", 1)
    data = broken.image.read_bytes()  # type: ignore[union-attr]
    broken.image.write_bytes(data[:TRUNCATED_BYTES])  # type: ignore[union-attr]
    missing = RadiomicsCase("missing-case", tmp_path / "no.nii.gz", tmp_path / "no_label.nii.gz")
    results = extract_many([cohort[0], empty, broken, missing], 1, SETTINGS, workers)
    assert [r.case_id for r in results] == ["array-0", "empty-case", "broken-case", "missing-case"]
    good, bad = split_results(results)
    assert [r.case_id for r in good] == ["array-0"]
    assert [(f.case_id, f.kind) for f in bad] == [
        ("empty-case", "label-empty"),
        ("broken-case", "unreadable"),
        ("missing-case", "unreadable"),
    ]
    assert "empty-case: mask holds no voxel of label 1" in bad[0].reason
    assert f"{broken.image}: is truncated or corrupt" in bad[1].reason
    assert f"{tmp_path / 'no.nii.gz'}: file not found" in bad[2].reason


def test_a_case_that_kills_its_worker_is_the_only_one_reported(
    cohort: list[RadiomicsCase], serial: list[CaseResult]
) -> None:
    killer = RadiomicsCase("killer", _KillsItsWorker(), _KillsItsWorker())  # type: ignore[arg-type]
    results = extract_many([cohort[0], killer, cohort[1]], 1, SETTINGS, workers=2)
    assert results[0] == serial[0]
    assert results[2] == serial[1]
    assert isinstance(results[1], CaseFailure)
    assert (results[1].case_id, results[1].kind) == ("killer", "worker-died")


def test_a_case_that_cannot_be_sent_to_a_worker_is_reported(
    cohort: list[RadiomicsCase], serial: list[CaseResult]
) -> None:
    unsendable = RadiomicsCase("unsendable", cohort[0].image, lambda: None)  # type: ignore[arg-type]
    results = extract_many([cohort[0], unsendable], 1, SETTINGS, workers=2)
    assert results[0] == serial[0]
    assert isinstance(results[1], CaseFailure)
    assert (results[1].case_id, results[1].kind) == ("unsendable", "radiomics-failed")
    assert "pickle" in results[1].reason


def test_extract_case_answers_one_case_and_refuses_bad_settings(
    cohort: list[RadiomicsCase], serial: list[CaseResult]
) -> None:
    assert extract_case(cohort[2], 1, SETTINGS) == serial[2]
    with pytest.raises(RadiomicsSettingsError, match="'binwidth' was not defined"):
        extract_case(cohort[2], 1, {"binwidth": 25})


def test_a_case_of_the_wrong_type_is_reported_not_raised() -> None:
    odd = RadiomicsCase("odd", 42, 43)  # type: ignore[arg-type]
    (result,) = extract_many([odd], 1, SETTINGS, workers=1)
    assert isinstance(result, CaseFailure)
    assert result.kind == "radiomics-failed"
    assert "expected a file path or an ArrayVolume, not int" in result.reason


def test_many_refuses_bad_settings_and_workers_before_any_case(cohort: list[RadiomicsCase]) -> None:
    seen: list[CaseResult] = []
    with pytest.raises(RadiomicsSettingsError, match="'bin' was not defined"):
        extract_many(cohort, 1, {"bin": 3}, workers=2, on_case=seen.append)
    with pytest.raises(ConfigError, match="workers must be at least 1, not 0"):
        extract_many(cohort, 1, SETTINGS, workers=0, on_case=seen.append)
    with pytest.raises(ConfigError, match="label must be a positive whole number, not 0"):
        extract_many(cohort, 0, SETTINGS, workers=2, on_case=seen.append)
    assert seen == []
    assert extract_many([], 1, SETTINGS, workers=2) == []


def test_features_are_finite_floats(serial: list[CaseResult]) -> None:
    features = serial[0].features  # type: ignore[union-attr]
    assert all(type(v) is float for v in features.values())
    assert all(math.isfinite(v) for v in features.values())
