"""Headers read before voxels: every broken or lying header is a DataError naming the file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from data_support import tiny_ct

from common.data.imageio import read_image, to_array, write_image
from common.errors import DataError
from simulations.phantoms.dicom import write_dicom_series

# NIfTI-1 byte offsets (little endian, as SimpleITK writes on this machine)
DIM_AT, DATATYPE_AT, PIXDIM_AT = 40, 70, 76


def _nifti(tmp_path: Path, name: str = "case.nii") -> tuple[Path, bytearray]:
    """A tiny CT written as uncompressed NIfTI, and its bytes."""
    image, _ = tiny_ct()
    path = tmp_path / name
    write_image(image, path, compress=False)
    raw = path.read_bytes()
    return path, bytearray(gzip.decompress(raw) if name.endswith(".gz") else raw)


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _refused(path: Path, match: str, **limits: int) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        read_image(path, **limits)
    assert info.value.path == path or path in info.value.path.parents  # a series: its slice
    assert info.value.kind == "unreadable"
    return info.value


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii"])
def test_a_nifti_cut_short_is_refused_not_filled_in(tmp_path: Path, name: str) -> None:
    path, _raw = _nifti(tmp_path, name)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])  # SimpleITK read this one with made-up voxels
    _refused(path, "truncated")


def test_a_whole_nifti_still_reads(tmp_path: Path) -> None:
    path, _ = _nifti(tmp_path, "case.nii.gz")
    image, _ = tiny_ct()
    assert np.array_equal(to_array(read_image(path)), to_array(image))


@pytest.mark.parametrize(
    ("offset", "code", "value", "match"),
    [
        (DIM_AT + 2, "h", 0, r"sizes \(0, 12, 12\)"),
        (DIM_AT, "h", 9, "9 dimensions"),
        (DATATYPE_AT, "h", 3, "datatype code 3"),
        (PIXDIM_AT + 4, "f", 0.0, "spacing"),
        (PIXDIM_AT + 8, "f", -1.5, "spacing"),
        (PIXDIM_AT + 12, "f", float("nan"), "spacing"),
        (0, "i", 1234, "not a NIfTI file"),
    ],
)
def test_broken_nifti_header_fields_are_refused(
    tmp_path: Path, offset: int, code: str, value: float, match: str
) -> None:
    path, raw = _nifti(tmp_path)
    struct.pack_into(f"<{code}", raw, offset, value)
    _refused(_write(path, bytes(raw)), match)


def test_a_header_promising_more_voxels_than_held_or_allowed(tmp_path: Path) -> None:
    path, raw = _nifti(tmp_path, "case.nii.gz")
    struct.pack_into("<3h", raw, DIM_AT + 2, 30000, 30000, 30000)  # 2.7e13 voxels
    _refused(_write(path, bytes(raw)), "more than data.max-voxels")
    _refused(path, "truncated", max_voxels=30000**3)  # measured in chunks, never allocated
    small, _ = _nifti(tmp_path / "small")
    _refused(small, "1,728 voxels, more than data.max-voxels = 1,000", max_voxels=1000)


def test_a_file_too_short_for_a_header(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "stub.nii", b"\x5c\x01\x00\x00"), "shorter than a NIfTI header")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_text_header_formats_cut_short(tmp_path: Path, suffix: str) -> None:
    image, _ = tiny_ct()
    for compress in (False, True):
        path = tmp_path / f"c{int(compress)}{suffix}"
        write_image(image, path, compress=compress)
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) - 40])
        _refused(path, "truncated")


def test_detached_data_files_missing(tmp_path: Path) -> None:
    image, _ = tiny_ct()
    for header, data in (("case.nhdr", "case.raw.gz"), ("case.mhd", "case.zraw")):
        path = tmp_path / header
        write_image(image, path)
        assert read_image(path).GetSize() == image.GetSize()
        (tmp_path / data).unlink()
        _refused(path, "voxel data file .* is missing")


def _nrrd(tmp_path: Path, **fields: str) -> Path:
    image, _ = tiny_ct()
    path = tmp_path / "case.nrrd"
    write_image(image, path, compress=False)
    head, _, payload = path.read_bytes().partition(b"\n\n")
    lines = head.decode().splitlines()
    for key, value in fields.items():
        lines = [
            f"{key.replace('_', ' ')}: {value}" if line.startswith(key.replace("_", " ")) else line
            for line in lines
        ]
    path.write_bytes("\n".join(lines).encode() + b"\n\n" + payload)
    return path


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"type": "block"}, "NRRD type 'block'"),
        ({"encoding": "zip"}, "NRRD encoding 'zip'"),
        ({"sizes": "12 0 12"}, "sizes"),
        ({"sizes": "12 x 12"}, "not numeric"),
        ({"space_directions": "(0,0,0) (0,1.5,0) (0,0,2)"}, "spacing"),
        ({"sizes": "4000 4000 4000"}, "more than data.max-voxels"),
    ],
)
def test_broken_nrrd_headers_are_refused(
    tmp_path: Path, fields: dict[str, str], match: str
) -> None:
    _refused(_nrrd(tmp_path, **fields), match, max_voxels=10**9)


def test_non_text_and_endless_headers(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "a.nrrd", b"\x00\x01not an nrrd"), "no NRRD000X magic")
    _refused(_write(tmp_path / "b.nrrd", b"NRRD0004\n\xff\xfe\n\n"), "not ASCII")
    _refused(_write(tmp_path / "c.mha", b"NDims = 3\n" * 20000), "no end of header")
    _refused(_write(tmp_path / "d.mha", b"NDims = 3\nElementDataFile = LOCAL\n"), "no 'DimSize'")


def _series(tmp_path: Path, name: str = "series") -> Path:
    image, _ = tiny_ct()
    folder = tmp_path / name
    write_dicom_series(image, folder, "1.2.826.0.1.3680043.2.1125.7")
    return folder


def test_a_dicom_series_with_a_missing_slice(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    (folder / "slice005.dcm").unlink()
    _refused(folder, "slice004.dcm and slice006.dcm are 4 mm apart")


def test_a_dicom_series_with_a_duplicated_slice(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    copy = _series(tmp_path, "copy")
    (copy / "slice003.dcm").rename(folder / "zz-duplicate.dcm")
    error = _refused(folder, "same position as slice003.dcm")
    assert error.path == folder / "zz-duplicate.dcm"


@pytest.mark.parametrize(
    ("size", "spacing", "match"),
    [((10, 10, 12), (1.5, 1.5, 2.0), "slice size"), ((12, 12, 12), (2.5, 2.5, 2.0), "spacing")],
)
def test_a_dicom_series_with_mixed_sizes_or_spacing(
    tmp_path: Path, size: tuple[int, int, int], spacing: tuple[float, ...], match: str
) -> None:
    image, _ = tiny_ct()
    other = sitk.Image(size, sitk.sitkInt16)
    other.SetOrigin(image.GetOrigin())
    other.SetSpacing(spacing)
    folder, odd = _series(tmp_path), tmp_path / "odd"
    write_dicom_series(other, odd, "1.2.826.0.1.3680043.2.1125.7")
    (odd / "slice004.dcm").replace(folder / "slice004.dcm")
    error = _refused(folder, f"{match} .* differs from slice000.dcm's")
    assert error.path == folder / "slice004.dcm"


def test_non_dicom_files_are_ignored_and_the_voxel_limit_holds(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    (folder / "notes.txt").write_text("scanner log")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert read_image(folder).GetSize() == (12, 12, 12)
    _refused(folder, "1,728 voxels, more than data.max-voxels = 1,000", max_voxels=1000)
