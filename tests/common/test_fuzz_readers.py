"""Fuzzing every reader and layout with a fixed seed, and one plain test for each bug it found.

The property (``bench.fuzz_property``): a broken file either reads as a sane image or is a
DataError naming the file; a site check never raises. ``python -m bench.fuzz`` runs the same
strategies for many more cases.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from bench.fuzz_files import (
    FORMATS,
    Flip,
    FuzzCase,
    SetField,
    Slices,
    Volume,
    build,
)
from bench.fuzz_property import FUZZ_MAX_VOXELS, Outcome, insanity, run_case
from bench.fuzz_strategies import DICOM_FORMAT, SITE_FORMATS, fuzz_cases
from common.config import DEFAULT_MAX_VOXELS, load_config
from common.data import imageio
from common.data.imageio import read_image, to_array
from common.errors import ConfigError, DataError


def fixed_seed(examples: int) -> settings:
    """The suite's fuzz settings: the same cases on every run, no example database."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


FILE_FORMATS = tuple(f for f in FORMATS if f != DICOM_FORMAT)


def _holds(outcome: Outcome) -> None:
    assert not outcome.failed, f"{outcome.kind}: {outcome.detail}"


@fixed_seed(200)
@given(fuzz_cases(layouts=("file",), formats=FILE_FORMATS))
def test_fuzzed_image_files_read_sanely_or_are_data_errors_naming_the_file(
    case: FuzzCase,
) -> None:
    _holds(run_case(case))


@fixed_seed(60)
@given(fuzz_cases(layouts=("file",), formats=(DICOM_FORMAT,)))
def test_fuzzed_dicom_series_read_sanely_or_are_data_errors_naming_a_file(
    case: FuzzCase,
) -> None:
    _holds(run_case(case))


@fixed_seed(80)
@given(fuzz_cases(layouts=("nnunet", "brats", "pattern")))
def test_fuzzed_sites_are_checked_without_raising_and_name_their_files(case: FuzzCase) -> None:
    _holds(run_case(case))


@pytest.mark.parametrize(
    ("layout", "fmt"),
    [("file", fmt) for fmt in FORMATS]
    + [(layout, fmt) for layout, formats in SITE_FORMATS.items() for fmt in formats],
)
def test_every_unbroken_format_and_layout_reads_back_its_voxels(layout: str, fmt: str) -> None:
    """The fuzzer's starting points are good files: the property would catch any refusal."""
    assert run_case(FuzzCase(fmt, Volume(size=(3, 4, 5)), layout=layout)) == Outcome("read")


def test_a_read_image_with_more_voxels_than_the_limit_is_not_sane() -> None:
    assert insanity(Volume().image(), max_voxels=FUZZ_MAX_VOXELS) is None
    assert insanity(Volume().image(), max_voxels=10) == "60 voxels read, more than the limit 10"


def _refused(tmp_path: Path, case: FuzzCase, match: str) -> DataError:
    target = build(case, tmp_path / "case")
    with pytest.raises(DataError, match=match) as info:
        read_image(target)
    assert str(target) in str(info.value)
    return info.value


# Regressions: each failure the fuzzing found (drawn by the strategies, or by their absurd
# values tried one field at a time), then the voxel limit.


@pytest.mark.parametrize("fmt", ["mha", "mha-zlib", "mhd"])
@pytest.mark.parametrize(
    ("ndims", "match"),
    [
        ("-1", "'NDims' is '-1': it must be a whole number >= 1"),  # ITK: segmentation fault
        ("100", "NDims = 100 and DimSize \\(4, 3, 5\\): NDims must be 1 to 5"),  # ITK: abort
        ("2", "NDims = 2 and DimSize \\(4, 3, 5\\)"),
    ],
)
def test_metaimage_dimension_count_that_crashed_itk(
    tmp_path: Path, fmt: str, ndims: str, match: str
) -> None:
    _refused(tmp_path, FuzzCase(fmt, mutations=(SetField("NDims", ndims),)), match)


def test_metaimage_sizes_that_do_not_match_the_dimension_count(tmp_path: Path) -> None:
    case = FuzzCase("mha", mutations=(SetField("DimSize", "4 3 5 2"),))
    _refused(tmp_path, case, "NDims = 3 and DimSize \\(4, 3, 5, 2\\)")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("nan", "'ElementNumberOfChannels' is not numeric: 'nan'"),  # was a ValueError
        ("inf", "'ElementNumberOfChannels' is not numeric: 'inf'"),  # was an OverflowError
        ("0", "'ElementNumberOfChannels' is '0': it must be a whole number >= 1"),
    ],
)
def test_metaimage_channel_counts_that_raised_other_errors(
    tmp_path: Path, value: str, match: str
) -> None:
    case = FuzzCase("mha", mutations=(SetField("ElementNumberOfChannels", value),))
    _refused(tmp_path, case, match)


