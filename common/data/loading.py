"""Loading one case and checking it: every problem is found and named, nothing is guessed.

:func:`check_case` reads a case's image and label map, applies the label remap, and returns a
:class:`CaseReport` with what a person checking a site wants to see (shape, spacing, intensity
range, label voxel counts) and every problem found. :func:`load_case` is the same, but raises
the first problem as a :class:`~common.errors.DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.config import DataConfig
from common.data.bone import bone_from_hu
from common.data.imageio import Geometry, nifti_nonfinite_count, read_image, to_array
from common.data.layouts import CaseFiles
from common.data.problems import Problem, ProblemKind
from common.data.schema import LabelSchema, schema_for
from common.errors import DataError


@dataclass(frozen=True)
class CaseReport:
    """What a check found in one case; ``image``/``label`` are set only when it has no problem.

    ``label_counts`` holds voxel counts per structure name after the remap; ``bone_source`` is
    'mask' or 'threshold' for CT (where bone came from), None for MRI.
    """

    files: CaseFiles
    problems: tuple[Problem, ...]
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    intensity_range: tuple[float, float] | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    bone_source: str | None = None
    image: sitk.Image | None = field(default=None, repr=False, compare=False)
    label: sitk.Image | None = field(default=None, repr=False, compare=False)

    @property
    def case_id(self) -> str:
        """The case's identifier within its site."""
        return self.files.case_id

    @property
    def ok(self) -> bool:
        """True when the case has no problem."""
        return not self.problems


def _problem(files: CaseFiles, path: Path, kind: ProblemKind, message: str, hint: str) -> Problem:
    return Problem(files.case_id, path, kind, message, hint)


def _read(
    files: CaseFiles, which: str, data: DataConfig
) -> tuple[sitk.Image | None, Problem | None]:
    path = files.image if which == "image" else files.label
    try:
        return read_image(path, max_voxels=data.max_voxels), None
    except DataError as err:
        return None, Problem(files.case_id, path, ProblemKind(err.kind), err.message, err.hint)


def _shape_problem(files: CaseFiles, image: sitk.Image, which: str) -> Problem | None:
    path = files.image if which == "image" else files.label
    size = image.GetSize()
    if image.GetNumberOfComponentsPerPixel() != 1:
        message = f"has {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB)"
        return _problem(files, path, ProblemKind.NOT_3D, message, "give one scalar 3D volume")
    if image.GetDimension() != 3:
        message = f"is {image.GetDimension()}D (size {size}), a 3D volume is expected"
        hint = "split 4D series into one 3D file per time point or sequence"
        return _problem(files, path, ProblemKind.NOT_3D, message, hint)
    if min(size) < 2:
        message = f"has a single slice (size {size}), a 3D volume is expected"
        return _problem(files, path, ProblemKind.NOT_3D, message, "export the whole volume")
    return None


def grid_mismatch(image: sitk.Image, label: sitk.Image, tolerance: float) -> str | None:
    """Why ``label`` is not on ``image``'s voxel grid (size, spacing, origin, direction), or None.

    Spacing and origin may differ by ``tolerance`` times the image's spacing; direction
    cosines by ``tolerance``.
    """
    a, b = Geometry.of(image), Geometry.of(label)
    if a.size != b.size:
        return f"label map size {b.size} differs from image size {a.size}"
    spacing = np.asarray(a.spacing)
    if np.any(np.abs(np.subtract(a.spacing, b.spacing)) > tolerance * spacing):
        return f"label map spacing {b.spacing} differs from image spacing {a.spacing}"
    if np.any(np.abs(np.subtract(a.origin, b.origin)) > tolerance * spacing):
        return f"label map origin {b.origin} differs from image origin {a.origin}"
    if np.any(np.abs(np.subtract(a.direction, b.direction)) > tolerance):
        return "label map direction differs from the image's"
    return None


def _label_values(
    files: CaseFiles, label: sitk.Image, remap: dict[int, int]
) -> tuple[np.ndarray | None, Problem | None]:
    values = to_array(label)
    if not np.issubdtype(values.dtype, np.integer) and (
        not np.all(np.isfinite(values)) or np.any(values != np.round(values))
    ):
        message = f"label map holds non-integer values ({values.dtype})"
        hint = "label maps must hold whole numbers; do not resample them with interpolation"
        return None, _problem(files, files.label, ProblemKind.LABEL_NOT_INTEGER, message, hint)
    values = values.astype(np.int64)
    if remap:
        lookup = {int(v): remap.get(int(v), int(v)) for v in np.unique(values)}
        remapped = values.copy()
        for source, target in lookup.items():
            remapped[values == source] = target
        values = remapped
    return values, None


