"""Label schemas: which integer means which structure, per task.

fedsynth knows two tasks, chosen by ``data.modality``:

* ``ct``: head-and-neck CT. 1 = tumour (GTV), 2 = bone. Where a dataset has no bone mask, bone is
  derived from a HU threshold (``data.bone-threshold-hu``) with a small morphological clean-up.
* ``mri``: brain glioma T1c MRI with BraTS 2023 labels. 1 = necrotic tumour core (NCR),
  2 = peritumoural oedema (ED/SNFH), 3 = enhancing tumour (ET); tumour = their union.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelSchema:
    """Names of a task's label values, and regions made of several labels."""

    modality: str
    labels: dict[str, int]
    regions: dict[str, tuple[int, ...]]
    channel_name: str
    calibration_groups: tuple[tuple[int, ...], ...]
    """The label groups whose volumes the per-label calibration matches, in order, after the
    tumour's union. Where groups nest, the smaller child is calibrated, since the one left
    over carries the error of the split: a 10-voxel necrotic core left as core minus a
    60-voxel enhancing rim within 10% would be off by 60%. Every label is in a group, the
    ones outside any nest last: a group's shift may move its voxels to the background instead
    of to its parent (a quality-mri GAN's core did, and the release drew 0.29x the oedema), so
    only matching every label keeps the union matched."""

    @property
    def values(self) -> frozenset[int]:
        """Every allowed label value, background (0) included."""
        return frozenset({0, *self.labels.values()})

    @property
    def tumour_values(self) -> tuple[int, ...]:
        """The label values whose union is the tumour."""
        return self.regions["tumour"]

    def name_of(self, value: int) -> str:
        """The structure name of a label value ('background' for 0)."""
        for name, label in self.labels.items():
            if label == value:
                return name
        return "background" if value == 0 else f"label {value}"


HEAD_NECK_CT = LabelSchema(
    modality="ct",
    labels={"tumour": 1, "bone": 2},
    regions={"tumour": (1,), "bone": (2,)},
    channel_name="CT",
    calibration_groups=((2,), (1,)),
)

GLIOMA_LABELS = {"necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}
GLIOMA_REGIONS = {"tumour": (1, 2, 3), "tumour_core": (1, 3), "enhancing_tumour": (3,)}

BRAIN_GLIOMA_MRI = LabelSchema(
    modality="mri",
    labels=GLIOMA_LABELS,
    regions=GLIOMA_REGIONS,
    channel_name="T1c",
    calibration_groups=(
        GLIOMA_REGIONS["tumour_core"],
        (GLIOMA_LABELS["necrotic_core"],),
        (GLIOMA_LABELS["oedema"],),
    ),
)

SCHEMAS = {"ct": HEAD_NECK_CT, "mri": BRAIN_GLIOMA_MRI}

# Names a dataset.json may use for a schema's structures (lower case, '-' and ' ' as '_').
LABEL_ALIASES: dict[str, str] = {
    "tumor": "tumour",
    "gtv": "tumour",
    "gtvp": "tumour",
    "gtv_p": "tumour",
    "primary_tumour": "tumour",
    "primary_tumor": "tumour",
    "bones": "bone",
    "ncr": "necrotic_core",
    "ncr_net": "necrotic_core",
    "necrosis": "necrotic_core",
    "necrotic": "necrotic_core",
    "necrotic_tumor_core": "necrotic_core",
    "ed": "oedema",
    "edema": "oedema",
    "snfh": "oedema",
    "peritumoral_edema": "oedema",
    "et": "enhancing_tumour",
    "enhancing_tumor": "enhancing_tumour",
    "enhancing": "enhancing_tumour",
}


def schema_for(modality: str) -> LabelSchema:
    """The label schema of a modality ('ct' or 'mri')."""
    return SCHEMAS[modality]


def canonical_label_name(name: str) -> str:
    """Normalise a dataset's label name to the schema's spelling."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return LABEL_ALIASES.get(key, key)
