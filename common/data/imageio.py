"""Reading and writing medical images through SimpleITK, geometry kept.

Files: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd). A folder is read as a
DICOM series (the one series it holds; a folder with several series is refused).
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.atomic import disk_full_reported
from common.config import DEFAULT_MAX_VOXELS
from common.data.dicom_series import read_dicom_series
from common.data.headers import HeaderFacts, check_header, header_error
from common.data.nifti_header import read_nifti_header
from common.data.problems import ProblemKind
from common.data.text_headers import read_meta_header, read_nrrd_header
from common.errors import DataError, DiskFullError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in the world: ITK order (x, y, z), millimetres, LPS."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(
            size=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Stamp this geometry's spacing, origin and direction on ``image`` (same size)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def to_json(self) -> dict[str, list[float] | list[int]]:
        """A JSON-ready dict."""
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> Geometry:
        """Inverse of :meth:`to_json`."""
        return cls(
            size=tuple(int(v) for v in data["size"]),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in data["origin"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in data["direction"]),
        )


def image_suffix(path: Path) -> str:
    """The image suffix of ``path`` ('.nii.gz' counts as one), or '' if it is not an image."""
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def strip_suffix(path: Path) -> str:
    """The file name without its image suffix."""
    suffix = image_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


HEADER_READERS: dict[str, Callable[[Path], HeaderFacts]] = {
    ".nii.gz": read_nifti_header,
    ".nii": read_nifti_header,
    ".nrrd": read_nrrd_header,
    ".nhdr": read_nrrd_header,
    ".mha": read_meta_header,
    ".mhd": read_meta_header,
}
"""How each file format's header is read before its voxels are."""


def read_image(path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> sitk.Image:
    """Read an image file or a DICOM series folder, its header checked before any voxel.

    Raises:
        DataError: the path is missing, not an image, truncated, corrupt, promises more than
            ``max_voxels`` voxels or otherwise unreadable; it names the file at fault.
    """
    if not path.exists():
        raise DataError(path, ProblemKind.UNREADABLE.value, "file not found", "check the path")
    if path.is_dir():
        return _read_checked(path, lambda: read_dicom_series(path, max_voxels))
    suffix = image_suffix(path)
    if not suffix:
        raise DataError(
            path,
            ProblemKind.UNREADABLE.value,
            "not a supported image file",
            f"use one of {', '.join(IMAGE_SUFFIXES)} or a DICOM series folder",
        )
    check_header(path, HEADER_READERS[suffix](path), max_voxels)
    return _read_checked(path, lambda: sitk.ReadImage(str(path)))


def _read_checked(path: Path, read: Callable[[], sitk.Image]) -> sitk.Image:
    """``read()``, with any failure of the imaging library as a DataError naming ``path``."""
    try:
        image = read()
    except DataError:
        raise
    except Exception as err:  # SimpleITK/GDCM raise RuntimeError, MemoryError, OSError, ...
        lines = str(err).strip().splitlines()
        detail = lines[-1].strip()[:200] if lines else type(err).__name__
        raise header_error(
            path, f"cannot be read, it may be truncated or corrupt ({detail})"
        ) from None
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise header_error(path, f"has voxel spacing {spacing}: spacing must be positive mm")
    placement = (*image.GetOrigin(), *image.GetDirection())
    if not all(math.isfinite(v) for v in placement):
        raise header_error(
            path,
            f"has origin {image.GetOrigin()} and direction {image.GetDirection()}: "
            "they must be finite numbers",
            "fix the export's orientation (NIfTI qform/sform, NRRD space origin/directions)",
        )
    return image


def write_image(image: sitk.Image, path: Path, *, compress: bool = True) -> None:
    """Write ``image`` atomically: into a temporary folder beside ``path``, then renamed.

    Two-file formats (.mhd + .zraw, .nhdr + .raw) move their data file first, the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        with disk_full_reported(path):
            sitk.WriteImage(image, str(staging / path.name), useCompression=compress)
        _check_written(staging / path.name, image, path)
        for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_written(staged: Path, image: sitk.Image, path: Path) -> None:
    """Read the staged file back: ITK ignores a failed write (a full disk leaves a cut-short
    file and no error), so a file that does not read back as ``image``'s grid is refused.

    Raises:
        DiskFullError: it does not read back and the disk has less room than the image needs.
        OSError: it does not read back for another reason (named ``path``).
    """
    try:
        size = sitk.ReadImage(str(staged)).GetSize()
    except RuntimeError:
        size = None
    if size == image.GetSize():
        return
    needed = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * 8
    if shutil.disk_usage(staged.parent).free < needed:
        raise DiskFullError(path)
    raise OSError(errno.EIO, "the image did not read back intact after writing", str(path))


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes: FLOAT32, FLOAT64


def nifti_nonfinite_count(path: Path) -> int:
    """NaN/Inf voxels stored in a float NIfTI file (0 for other files and types).

    ITK's NIfTI reader silently turns NaN into 0, so the stored payload is scanned directly.
    """
    suffix = image_suffix(path)
    if suffix not in (".nii", ".nii.gz") or not path.is_file():
        return 0
    opener = gzip.open if suffix == ".nii.gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
        raise header_error(path, f"cannot be read, it is truncated or corrupt ({err})") from None
    if len(raw) < 4:
        return 0
    for order in ("<", ">"):
        header_size = int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0])
        if header_size in (348, 540):
            break
    else:
        return 0
    if header_size == 348:
        datatype = int(np.frombuffer(raw[70:72], dtype=f"{order}i2")[0])
        offset = int(np.frombuffer(raw[108:112], dtype=f"{order}f4")[0])
    else:
        datatype = int(np.frombuffer(raw[12:14], dtype=f"{order}i2")[0])
        offset = int(np.frombuffer(raw[168:176], dtype=f"{order}i8")[0])
    if datatype not in _NIFTI_FLOAT_TYPES:
        return 0
    dtype = np.dtype(f"{order}{_NIFTI_FLOAT_TYPES[datatype]}")
    usable = (len(raw) - offset) // dtype.itemsize * dtype.itemsize
    payload = np.frombuffer(raw[offset : offset + usable], dtype=dtype)
    return int(payload.size - np.count_nonzero(np.isfinite(payload)))


def to_array(image: sitk.Image) -> np.ndarray:
    """Voxels as a numpy array in (z, y, x) order, as SimpleITK returns them."""
    return sitk.GetArrayFromImage(image)


def from_array(array: np.ndarray, geometry: Geometry | None = None) -> sitk.Image:
    """An image from a (z, y, x) array, with ``geometry`` stamped on when given."""
    image = sitk.GetImageFromArray(array)
    return geometry.apply_to(image) if geometry is not None else image
