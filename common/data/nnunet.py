"""The nnU-Net v2 raw layout, written: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

Phantom sites and synthetic releases are both written this way, so that nnU-Net (and fedsynth's
own loaders) can read them directly.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.data.schema import schema_for

FILE_ENDING = ".nii.gz"
IMAGES_DIR, LABELS_DIR = "imagesTr", "labelsTr"
CHANNEL_0 = "_0000"
"""The channel suffix of a single-channel case's image file."""


def case_paths(root: Path, case_id: str) -> tuple[Path, Path]:
    """The image (channel 0) and label-map files of a case."""
    return (
        root / IMAGES_DIR / f"{case_id}{CHANNEL_0}{FILE_ENDING}",
        root / LABELS_DIR / f"{case_id}{FILE_ENDING}",
    )


def case_ids(root: Path) -> list[str]:
    """The ids of the cases whose channel-0 image a folder holds, sorted."""
    suffix = f"{CHANNEL_0}{FILE_ENDING}"
    return [p.name.removesuffix(suffix) for p in sorted((root / IMAGES_DIR).glob(f"*{suffix}"))]


def dataset_json(modality: str, name: str, description: str, cases: int) -> dict[str, object]:
    """An nnU-Net v2 ``dataset.json`` for ``cases`` cases of ``modality``'s label schema."""
    schema = schema_for(modality)
    return {
        "name": name,
        "description": description,
        "channel_names": {"0": schema.channel_name},
        "labels": {"background": 0, **schema.labels},
        "numTraining": cases,
        "file_ending": FILE_ENDING,
    }


def write_dataset_json(root: Path, dataset: dict[str, object]) -> None:
    """Write ``dataset.json`` into ``root`` atomically."""
    atomic_write_text(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
