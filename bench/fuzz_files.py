"""Tiny image files in every format fedsynth reads, and the ways a fuzz case breaks them.

A :class:`FuzzCase` is plain data (a format, a tiny volume, a list of mutations), so that a
failing case found by hypothesis can be written down as a regression test. :func:`build`
writes the volume and applies the mutations; :func:`read_target` is what the readers get.
Header fields are edited properly (NIfTI fields by their byte offsets, text headers line by
line, DICOM tags through the writer), not only as random bytes.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.data.imageio import write_image
from common.data.nnunet import CHANNEL_0, IMAGES_DIR, LABELS_DIR
from simulations.phantoms.dicom import write_dicom_series

FORMATS = {
    "nii": (".nii", False),
    "nii.gz": (".nii.gz", True),
    "nrrd": (".nrrd", False),
    "nrrd-gzip": (".nrrd", True),
    "nhdr": (".nhdr", True),
    "nhdr-raw": (".nhdr", False),
    "mha": (".mha", False),
    "mha-zlib": (".mha", True),
    "mhd": (".mhd", True),
    "mhd-raw": (".mhd", False),
    "dicom": ("", False),
}
"""Fuzzed formats: file suffix and whether the voxels are compressed."""

NIFTI_FIELDS = {
    "dim0": ("h", 40),
    "dim1": ("h", 42),
    "dim2": ("h", 44),
    "dim3": ("h", 46),
    "dim4": ("h", 48),
    "datatype": ("h", 70),
    "bitpix": ("h", 72),
    "qfac": ("f", 76),
    "pixdim1": ("f", 80),
    "pixdim2": ("f", 84),
    "pixdim3": ("f", 88),
    "vox_offset": ("f", 108),
    "scl_slope": ("f", 112),
    "scl_inter": ("f", 116),
    "qform_code": ("h", 252),
    "sform_code": ("h", 254),
    "quatern_b": ("f", 256),
    "qoffset_x": ("f", 268),
    "srow_x0": ("f", 280),
    "srow_z2": ("f", 320),
}
"""NIfTI-1 header fields a case may set: struct code and byte offset (little endian)."""
NIFTI1_HEADER_BYTES = 348

NRRD_KEYS = (
    "type",
    "dimension",
    "space",
    "sizes",
    "space directions",
    "spacings",
    "kinds",
    "endian",
    "encoding",
    "space origin",
    "data file",
    "byte skip",
    "line skip",
)
META_KEYS = (
    "NDims",
    "BinaryData",
    "BinaryDataByteOrderMSB",
    "CompressedData",
    "CompressedDataSize",
    "TransformMatrix",
    "Offset",
    "ElementSpacing",
    "DimSize",
    "ElementNumberOfChannels",
    "HeaderSize",
    "ElementType",
    "ElementDataFile",
)
DICOM_TAGS = {
    "spacing": "0028|0030",
    "position": "0020|0032",
    "orientation": "0020|0037",
    "thickness": "0018|0050",
    "series": "0020|000e",
    "slope": "0028|1053",
    "rows": "0028|0010",
}
"""DICOM tags a case may set on one slice."""
SERIES_UID = "1.2.826.0.1.3680043.2.1125.9"
OTHER_SERIES_UID = "1.2.826.0.1.3680043.2.1125.10"


@dataclass(frozen=True)
class Volume:
    """A tiny volume: size (x, y, z), voxel type, spacing in mm, and the seed of its voxels."""

    size: tuple[int, int, int] = (4, 3, 5)
    dtype: str = "int16"
    spacing: tuple[float, float, float] = (1.5, 1.0, 2.0)
    seed: int = 0

    def image(self) -> sitk.Image:
        """The volume as an image: random values with air (-1000) at the first voxel."""
        rng = np.random.default_rng(self.seed)
        values = rng.integers(-1000, 1000, size=self.size[::-1]).astype(self.dtype)
        values.flat[0] = -1000 if np.issubdtype(values.dtype, np.signedinteger) else 0
        image = sitk.GetImageFromArray(values)
        image.SetSpacing(self.spacing)
        image.SetOrigin((-10.0, 20.0, 5.0))
        return image

    def label(self) -> sitk.Image:
        """A label map on the same grid: bone (2) in the first half, a tumour voxel (1)."""
        values = np.zeros(self.size[::-1], dtype=np.uint8)
        values[: self.size[2] // 2] = 2
        values.flat[-1] = 1
        label = sitk.GetImageFromArray(values)
        label.CopyInformation(self.image())
        return label


@dataclass(frozen=True)
class Truncate:
    """Cut the file (its data file, or slice ``index`` of a series) at a fraction of its size."""

    fraction: float
    data_file: bool = False
    index: int = 0


@dataclass(frozen=True)
class Flip:
    """XOR one byte: at a fraction of the header range, or of the compressed file as stored."""

    where: float
    xor: int = 0xFF
    compressed: bool = False
    index: int = 0


@dataclass(frozen=True)
class SetField:
    """Set a header field (added if absent) to ``value``; ``None`` removes the field."""

    name: str
    value: str | int | float | None


@dataclass(frozen=True)
class MissingData:
    """Delete a detached data file (``.nhdr``, ``.mhd``)."""


@dataclass(frozen=True)
class Slices:
    """Change a DICOM series: drop, duplicate, or replace slice ``index`` with one of another
    size, spacing or series."""

    kind: str
    index: int


@dataclass(frozen=True)
class SetTag:
    """Set a DICOM tag of slice ``index`` (by its name in :data:`DICOM_TAGS`)."""

    index: int
    name: str
    value: str


@dataclass(frozen=True)
class Junk:
    """Add a file that is not a slice: text, empty, random bytes, or a cut slice copy."""

    kind: str
    name: str = "junk.dcm"
    payload: bytes = b""


Mutation = Truncate | Flip | SetField | MissingData | Slices | SetTag | Junk


@dataclass(frozen=True)
class FuzzCase:
    """One fuzz case: a volume written in ``format``, then broken by ``mutations`` in order.

    ``layout`` is 'file' (the reader alone) or a site layout ('nnunet', 'brats', 'pattern')
    holding the case as its only one, the mutated file being its image or (``in_label``) its
    label map; ``dataset_json`` replaces an nnU-Net site's ``dataset.json`` when set.
    """

    format: str
    volume: Volume = Volume()
    mutations: tuple[Mutation, ...] = ()
    layout: str = "file"
    in_label: bool = False
    dataset_json: str | None = None


def _write_file(image: sitk.Image, folder: Path, stem: str, fmt: str) -> Path:
    suffix, compress = FORMATS[fmt]
    if fmt == "dicom":
        write_dicom_series(sitk.Cast(image, sitk.sitkInt16), folder / stem, SERIES_UID)
        return folder / stem
    path = folder / f"{stem}{suffix}"
    write_image(image, path, compress=compress)
    return path


def _data_files(path: Path) -> list[Path]:
    """The detached data files written beside a header."""
    stem = path.name.split(".")[0]
    return sorted(p for p in path.parent.glob(f"{stem}.*") if p != path)


def _header_span(raw: bytes, fmt: str) -> int:
    """How many leading bytes of the (decompressed) main file are its header."""
    if fmt.startswith("nii"):
        return NIFTI1_HEADER_BYTES
    if fmt.startswith(("nhdr", "mhd")):
        return len(raw)
    if fmt.startswith("nrrd"):
        return raw.find(b"\n\n") + 2
    return raw.find(b"\n", raw.find(b"ElementDataFile")) + 1


def _edit_main(path: Path, fmt: str, edit: Callable[[bytes, int], bytes]) -> None:
    """Apply ``edit(raw, header_bytes) -> raw`` to the main file, decompressed if .nii.gz."""
    zipped = fmt == "nii.gz"
    raw = path.read_bytes()
    try:
        raw = gzip.decompress(raw) if zipped else raw
    except (EOFError, OSError, zlib.error):
        return  # an earlier mutation cut or broke the stream: nothing to edit
    raw = edit(raw, min(len(raw), _header_span(raw, fmt)))
    path.write_bytes(gzip.compress(raw, mtime=0) if zipped else raw)


def _set_nifti(raw: bytes, name: str, value: str | int | float | None) -> bytes:
    code, offset = NIFTI_FIELDS[name]
    if len(raw) < NIFTI1_HEADER_BYTES:
        return raw  # an earlier mutation cut the header
    out = bytearray(raw)
    number = float(0 if value is None else value)
    if code == "h":
        struct.pack_into("<h", out, offset, int(np.clip(number, -(1 << 15), (1 << 15) - 1)))
    else:
        struct.pack_into("<f", out, offset, np.float32(number))
    return bytes(out)


def _set_text(raw: bytes, span: int, fmt: str, name: str, value: object) -> bytes:
    """Set (or remove) a field of an NRRD ``key: value`` or MetaImage ``Key = value`` header."""
    nrrd = fmt.startswith(("nrrd", "nhdr"))
    separator = ": " if nrrd else " = "
    lines = raw[:span].decode("latin-1").rstrip("\n").split("\n")
    key_of = [line.partition(":" if nrrd else "=")[0].strip() for line in lines]
    text = None if value is None else f"{name}{separator}{value}".replace("\n", " ")
    if name in key_of:
        at = key_of.index(name)
        lines[at : at + 1] = [] if text is None else [text]
    elif text is not None:
        at = len(lines) - (0 if nrrd else 1)  # MetaImage: ElementDataFile stays last
        lines.insert(at, text)
    header = "\n".join(lines) + ("\n\n" if fmt.startswith("nrrd") else "\n")
    return header.encode("latin-1") + raw[span:]


def _flip(raw: bytes, where: float, xor: int, start: int, stop: int) -> bytes:
    if stop <= start:
        return raw
    out = bytearray(raw)
    at = start + min(int(where * (stop - start)), stop - start - 1)
    out[at] ^= xor or 0xFF
    return bytes(out)


def _cut(path: Path, fraction: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(fraction * len(raw))])


def _apply_to_file(path: Path, fmt: str, mutation: Mutation) -> None:
    if isinstance(mutation, Truncate):
        data = _data_files(path)
        _cut(data[0] if mutation.data_file and data else path, mutation.fraction)
    elif isinstance(mutation, Flip) and mutation.compressed:
        target = ([*_data_files(path), path] if fmt.startswith(("nhdr", "mhd")) else [path])[0]
        raw = target.read_bytes()
        target.write_bytes(_flip(raw, mutation.where, mutation.xor, 0, len(raw)))
    elif isinstance(mutation, Flip):
        _edit_main(path, fmt, lambda raw, span: _flip(raw, mutation.where, mutation.xor, 0, span))
    elif isinstance(mutation, SetField) and fmt.startswith("nii"):
        if mutation.name in NIFTI_FIELDS:
            _edit_main(path, fmt, lambda raw, _span: _set_nifti(raw, mutation.name, mutation.value))
    elif isinstance(mutation, SetField):
        _edit_main(
            path, fmt, lambda raw, span: _set_text(raw, span, fmt, mutation.name, mutation.value)
        )
    elif isinstance(mutation, MissingData):
        for data_file in _data_files(path):
            data_file.unlink()


def _odd_slice(volume: Volume, kind: str, index: int, folder: Path) -> None:
    """Replace slice ``index`` of the series in ``folder`` with one of another grid or series."""
    size, spacing, uid = volume.size, volume.spacing, SERIES_UID
    if kind == "odd-size":
        size = (size[0] + 1, size[1], size[2])
    elif kind == "odd-spacing":
        spacing = (spacing[0] * 2, spacing[1], spacing[2])
    else:
        uid = OTHER_SERIES_UID
    other = Volume(size, "int16", spacing, volume.seed + 1).image()
    written = write_dicom_series(other, folder.parent / f"{folder.name}-odd", uid)
    shutil.move(written[index % len(written)], folder / f"slice{index % volume.size[2]:03d}.dcm")
    shutil.rmtree(folder.parent / f"{folder.name}-odd")


def _apply_to_series(folder: Path, volume: Volume, mutation: Mutation) -> None:
    slices = sorted(folder.glob("slice*.dcm"))
    chosen = slices[getattr(mutation, "index", 0) % len(slices)] if slices else None
    if isinstance(mutation, Slices) and chosen is not None:
        if mutation.kind == "drop":
            chosen.unlink()
        elif mutation.kind == "duplicate":
            shutil.copy(chosen, folder / f"copy-{chosen.name}")
        else:
            _odd_slice(volume, mutation.kind, mutation.index, folder)
    elif isinstance(mutation, SetTag) and chosen is not None:
        _set_tag(chosen, DICOM_TAGS[mutation.name], mutation.value)
    elif isinstance(mutation, Truncate) and chosen is not None:
        _cut(chosen, mutation.fraction)
    elif isinstance(mutation, Flip) and chosen is not None:
        raw = chosen.read_bytes()
        chosen.write_bytes(_flip(raw, mutation.where, mutation.xor, 0, len(raw)))
    elif isinstance(mutation, Junk):
        _add_junk(folder, mutation, slices)


def _set_tag(path: Path, tag: str, value: str) -> None:
    """Rewrite one slice with ``tag`` set; a slice an earlier mutation broke, or a value GDCM
    refuses to write, leaves it as it was."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    staged = path.with_name(f".{path.name}.tmp")
    writer.SetFileName(str(staged))
    try:
        image = sitk.ReadImage(str(path))
        image.SetMetaData(tag, value)
        writer.Execute(image)
    except RuntimeError:  # a cut slice, or orientation cosines GDCM cannot write
        staged.unlink(missing_ok=True)
        return
    staged.replace(path)


