"""The NIfTI-1 and NIfTI-2 header fields that say how many voxels follow and how big they are."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from common.data.headers import HeaderFacts, header_error

NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540

DATATYPE_BYTES = {
    2: 1,  # uint8
    4: 2,  # int16
    8: 4,  # int32
    16: 4,  # float32
    32: 8,  # complex64
    64: 8,  # float64
    128: 3,  # rgb24
    256: 1,  # int8
    512: 2,  # uint16
    768: 4,  # uint32
    1024: 8,  # int64
    1280: 8,  # uint64
    1536: 16,  # float128
    1792: 16,  # complex128
    2048: 32,  # complex256
    2304: 4,  # rgba32
}
"""Bytes per voxel of every datatype code the NIfTI standard defines."""

# (datatype, dim, pixdim, vox_offset): struct codes and byte offsets per header version
_LAYOUT = {
    NIFTI1_HEADER_BYTES: (("h", 70), ("8h", 40), ("8f", 76), ("f", 108)),
    NIFTI2_HEADER_BYTES: (("h", 12), ("8q", 16), ("8d", 104), ("q", 168)),
}


def _head(path: Path, compressed: bool) -> bytes:
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                return stream.read(NIFTI2_HEADER_BYTES)
        with path.open("rb") as handle:
            return handle.read(NIFTI2_HEADER_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
        raise header_error(path, f"is truncated or corrupt ({err})") from None


def _field(raw: bytes, order: str, code: str, offset: int) -> tuple[float, ...]:
    return struct.unpack_from(f"{order}{code}", raw, offset)


def read_nifti_header(path: Path) -> HeaderFacts:
    """The facts of a ``.nii`` or ``.nii.gz`` header.

    Raises:
        DataError: the file is too short for a header, is not NIfTI, has a dimension count
            outside 1..7 or a datatype code the standard does not define.
    """
    compressed = path.name.lower().endswith(".gz")
    raw = _head(path, compressed)
    if len(raw) < NIFTI1_HEADER_BYTES:
        raise header_error(path, f"is {len(raw)} bytes long, shorter than a NIfTI header")
    for order in ("<", ">"):
        version = struct.unpack_from(f"{order}i", raw)[0]
        if version in _LAYOUT and len(raw) >= version:
            break
    else:
        raise header_error(path, "is not a NIfTI file (its header size field is wrong)")
    datatype_at, dim_at, pixdim_at, offset_at = _LAYOUT[version]
    datatype = int(_field(raw, order, *datatype_at)[0])
    dims = [int(d) for d in _field(raw, order, *dim_at)]
    pixdim = _field(raw, order, *pixdim_at)
    vox_offset = float(_field(raw, order, *offset_at)[0])
    if datatype not in DATATYPE_BYTES:
        raise header_error(path, f"has NIfTI datatype code {datatype}, which no standard defines")
    if not 1 <= dims[0] <= 7:
        raise header_error(path, f"header gives {dims[0]} dimensions; NIfTI allows 1 to 7")
    if not vox_offset == vox_offset or vox_offset < 0 or vox_offset > 1 << 40:
        raise header_error(path, f"header gives voxel data offset {vox_offset}")
    offset = max(int(vox_offset), version)
    return HeaderFacts(
        sizes=tuple(dims[1 : dims[0] + 1]),
        spacing=tuple(float(p) for p in pixdim[1 : min(dims[0], 3) + 1]),
        voxel_bytes=DATATYPE_BYTES[datatype],
        data_path=path,
        data_offset=0 if compressed else offset,
        encoding="gzip" if compressed else "raw",
        skip=offset if compressed else 0,
    )
