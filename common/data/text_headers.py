"""The text headers of NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) files."""

from __future__ import annotations

import math
from pathlib import Path

from common.data.headers import HeaderFacts, header_error

HEADER_LIMIT_BYTES = 1 << 16
"""A text header longer than this is not a header: the file is refused."""

NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char"), 1),
    **dict.fromkeys(("uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16"), 2),
    **dict.fromkeys(("int16_t", "ushort", "unsigned short", "unsigned short int"), 2),
    **dict.fromkeys(("uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int"), 4),
    **dict.fromkeys(("uint32", "uint32_t", "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long"), 8),
    **dict.fromkeys(("signed long long int", "int64", "int64_t", "ulonglong"), 8),
    **dict.fromkeys(("unsigned long long", "unsigned long long int", "uint64", "uint64_t"), 8),
    "double": 8,
}
"""Bytes per voxel of every NRRD type name (the NRRD0005 specification's list)."""

NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
NRRD_TEXT_ENCODINGS = ("ascii", "text", "txt", "hex")

META_TYPE_BYTES = {
    **dict.fromkeys(("MET_CHAR", "MET_UCHAR"), 1),
    **dict.fromkeys(("MET_SHORT", "MET_USHORT"), 2),
    **dict.fromkeys(("MET_INT", "MET_UINT", "MET_LONG", "MET_ULONG", "MET_FLOAT"), 4),
    **dict.fromkeys(("MET_LONG_LONG", "MET_ULONG_LONG", "MET_DOUBLE"), 8),
}
"""Bytes per voxel of the MetaImage element types ITK reads."""
META_MAX_DIMS = 5
"""Most dimensions a MetaImage may have: ITK crashes (not raises) on a header with more, or
with fewer than one."""
DATA_FILE_KEY = b"ElementDataFile"
"""The last field of a MetaImage header: the voxels follow the line it is on."""