def _add_junk(folder: Path, junk: Junk, slices: list[Path]) -> None:
    target = folder / junk.name
    if junk.kind == "cut-slice" and slices:
        target.write_bytes(slices[0].read_bytes()[: len(slices[0].read_bytes()) // 2])
    elif junk.kind == "text":
        target.write_text("scanner log\n" + junk.payload.decode("latin-1"), encoding="utf-8")
    else:
        target.write_bytes(junk.payload)


def _site(case: FuzzCase, root: Path) -> tuple[Path, Path]:
    """Write a one-case site in ``case.layout``; return the site folder and the mutated file."""
    site = root / "site"
    volume = case.volume
    if case.layout == "nnunet":
        ending = FORMATS[case.format][0]
        meta = {"labels": {"background": 0, "tumour": 1, "bone": 2}, "file_ending": ending}
        site.mkdir(parents=True)
        (site / "dataset.json").write_text(
            case.dataset_json if case.dataset_json is not None else json.dumps(meta),
            encoding="utf-8",
        )
        image = _write_file(volume.image(), site / IMAGES_DIR, f"c{CHANNEL_0}", case.format)
        label = _write_file(volume.label(), site / LABELS_DIR, "c", case.format)
    elif case.layout == "brats":
        image = _write_file(volume.image(), site / "c", "c-t1c", case.format)
        label = _write_file(volume.label(), site / "c", "c-seg", case.format)
    else:
        image = _write_file(volume.image(), site, "c_image", case.format)
        label = _write_file(volume.label(), site, "c_label", case.format)
    return site, label if case.in_label else image


def build(case: FuzzCase, root: Path) -> Path:
    """Write ``case`` under ``root``, break it, and return what the reader is given: the
    image file or series folder for layout 'file', the site folder otherwise."""
    if case.layout == "file":
        root.mkdir(parents=True, exist_ok=True)
        target = _write_file(case.volume.image(), root, "case", case.format)
        mutated = target
    else:
        target, mutated = _site(case, root)
    for mutation in case.mutations:
        if case.format == "dicom":
            _apply_to_series(mutated, case.volume, mutation)
        else:
            _apply_to_file(mutated, case.format, mutation)
    return target
