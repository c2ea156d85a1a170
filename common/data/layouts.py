"""Finding a site's cases on disk: nnU-Net raw, BraTS 2023, or image/label file-name patterns.

A layout only pairs files; it never opens an image. Files without a partner are reported as
problems, so a whole site can be checked at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.config import DataConfig, parse_label_remap
from common.data.imageio import image_suffix
from common.data.nnunet import CHANNEL_0, IMAGES_DIR, LABELS_DIR
from common.data.problems import Problem, ProblemKind
from common.data.schema import canonical_label_name, schema_for

NNUNET_DATASET_JSON = "dataset.json"
BRATS_LABEL_SUFFIX = "-seg"


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: an image (file or DICOM folder) and its label map."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class SiteListing:
    """The cases a site folder holds, the layout they were found in, and pairing problems."""

    root: Path
    layout: str
    cases: tuple[CaseFiles, ...]
    problems: tuple[Problem, ...] = ()
    label_remap: dict[int, int] = field(default_factory=dict)


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root``: nnunet, brats or pattern."""
    if (root / NNUNET_DATASET_JSON).exists() or (root / IMAGES_DIR).is_dir():
        return "nnunet"
    if any(root.glob(f"*{BRATS_LABEL_SUFFIX}.nii*")) or any(
        root.glob(f"*/*{BRATS_LABEL_SUFFIX}.nii*")
    ):
        return "brats"
    return "pattern"


def list_cases(root: Path, data: DataConfig) -> SiteListing:
    """List the cases in a site folder (or one case's folder) in ``data.layout``.

    Pairing problems (an image without a label map, a label map without an image, an unreadable
    ``dataset.json``) are returned in ``problems``; a folder with no case at all is one too.
    """
    if not root.is_dir():
        problem = Problem(
            root.name,
            root,
            ProblemKind.BAD_LAYOUT,
            "is not a folder" if root.exists() else "folder not found",
            "point at a site folder or at one case's folder",
        )
        return SiteListing(root, data.layout, (), (problem,))
    layout = detect_layout(root) if data.layout == "auto" else data.layout
    if layout == "nnunet":
        listing = _list_nnunet(root, data)
    elif layout == "brats":
        listing = _list_brats(root, data)
    else:
        listing = _list_pattern(root, data)
    if not listing.cases and not listing.problems:
        hint = {
            "nnunet": "put images in imagesTr/<case>_0000.nii.gz and labels in labelsTr/",
            "brats": f"expect <case>/<case>-{data.brats_sequence}.nii.gz and <case>-seg.nii.gz",
            "pattern": f"expect files named {data.image_pattern} and {data.label_pattern}, or "
            "set data.image-pattern / data.label-pattern",
        }[layout]
        problem = Problem(root.name, root, ProblemKind.NO_CASES, f"no {layout} cases", hint)
        return SiteListing(root, layout, (), (problem,), listing.label_remap)
    return listing


def _missing(case_id: str, present: Path, missing_kind: str, expected: Path) -> Problem:
    return Problem(
        case_id,
        present,
        ProblemKind.MISSING_PARTNER,
        f"has no {missing_kind}: expected {expected}",
        f"add the {missing_kind} or remove the case",
    )