def _schema_problems(
    files: CaseFiles, values: np.ndarray, schema: LabelSchema, data: DataConfig
) -> list[Problem]:
    problems = []
    present = set(int(v) for v in np.unique(values))
    outside = sorted(present - schema.values)
    if outside:
        allowed = ", ".join(f"{v}={schema.name_of(v)}" for v in sorted(schema.values))
        message = f"label values {outside} are outside the {schema.modality} schema ({allowed})"
        hint = "map them with data.label-remap, e.g. '4:3' or '5:0' to drop a structure"
        problems.append(
            _problem(files, files.label, ProblemKind.LABEL_OUTSIDE_SCHEMA, message, hint)
        )
    if data.require_tumour and not present & set(schema.tumour_values):
        hint = "add the tumour segmentation, or set data.require-tumour=false"
        problems.append(
            _problem(files, files.label, ProblemKind.LABEL_EMPTY, "label map has no tumour", hint)
        )
    return problems


def _intensity_problems(files: CaseFiles, voxels: np.ndarray, data: DataConfig) -> list[Problem]:
    count = int(np.size(voxels) - np.count_nonzero(np.isfinite(voxels)))
    count = count or nifti_nonfinite_count(files.image)
    if count:
        message = f"has {count} NaN or infinite voxels"
        hint = "fix the export; fedsynth does not guess missing intensities"
        return [_problem(files, files.image, ProblemKind.NON_FINITE, message, hint)]
    if data.modality != "ct":
        return []
    low, high = float(voxels.min()), float(voxels.max())
    if low < data.hu_min or high > data.hu_max:
        message = (
            f"values {low:g}..{high:g} are outside the HU range {data.hu_min:g}..{data.hu_max:g}"
        )
        hint = (
            "store CT in Hounsfield units (apply rescale slope/intercept) or widen data.hu-min/max"
        )
        return [_problem(files, files.image, ProblemKind.NOT_HU, message, hint)]
    if low >= data.ct_air_hu:
        message = f"has no air: the lowest value is {low:g}, not below {data.ct_air_hu:g} HU"
        hint = "this does not look like Hounsfield units; apply the rescale intercept (often -1024)"
        return [_problem(files, files.image, ProblemKind.NOT_HU, message, hint)]
    return []


def check_case(files: CaseFiles, data: DataConfig, remap: dict[int, int]) -> CaseReport:
    """Read and check one case; the report lists every problem found.

    For CT without bone in its label map, bone is derived from the HU threshold.
    """
    schema = schema_for(data.modality)
    image, image_problem = _read(files, "image", data)
    label, label_problem = _read(files, "label", data)
    problems = [p for p in (image_problem, label_problem) if p is not None]
    if image is None or label is None:
        return CaseReport(files, tuple(problems))
    for which, volume in (("image", image), ("label", label)):
        shape_problem = _shape_problem(files, volume, which)
        if shape_problem is not None:
            problems.append(shape_problem)
    if problems:
        return CaseReport(files, tuple(problems), shape=tuple(image.GetSize()))
    voxels = to_array(image)
    finite = voxels[np.isfinite(voxels)]
    report = CaseReport(
        files,
        (),
        shape=tuple(image.GetSize()),
        spacing=tuple(round(s, 4) for s in image.GetSpacing()),
        intensity_range=(float(finite.min()), float(finite.max())) if finite.size else None,
    )
    problems.extend(_intensity_problems(files, voxels, data))
    mismatch = grid_mismatch(image, label, data.geometry_tolerance)
    if mismatch is not None:
        hint = "resample the label map onto the image grid (nearest neighbour) or re-export both"
        problems.append(_problem(files, files.label, ProblemKind.GRID_MISMATCH, mismatch, hint))
        return replace(report, problems=tuple(problems))
    values, value_problem = _label_values(files, label, remap)
    if values is None or value_problem is not None:
        return replace(report, problems=(*problems, *filter(None, [value_problem])))
    problems.extend(_schema_problems(files, values, schema, data))
    bone_source = None
    if schema.modality == "ct" and not problems:
        bone_value = schema.labels["bone"]
        bone_source = "mask"
        if not np.any(values == bone_value):
            bone_source = "threshold"
            bone = to_array(bone_from_hu(image, data)).astype(bool)
            values = np.where((values == 0) & bone, bone_value, values)
    counts = {name: int(np.count_nonzero(values == v)) for name, v in schema.labels.items()}
    if problems:
        return replace(report, problems=tuple(problems), label_counts=counts)
    label_image = sitk.GetImageFromArray(values.astype(np.uint8))
    label_image.CopyInformation(image)
    return replace(
        report, label_counts=counts, bone_source=bone_source, image=image, label=label_image
    )


def load_case(files: CaseFiles, data: DataConfig, remap: dict[int, int]) -> CaseReport:
    """Read and check one case; raise its first problem.

    Raises:
        DataError: naming the file and what to do.
    """
    report = check_case(files, data, remap)
    if report.problems:
        raise report.problems[0].to_error()
    return report
