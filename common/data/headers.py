"""What an image file's header promises, read before a single voxel is: sizes, spacing, bytes.

:func:`read_header` parses the header of a NIfTI, NRRD or MetaImage file into
:class:`HeaderFacts`; :func:`check_header` refuses, as a typed
:class:`~common.errors.DataError` naming the file, a header whose sizes are zero, whose spacing
is not a positive number, whose voxels exceed ``data.max-voxels``, whose data file is missing,
or whose stored voxels are fewer than it promises (a file cut short, compressed or not). SimpleITK
reads some truncated files without a word (a cut ``.nii.gz`` comes back with invented voxels),
so this check runs before it.
"""

from __future__ import annotations

import bz2
import gzip
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.data.problems import ProblemKind
from common.errors import DataError

CHUNK_BYTES = 1 << 20
"""Bytes read at a time when a compressed payload is measured."""


@dataclass(frozen=True)
class HeaderFacts:
    """What a header says about its voxels.

    The stored stream starts ``data_offset`` bytes into ``data_path``; ``encoding`` is how it
    is stored: 'raw', 'gzip', 'zlib', 'bzip2', or 'unchecked' (text encodings and file lists,
    whose size cannot be told from bytes). The voxels start ``skip`` bytes into the stream
    once decompressed (a ``.nii.gz`` compresses its header too).
    """

    sizes: tuple[int, ...]
    spacing: tuple[float, ...]
    voxel_bytes: int
    data_path: Path
    data_offset: int
    encoding: str
    skip: int = 0

    @property
    def voxels(self) -> int:
        """Voxels the header promises (0 if any size is not positive)."""
        return math.prod(self.sizes) if all(s > 0 for s in self.sizes) else 0


def header_error(
    path: Path, message: str, hint: str = "re-export or re-copy the file"
) -> DataError:
    """The typed error for a file whose header or payload cannot be used."""
    return DataError(path, ProblemKind.UNREADABLE.value, message, hint)


def _stream_chunks(path: Path, encoding: str, offset: int) -> Iterator[bytes]:
    """The payload's bytes, decompressed, chunk by chunk."""
    with path.open("rb") as handle:
        handle.seek(offset)
        if encoding == "gzip":
            with gzip.GzipFile(fileobj=handle) as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    yield chunk
            return
        decompressor: Any = zlib.decompressobj() if encoding == "zlib" else bz2.BZ2Decompressor()
        while chunk := handle.read(CHUNK_BYTES):
            yield decompressor.decompress(chunk)
        if not decompressor.eof:
            raise EOFError("compressed stream ended before its end marker")


def stored_bytes(path: Path, facts: HeaderFacts, limit: int) -> int:
    """Payload bytes the file really holds (decompressed), counting at most ``limit``.

    Raises:
        DataError: the compressed stream is cut short or corrupt; it names ``path`` (the file
            the user gave) and the data file when that is another one.
    """
    if facts.encoding == "raw":
        return max(0, facts.data_path.stat().st_size - facts.data_offset)
    count = 0
    try:
        for chunk in _stream_chunks(facts.data_path, facts.encoding, facts.data_offset):
            count += len(chunk)
            if count >= limit:
                break
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        where = "" if facts.data_path == path else f" in {facts.data_path}"
        raise header_error(
            path, f"compressed voxel data{where} is truncated or corrupt ({err})"
        ) from None
    return count


def check_header(path: Path, facts: HeaderFacts, max_voxels: int) -> None:
    """Refuse a header that cannot describe a usable volume, before any voxel is allocated.

    Raises:
        DataError: zero or negative sizes, spacing not positive and finite, more voxels than
            ``max_voxels``, a missing data file, or fewer stored voxels than promised.
    """
    if not facts.sizes or any(size < 1 for size in facts.sizes):
        raise header_error(path, f"header gives sizes {facts.sizes}: every size must be >= 1")
    if any(not math.isfinite(s) or s <= 0 for s in facts.spacing):
        raise header_error(
            path,
            f"header gives voxel spacing {facts.spacing}: spacing must be positive mm",
            "fix the export's spacing (pixdim / spacings)",
        )
    if facts.voxels > max_voxels:
        raise header_error(
            path,
            f"header promises {facts.voxels:,} voxels, more than data.max-voxels = {max_voxels:,}",
            "crop or downsample the volume, or raise data.max-voxels if memory allows",
        )
    if not facts.data_path.is_file():
        raise header_error(
            path,
            f"its voxel data file {facts.data_path} is missing",
            "copy the data file beside it",
        )
    if facts.encoding == "unchecked":
        return
    needed = facts.voxels * facts.voxel_bytes
    held = stored_bytes(path, facts, facts.skip + needed) - facts.skip
    if held < needed:
        raise header_error(
            path,
            f"is truncated: it holds {max(held, 0):,} bytes of voxels, its header promises "
            f"{needed:,}",
        )
