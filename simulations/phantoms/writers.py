"""Where a phantom case goes on disk: the nnU-Net raw layout, or BraTS 2023 for MRI.

nnU-Net raw: ``<site>/dataset.json``, ``<site>/imagesTr/<case>_0000.nii.gz`` and
``<site>/labelsTr/<case>.nii.gz``. BraTS 2023: ``<site>/<case>/<case>-t1c.nii.gz`` and
``<site>/<case>/<case>-seg.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path

from common.data import nnunet
from common.data.imageio import write_image
from common.errors import ConfigError
from simulations.phantoms.case import PhantomCase

LAYOUTS = ("nnunet", "brats")
FILE_ENDING = nnunet.FILE_ENDING


def check_layout(modality: str, layout: str) -> None:
    """Raise :class:`ConfigError` unless ``layout`` can hold ``modality``'s cases."""
    if layout not in LAYOUTS:
        raise ConfigError(f"phantoms.layout = {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "brats" and modality != "mri":
        raise ConfigError(
            f"phantoms.layout = 'brats' holds brain MRI only, not {modality}: "
            f'use phantoms.layout="nnunet" (CLI: --layout nnunet)'
        )


def case_paths(site_dir: Path, case_id: str, layout: str) -> tuple[Path, Path]:
    """The image and label file of a case in a site folder."""
    if layout == "brats":
        folder = site_dir / case_id
        return folder / f"{case_id}-t1c{FILE_ENDING}", folder / f"{case_id}-seg{FILE_ENDING}"
    return nnunet.case_paths(site_dir, case_id)


def write_case(case: PhantomCase, site_dir: Path, layout: str) -> None:
    """Write a case's image and label map where ``layout`` puts them."""
    image_path, label_path = case_paths(site_dir, case.case_id, layout)
    write_image(case.image, image_path)
    write_image(case.label, label_path)


def dataset_json(modality: str, site_name: str, cases: int) -> dict[str, object]:
    """The nnU-Net v2 ``dataset.json`` of a phantom site."""
    description = (
        f"fedsynth {modality.upper()} phantom cohort, {site_name}: synthetic anatomy drawn "
        "from a seed, no patient data"
    )
    return nnunet.dataset_json(
        modality, f"fedsynth-phantom-{modality}-{site_name}", description, cases
    )


def write_dataset_json(site_dir: Path, modality: str, site_name: str, cases: int) -> None:
    """Write ``dataset.json`` into a site folder of the nnU-Net layout."""
    nnunet.write_dataset_json(site_dir, dataset_json(modality, site_name, cases))
