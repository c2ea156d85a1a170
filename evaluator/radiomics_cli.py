"""``fedsynth radiomics``: the pyradiomics features of one structure of one case, as a CSV.

The CSV has two columns, ``feature,value``: a header row, then one row per feature in
pyradiomics' order and with pyradiomics' names (``original_firstorder_Mean``, ...); values are
written with ``repr`` (every digit of the float, ``nan`` where pyradiomics defines none), so
``float(value)`` gives back the exact number. Diagnostics are not written.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import typer

from common.atomic import atomic_write_text
from common.cli.support import console, plural, user_errors
from common.data.imageio import read_image
from common.errors import ConfigError, OutputExistsError
from evaluator.radiomics import extract_features, settings_from_file

DEFAULT_LABEL = 1  # pyradiomics' default structure label
CSV_HEADER = ("feature", "value")


def features_csv(features: dict[str, float]) -> str:
    """The two-column CSV text of a feature mapping (see the module's docstring)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((name, repr(value)) for name, value in features.items())
    return buffer.getvalue()


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; --out takes the path of the CSV file to write")
    if out.exists() and not overwrite:
        raise OutputExistsError(out, "choose another --out or pass --overwrite")


@user_errors
def radiomics_command(
    image: Path = typer.Argument(..., help="The image: NIfTI, NRRD, MetaImage or DICOM folder."),
    mask: Path = typer.Argument(..., help="The label map, on the image's voxel grid."),
    out: Path = typer.Option(..., "--out", help="The CSV to write (columns feature,value)."),
    label: int | None = typer.Option(
        None, "--label", help="The structure's label value (default: the settings' label, or 1)."
    ),
    settings_file: Path | None = typer.Option(
        None,
        "--settings",
        help="A pyradiomics params file (.yaml, .yml, .json), or a pyradiomics baseline CSV "
        "whose recorded settings are used (default: pyradiomics' defaults).",
        dir_okay=False,
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing CSV."),
) -> None:
    """Extract the pyradiomics features (original image: first order, shape, GLCM, GLRLM, GLSZM,
    GLDM, NGTDM) of one structure and write them as a feature,value CSV."""
    _check_out(out, overwrite)
    settings = settings_from_file(settings_file) if settings_file is not None else {}
    recorded = settings.get("label")
    structure = label if label is not None else recorded if recorded else DEFAULT_LABEL
    started = time.perf_counter()
    with console.status(f"extracting radiomics features of label {structure}"):
        features = extract_features(
            read_image(image),
            read_image(mask),
            structure,
            settings,
            source=mask,
            image_source=image,
        )
    atomic_write_text(out, features_csv(features))
    undefined = sum(1 for value in features.values() if math.isnan(value))
    note = (
        f" ({plural(undefined, 'feature')} NaN: undefined for this structure)" if undefined else ""
    )
    elapsed = time.perf_counter() - started
    console.print(
        f"wrote {plural(len(features), 'feature')} of label {structure} to {out} "
        f"in {elapsed:.1f} s{note}"
    )