def _nnunet_label_remap(root: Path, data: DataConfig) -> tuple[dict[int, int], list[Problem]]:
    """Map the dataset's label values onto the schema by the names in dataset.json."""
    path = root / NNUNET_DATASET_JSON
    if not path.exists():
        hint = "write a dataset.json with 'labels' and 'file_ending' (nnU-Net v2)"
        return {}, [Problem(root.name, path, ProblemKind.BAD_LAYOUT, "missing", hint)]
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        labels = meta["labels"]
        if not isinstance(labels, dict):
            raise TypeError("'labels' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        hint = "fix it: nnU-Net v2 needs a JSON object with 'labels' {name: value}"
        problem = Problem(root.name, path, ProblemKind.BAD_LAYOUT, f"unreadable ({err})", hint)
        return {}, [problem]
    schema = schema_for(data.modality)
    remap: dict[int, int] = {}
    for name, value in labels.items():
        if not isinstance(value, int) or value == 0:
            continue  # background, or an nnU-Net region (a list of labels)
        target = schema.labels.get(canonical_label_name(name))
        if target is not None:
            remap[value] = target
    return remap, []


def _file_ending(root: Path) -> str:
    try:
        meta = json.loads((root / NNUNET_DATASET_JSON).read_text(encoding="utf-8"))
        return str(meta.get("file_ending", ".nii.gz"))
    except (OSError, ValueError, AttributeError):
        return ".nii.gz"


def _list_nnunet(root: Path, data: DataConfig) -> SiteListing:
    remap, problems = _nnunet_label_remap(root, data)
    ending = _file_ending(root)
    images_dir, labels_dir = root / IMAGES_DIR, root / LABELS_DIR
    images = {
        p.name.removesuffix(f"{CHANNEL_0}{ending}"): p
        for p in sorted(images_dir.glob(f"*{CHANNEL_0}{ending}"))
    }
    labels = {p.name[: -len(ending)]: p for p in sorted(labels_dir.glob(f"*{ending}"))}
    cases = []
    for case_id, image in images.items():
        if case_id in labels:
            cases.append(CaseFiles(case_id, image, labels[case_id]))
        else:
            problems.append(
                _missing(case_id, image, "label map", labels_dir / f"{case_id}{ending}")
            )
    for case_id, label in labels.items():
        if case_id not in images:
            expected = images_dir / f"{case_id}{CHANNEL_0}{ending}"
            problems.append(_missing(case_id, label, "image", expected))
    remap.update(_user_remap(data))
    return SiteListing(root, "nnunet", tuple(cases), tuple(problems), remap)


def _user_remap(data: DataConfig) -> dict[int, int]:
    return parse_label_remap(data.label_remap)


def _brats_case(folder: Path, data: DataConfig) -> tuple[CaseFiles | None, Problem | None]:
    case_id = folder.name
    image = folder / f"{case_id}-{data.brats_sequence}.nii.gz"
    label = folder / f"{case_id}{BRATS_LABEL_SUFFIX}.nii.gz"
    if image.exists() and label.exists():
        return CaseFiles(case_id, image, label), None
    if image.exists():
        return None, _missing(case_id, image, "label map", label)
    if label.exists():
        return None, _missing(case_id, label, f"{data.brats_sequence} image", image)
    return None, None


def _list_brats(root: Path, data: DataConfig) -> SiteListing:
    folders = (
        [root] if any(root.glob("*.nii*")) else sorted(p for p in root.iterdir() if p.is_dir())
    )
    cases, problems = [], []
    for folder in folders:
        case, problem = _brats_case(folder, data)
        if case is not None:
            cases.append(case)
        if problem is not None:
            problems.append(problem)
    return SiteListing(root, "brats", tuple(cases), tuple(problems), _user_remap(data))


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a file-name pattern with a ``{case}`` placeholder and ``*`` wildcards."""
    head, _, tail = pattern.partition("{case}")
    return re.compile(f"^{_glob_regex(head)}(?P<case>.+?){_glob_regex(tail)}$")


def _glob_regex(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def _list_pattern(root: Path, data: DataConfig) -> SiteListing:
    image_re, label_re = pattern_regex(data.image_pattern), pattern_regex(data.label_pattern)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    labels: dict[str, Path] = {}
    images: dict[str, Path] = {}
    for entry in entries:
        if entry.is_file() and not image_suffix(entry):
            continue
        label_match = label_re.match(entry.name)
        if label_match:
            labels[label_match["case"]] = entry
            continue
        image_match = image_re.match(entry.name)
        if image_match:
            images[image_match["case"]] = entry
    cases, problems = [], []
    for case_id, image in images.items():
        if case_id in labels:
            cases.append(CaseFiles(case_id, image, labels[case_id]))
        else:
            expected = root / data.label_pattern.replace("{case}", case_id)
            problems.append(_missing(case_id, image, "label map", expected))
    for case_id, label in labels.items():
        if case_id not in images:
            expected = root / data.image_pattern.replace("{case}", case_id)
            problems.append(_missing(case_id, label, "image", expected))
    return SiteListing(root, "pattern", tuple(cases), tuple(problems), _user_remap(data))
