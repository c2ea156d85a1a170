"""Tissue maps: intensity classes of unlabelled voxels plus the labels, by hand."""

from __future__ import annotations

import pytest
import torch

from common.models.tissue import TissueClasses

CT = TissueClasses(num_classes=3, thresholds=(-0.6, -0.3))  # air | fat | soft; tumour, bone


def test_classes_count_intensity_classes_then_labels() -> None:
    assert (CT.intensity_classes, CT.count) == (3, 5)
    assert CT.label_channels() == slice(3, 5)
    assert TissueClasses(num_classes=4, thresholds=()).count == 4  # MRI without thresholds


def test_tissue_map_by_hand() -> None:
    image = torch.tensor([-1.0, -0.6, -0.45, -0.3, 0.2, 0.9, -1.0]).view(1, 1, 7)
    label = torch.tensor([0, 0, 0, 0, 0, 2, 1]).view(1, 7)
    # -1 -> air (0); -0.6 is a threshold: the brighter class (1); -0.45 fat (1); -0.3 soft (2);
    # 0.2 soft (2); labelled voxels keep their label whatever their intensity: bone 4, tumour 3
    expected = torch.tensor([0, 1, 1, 2, 2, 4, 3]).view(1, 7)
    assert torch.equal(CT.tissue_map(image, label), expected)
    assert torch.equal(CT.labels_of(expected), label)


def test_known_channels_of_a_label_map() -> None:
    label = torch.tensor([[0, 1, 2]])
    values, mask = CT.known_channels(label)
    assert values.shape == mask.shape == (1, 5, 3)
    # label channels known everywhere: tumour (+1 at voxel 1), bone (+1 at voxel 2)
    assert mask[0, 3:].all()
    assert values[0, 3].tolist() == [-1.0, 1.0, -1.0]
    assert values[0, 4].tolist() == [-1.0, -1.0, 1.0]
    # intensity channels known (all -1) only where a label is set
    assert mask[0, :3].tolist() == [[False, True, True]] * 3
    assert (values[0, :3, 1:] == -1).all()


def test_thresholds_must_rise() -> None:
    with pytest.raises(ValueError, match="must increase"):
        TissueClasses(3, (0.2, -0.2))