def test_a_compressed_size_the_file_cannot_hold_is_refused_before_itk_allocates_it(
    tmp_path: Path,
) -> None:
    """ITK allocated CompressedDataSize bytes first: -5 ended in std::bad_alloc."""
    negative = FuzzCase("mha-zlib", mutations=(SetField("CompressedDataSize", "-5"),))
    _refused(tmp_path / "a", negative, "'CompressedDataSize' is '-5', not a byte count")
    huge = FuzzCase("mha-zlib", mutations=(SetField("CompressedDataSize", "100000000"),))
    error = _refused(tmp_path / "b", huge, "truncated: .* CompressedDataSize = 100,000,000 bytes")
    held = int(str(error).split("file holds ")[1].split(" ")[0].replace(",", ""))
    path = tmp_path / "b" / "case" / "case.mha"
    header_end = path.read_bytes().index(b"ElementDataFile = LOCAL\n") + 24
    assert held == path.stat().st_size - header_end


def test_a_compressed_size_within_the_file_still_reads(tmp_path: Path) -> None:
    target = build(FuzzCase("mha-zlib"), tmp_path / "case")
    assert b"CompressedDataSize" in target.read_bytes()
    assert np.array_equal(to_array(read_image(target)), to_array(Volume().image()))


@pytest.mark.parametrize("fmt", ["nii", "nii.gz"])
def test_a_nifti_sform_with_nan_is_refused_not_read_with_a_nan_direction(
    tmp_path: Path, fmt: str
) -> None:
    case = FuzzCase(fmt, mutations=(SetField("srow_x0", float("nan")),))
    _refused(tmp_path, case, "direction \\(nan, 0.0, 0.0, nan")


def test_a_corrupt_detached_data_file_is_named_with_its_header(tmp_path: Path) -> None:
    """The error named only the .zraw file, not the .mhd the user gave."""
    case = FuzzCase("mhd", mutations=(Flip(0.5, 0xD0, compressed=True),))
    error = _refused(tmp_path, case, "compressed voxel data in .*case.zraw is truncated or corrupt")
    assert error.path == tmp_path / "case" / "case.mhd"


@pytest.mark.parametrize("fmt", ["nii", "nii.gz", "nrrd", "mha", "nhdr"])
def test_a_header_promising_a_trillion_voxels_is_refused_before_any_allocation(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fmt.startswith("nii"):  # 10^4 x 10^4 x 10^4 in the int16 dim fields
        mutations = tuple(SetField(f"dim{axis}", 10_000) for axis in (1, 2, 3))
    else:
        key = "sizes" if fmt in ("nrrd", "nhdr") else "DimSize"
        mutations = (SetField(key, "10000 10000 10000"),)
    target = build(FuzzCase(fmt, mutations=mutations), tmp_path / "case")

    def never(*_args: object) -> None:
        raise AssertionError("the voxels were read")

    monkeypatch.setattr(imageio.sitk, "ReadImage", never)
    limit = load_config({}).data.max_voxels
    assert limit == DEFAULT_MAX_VOXELS
    with pytest.raises(
        DataError, match=r"promises 1,000,000,000,000 voxels, more than data\.max-voxels"
    ):
        read_image(target, max_voxels=limit)


def test_the_voxel_limit_is_a_checked_setting() -> None:
    assert load_config({"data.max-voxels": 1000}).data.max_voxels == 1000
    for wrong in (0, 1 << 37):
        with pytest.raises(ConfigError, match=r"data\.max-voxels"):
            load_config({"data.max-voxels": wrong})


def test_a_dicom_series_with_a_slice_of_another_series_is_refused(tmp_path: Path) -> None:
    folder = build(FuzzCase(DICOM_FORMAT, mutations=(Slices("odd-series", 2),)), tmp_path / "c")
    with pytest.raises(DataError, match="2 DICOM series") as info:
        read_image(folder)
    assert info.value.path == folder


def test_nifti_field_edits_land_where_the_standard_puts_them(tmp_path: Path) -> None:
    target = build(FuzzCase("nii", mutations=(SetField("pixdim2", 7.25),)), tmp_path / "c")
    assert struct.unpack_from("<f", target.read_bytes(), 84)[0] == 7.25
    assert read_image(target).GetSpacing() == (1.5, 7.25, 2.0)
