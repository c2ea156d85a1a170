"""Hypothesis strategies that draw :class:`~bench.fuzz_files.FuzzCase` s for every reader and
layout: cut files, flipped bytes, absurd header fields, missing data files, broken DICOM series
and nnU-Net ``dataset.json`` files.

The suite runs them with a fixed seed (``tests/common/test_fuzz_readers.py``); ``python -m
bench.fuzz`` runs many more.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from bench.fuzz_files import (
    DICOM_TAGS,
    FORMATS,
    META_KEYS,
    NIFTI_FIELDS,
    NRRD_KEYS,
    Flip,
    FuzzCase,
    Junk,
    MissingData,
    Mutation,
    SetField,
    SetTag,
    Slices,
    Truncate,
    Volume,
)

ABSURD_TEXT = (
    "0",
    "-1",
    "1",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "1e-320",
    "4294967297",
    "99999999999999999999",
    "-0",
    "",
    "x",
    "nan nan nan",
    "0 0 0",
    "-1 -1 -1",
    "100000 100000 100000",
    "1e9 1 1",
    "(nan,0,0) (0,1,0) (0,0,1)",
    "(0,0,0) (0,0,0) (0,0,0)",
    "(1,0) (0,1)",
    "none none none",
    "LIST",
    "missing.raw",
    "../case.raw",
    "ascii",
    "hex",
    "MET_FLOAT",
    "MET_STRING",
    "True",
    "False",
    "LOCAL",
    "\\",
    "1\\0\\0\\0\\0\\0",
    "0\\0\\0\\0\\0\\0",
    "nan\\nan",
    "0\\0",
    "1e30\\1e30",
    "big",
)
"""Header values that have broken readers elsewhere: zeros, signs, NaN, overflow, wrong counts."""

MAX_SIDE = 5
"""Largest size of a fuzzed volume along an axis (the cases stay tiny and fast)."""
FIELD_WEIGHT = 4
"""How many times more often a header field is edited than the file is cut or a byte flipped
(there are many fields, and the crashes found so far were in field values)."""
FILE_DTYPES = ("int16", "uint8", "uint16", "int32", "float32", "float64")
DICOM_FORMAT = "dicom"
MAX_MUTATIONS = 3
LAYOUTS = ("file", "nnunet", "brats", "pattern")
SITE_FORMATS = {
    "nnunet": tuple(f for f in FORMATS if f != DICOM_FORMAT),
    "brats": ("nii.gz",),
    "pattern": tuple(f for f in FORMATS if f != DICOM_FORMAT),
}
"""The formats each site layout is fuzzed with (BraTS files are .nii.gz by definition)."""


def numbers_text() -> st.SearchStrategy[str]:
    """Header text: absurd values, integers, floats and lists of them, vectors, short junk."""
    number = st.one_of(
        st.integers(-(1 << 40), 1 << 40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    absurd = st.sampled_from(ABSURD_TEXT)
    return st.one_of(
        absurd,
        absurd,
        absurd,
        number,
        st.lists(number, min_size=1, max_size=4).map(" ".join),
        st.lists(st.lists(number, min_size=1, max_size=3), min_size=1, max_size=4).map(
            lambda vectors: " ".join(f"({','.join(v)})" for v in vectors)
        ),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
    )


def volumes(*, dicom: bool = False, site: bool = False) -> st.SearchStrategy[Volume]:
    """Tiny volumes; a site's are at least 2 voxels a side and int16 CT (so they pass the
    checks when unbroken); a DICOM series has at least 2 slices."""
    low = 2 if site or dicom else 1
    side = st.integers(low, MAX_SIDE)
    dtype = st.just("int16") if dicom or site else st.sampled_from(FILE_DTYPES)
    spacing = st.floats(0.1, 5.0).map(lambda s: round(s, 3))
    return st.builds(
        Volume,
        size=st.tuples(side, side, st.integers(max(low, 2 if dicom else 1), MAX_SIDE)),
        dtype=dtype,
        spacing=st.tuples(spacing, spacing, spacing),
        seed=st.integers(0, 1000),
    )


def _nifti_field() -> st.SearchStrategy[Mutation]:
    def value(name: str) -> st.SearchStrategy[SetField]:
        code = NIFTI_FIELDS[name][0]
        numbers: st.SearchStrategy[Any] = (
            st.one_of(
                st.sampled_from((0, -1, 1, 2, 3, 7, 8, 16, 64, 32767)), st.integers(-32768, 32767)
            )
            if code == "h"
            else st.floats(width=32, allow_nan=True, allow_infinity=True)
        )
        return numbers.map(lambda v: SetField(name, v))

    return st.sampled_from(sorted(NIFTI_FIELDS)).flatmap(value)


def _text_field(keys: tuple[str, ...]) -> st.SearchStrategy[Mutation]:
    return st.builds(SetField, st.sampled_from(keys), st.one_of(st.none(), numbers_text()))


def file_mutations(fmt: str) -> st.SearchStrategy[Mutation]:
    """Ways to break one image file (with its detached data file, if any)."""
    detached = fmt.startswith(("nhdr", "mhd"))
    fraction = st.floats(0.0, 1.0, exclude_max=True)
    fields = (
        _nifti_field()
        if fmt.startswith("nii")
        else _text_field(NRRD_KEYS if fmt.startswith(("nrrd", "nhdr")) else META_KEYS)
    )
    options: list[st.SearchStrategy[Mutation]] = [
        st.builds(Truncate, fraction, st.booleans() if detached else st.just(False)),
        st.builds(Flip, fraction, st.integers(1, 255)),
        st.builds(Flip, fraction, st.integers(1, 255), st.just(True)),
        *([fields] * FIELD_WEIGHT),
    ]
    if detached:
        options.append(st.just(MissingData()))
    return st.one_of(*options)


def series_mutations() -> st.SearchStrategy[Mutation]:
    """Ways to break a DICOM series folder."""
    index = st.integers(0, MAX_SIDE)
    return st.one_of(
        st.builds(
            Slices,
            st.sampled_from(("drop", "duplicate", "odd-size", "odd-spacing", "odd-series")),
            index,
        ),
        st.builds(SetTag, index, st.sampled_from(sorted(DICOM_TAGS)), numbers_text()),
        st.builds(Truncate, st.floats(0.0, 1.0, exclude_max=True), st.just(False), index),
        st.builds(
            Flip, st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255), st.just(False), index
        ),
        st.builds(
            Junk,
            st.sampled_from(("text", "empty", "bytes", "cut-slice")),
            st.sampled_from(("junk.dcm", "notes.txt", ".DS_Store", "DICOMDIR", "zz")),
            st.binary(max_size=200),
        ),
    )


def dataset_json_text(ending: str) -> st.SearchStrategy[str | None]:
    """An nnU-Net ``dataset.json``: the correct one (None), or JSON of any shape, or junk."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 5), st.floats(), st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=6,
    )
    labels = st.dictionaries(
        st.sampled_from(("background", "tumour", "GTV", "bone", "enhancing tumor", "x")),
        values,
        max_size=4,
    )
    documents = st.fixed_dictionaries(
        {"labels": st.one_of(labels, values), "file_ending": st.one_of(st.just(ending), values)}
    )
    return st.one_of(
        st.none(),
        documents.map(json.dumps),
        values.map(json.dumps),
        st.text(max_size=30),
    )


@st.composite
def fuzz_cases(
    draw: st.DrawFn, layouts: tuple[str, ...] = LAYOUTS, formats: tuple[str, ...] = ()
) -> FuzzCase:
    """One fuzz case: a format (of ``formats`` when given), a layout, a tiny volume and up to
    three mutations."""
    layout = draw(st.sampled_from(layouts))
    allowed = tuple(FORMATS) if layout == "file" else SITE_FORMATS[layout]
    fmt = draw(st.sampled_from([f for f in allowed if f in formats] if formats else allowed))
    dicom = fmt == DICOM_FORMAT
    mutation = series_mutations() if dicom else file_mutations(fmt)
    return FuzzCase(
        format=fmt,
        volume=draw(volumes(dicom=dicom, site=layout != "file")),
        mutations=tuple(draw(st.lists(mutation, max_size=MAX_MUTATIONS))),
        layout=layout,
        in_label=layout != "file" and draw(st.booleans()),
        dataset_json=draw(dataset_json_text(FORMATS[fmt][0])) if layout == "nnunet" else None,
    )
