"""The label schemas' calibration groups: label values of their schema, nested or apart."""

from __future__ import annotations

import pytest

from common.data.schema import SCHEMAS, LabelSchema


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_calibration_groups_cover_every_label_and_nest_or_stay_apart(schema: LabelSchema) -> None:
    """Each group holds labels of the schema, every label is in one, and two groups either
    nest (the later one inside) or share no label."""
    labels = set(schema.labels.values())
    groups = [set(group) for group in schema.calibration_groups]
    assert set().union(*groups) == labels
    for index, group in enumerate(groups):
        assert group <= labels
        for earlier in groups[:index]:
            assert group < earlier or not group & earlier


def test_the_glioma_groups_are_the_core_its_necrotic_part_then_the_oedema() -> None:
    mri = SCHEMAS["mri"]
    names = [{mri.name_of(v) for v in group} for group in mri.calibration_groups]
    assert names == [{"necrotic_core", "enhancing_tumour"}, {"necrotic_core"}, {"oedema"}]
    assert set(mri.calibration_groups[0]) == set(mri.regions["tumour_core"])


def test_the_ct_groups_are_bone_then_the_tumour() -> None:
    ct = SCHEMAS["ct"]
    assert [[ct.name_of(v) for v in group] for group in ct.calibration_groups] == [
        ["bone"],
        ["tumour"],
    ]
