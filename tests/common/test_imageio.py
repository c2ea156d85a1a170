"""Image I/O through SimpleITK: every format keeps its geometry; bad files get typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_support import tiny_ct

from common.data.imageio import Geometry, read_image, strip_suffix, to_array, write_image
from common.errors import DataError
from simulations.phantoms.dicom import write_dicom_series


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_formats_keep_voxels_and_geometry(tmp_path: Path, suffix: str) -> None:
    image, _ = tiny_ct()
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / f"case{suffix}"
    write_image(image, path)
    back = read_image(path)
    assert np.array_equal(to_array(back), to_array(image))
    assert np.allclose(Geometry.of(back).spacing, (1.5, 1.5, 2.0))
    assert np.allclose(Geometry.of(back).origin, (-10.0, 20.0, 5.0))
    assert np.allclose(Geometry.of(back).direction, image.GetDirection())
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ([f"case{suffix}"] if suffix != ".mhd" else ["case.mhd", "case.zraw"])


def test_dicom_series_folder_is_read_as_a_volume(tmp_path: Path) -> None:
    image, _ = tiny_ct()
    write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.1")
    back = read_image(tmp_path / "series")
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-3)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.array_equal(to_array(back).astype(np.int16), to_array(image))


def test_folder_with_two_series_is_refused(tmp_path: Path) -> None:
    image, _ = tiny_ct()
    write_dicom_series(image, tmp_path / "mixed", "1.2.3.1")
    write_dicom_series(image, tmp_path / "other", "1.2.3.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b-{path.name}")
    with pytest.raises(DataError, match="2 DICOM series"):
        read_image(tmp_path / "mixed")


def test_empty_folder_is_not_a_series(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no DICOM series") as info:
        read_image(tmp_path)
    assert info.value.kind == "unreadable"


def test_missing_unsupported_truncated_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "nope.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a supported image file"):
        read_image(text)
    image, _ = tiny_ct()
    good = tmp_path / "good.nii.gz"
    write_image(image, good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        read_image(truncated)
    assert info.value.path == truncated
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"\x00\x01not an nrrd")
    with pytest.raises(DataError, match="not an NRRD file"):
        read_image(garbage)


def test_suffix_handling() -> None:
    assert strip_suffix(Path("a/case_0000.nii.gz")) == "case_0000"
    assert strip_suffix(Path("x.nrrd")) == "x"


def test_geometry_json_round_trip() -> None:
    image, _ = tiny_ct()
    geometry = Geometry.of(image)
    assert Geometry.from_json(geometry.to_json()) == geometry