def _header_text(path: Path, end: bytes, start: int = 0) -> tuple[list[str], int]:
    """The header's lines from byte ``start`` and the byte offset just after ``end``, which
    closes the header."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEADER_LIMIT_BYTES)
    except OSError as err:
        raise header_error(path, f"cannot be read ({err})") from None
    stop = head.find(end, start)
    if stop < 0:
        stop = len(head) if len(head) < HEADER_LIMIT_BYTES else -1
    if stop < 0:
        raise header_error(path, f"has no end of header within {HEADER_LIMIT_BYTES} bytes")
    try:
        text = head[start:stop].decode("ascii")
    except UnicodeDecodeError:
        raise header_error(path, "its header is not ASCII text") from None
    return text.splitlines(), min(stop + len(end), len(head))


def _numbers(path: Path, key: str, text: str, kind: type = float) -> tuple[float, ...]:
    try:
        return tuple(kind(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise header_error(path, f"header field {key!r} is not numeric: {text!r}") from None


def _vector_lengths(path: Path, text: str) -> tuple[float, ...]:
    lengths = []
    for vector in text.split():
        if vector == "none":
            continue
        parts = _numbers(path, "space directions", vector.strip("()"))
        lengths.append(math.sqrt(sum(p * p for p in parts)) if parts else math.nan)
    return tuple(lengths)


def read_nrrd_header(path: Path) -> HeaderFacts:
    """The facts of an NRRD header, attached (``.nrrd``) or detached (``.nhdr``).

    Raises:
        DataError: not NRRD, a required field missing or malformed, an unknown type or
            encoding.
    """
    lines, end = _header_text(path, b"\n\n")
    if not lines or not lines[0].startswith("NRRD000"):
        raise header_error(path, "is not an NRRD file (no NRRD000X magic line)")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    for required in ("type", "sizes", "encoding"):
        if required not in fields:
            raise header_error(path, f"its NRRD header has no {required!r} field")
    type_name = fields["type"].lower()
    if type_name not in NRRD_TYPE_BYTES:
        raise header_error(path, f"has NRRD type {fields['type']!r}, which fedsynth cannot read")
    encoding = fields["encoding"].lower()
    if encoding not in NRRD_ENCODINGS and encoding not in NRRD_TEXT_ENCODINGS:
        raise header_error(path, f"has NRRD encoding {fields['encoding']!r}, which is unknown")
    sizes = tuple(int(s) for s in _numbers(path, "sizes", fields["sizes"], int))
    if "space directions" in fields:
        spacing = _vector_lengths(path, fields["space directions"])
    else:
        spacing = _numbers(path, "spacings", fields.get("spacings", ""))
    data_name = fields.get("data file", fields.get("datafile", ""))
    if data_name.startswith("LIST") or "%" in data_name:
        encoding = "unchecked"  # a file list: ITK checks each file
    data_path = (path.parent / data_name) if data_name else path
    return HeaderFacts(
        sizes=sizes,
        spacing=spacing,
        voxel_bytes=NRRD_TYPE_BYTES[type_name],
        data_path=data_path,
        data_offset=0 if data_name else end,
        encoding=NRRD_ENCODINGS.get(encoding, "unchecked"),
    )


def read_meta_header(path: Path) -> HeaderFacts:
    """The facts of a MetaImage header, one file (``.mha``) or with a data file (``.mhd``).

    Raises:
        DataError: a required field missing or malformed, or an unknown element type.
    """
    lines, after = _header_text(path, DATA_FILE_KEY)
    last, end = _header_text(path, b"\n", start=after - len(DATA_FILE_KEY))
    fields: dict[str, str] = {}
    for line in [*lines, *last[:1]]:
        key, equals, value = line.partition("=")
        if equals:
            fields[key.strip()] = value.strip()
    for required in ("DimSize", "ElementType", "ElementDataFile"):
        if required not in fields:
            raise header_error(path, f"its MetaImage header has no {required!r} field")
    element = fields["ElementType"]
    if element not in META_TYPE_BYTES:
        raise header_error(path, f"has MetaImage element type {element!r}, which is unknown")
    sizes = tuple(int(s) for s in _numbers(path, "DimSize", fields["DimSize"], int))
    channels = _count(path, "ElementNumberOfChannels", fields.get("ElementNumberOfChannels", "1"))
    dims = _count(path, "NDims", fields.get("NDims", str(len(sizes))))
    if not 1 <= dims <= META_MAX_DIMS or len(sizes) != dims:
        raise header_error(
            path,
            f"its MetaImage header gives NDims = {fields.get('NDims')} and DimSize {sizes}: "
            f"NDims must be 1 to {META_MAX_DIMS}, with one size per dimension",
        )
    data_name = fields["ElementDataFile"]
    encoding = "zlib" if fields.get("CompressedData", "False").lower() == "true" else "raw"
    if data_name.startswith("LIST") or "%" in data_name or " " in data_name:
        encoding = "unchecked"  # a file list or pattern: ITK checks each file
    local = data_name == "LOCAL"
    facts = HeaderFacts(
        sizes=sizes,
        spacing=_numbers(path, "ElementSpacing", fields.get("ElementSpacing", "1")),
        voxel_bytes=META_TYPE_BYTES[element] * channels,
        data_path=path if local else path.parent / data_name,
        data_offset=end if local else 0,
        encoding=encoding,
    )
    if encoding == "zlib" and "CompressedDataSize" in fields:
        _check_compressed_size(path, facts, fields["CompressedDataSize"])
    return facts


def _count(path: Path, key: str, text: str) -> int:
    """A header field that must be one whole number >= 1."""
    values = _numbers(path, key, text, int)
    if len(values) != 1 or values[0] < 1:
        raise header_error(
            path, f"header field {key!r} is {text!r}: it must be a whole number >= 1"
        )
    return int(values[0])


def _check_compressed_size(path: Path, facts: HeaderFacts, text: str) -> None:
    """Refuse a CompressedDataSize that is not a byte count the file can hold: ITK allocates
    that many bytes before it reads one."""
    if not facts.data_path.is_file():
        return  # check_header names the missing data file
    values = _numbers(path, "CompressedDataSize", text, int)
    held = facts.data_path.stat().st_size - facts.data_offset
    if len(values) != 1 or values[0] < 0:
        raise header_error(path, f"header field 'CompressedDataSize' is {text!r}, not a byte count")
    if values[0] > held:
        raise header_error(
            path,
            f"is truncated: its header gives CompressedDataSize = {values[0]:,} bytes, the file "
            f"holds {max(held, 0):,}",
        )
