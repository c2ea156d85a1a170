"""Tissue maps: intensity classes of unlabelled voxels plus the labels, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.models.tissue import TissueClasses, gaussian_smoothed

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


def test_smoothing_matches_scipy_gaussian_with_repeated_edges() -> None:
    from scipy.ndimage import gaussian_filter

    volumes = torch.randn(
        2, 5, 6, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    for sigma in (1.0, 1.5):
        reference = [
            gaussian_filter(v.numpy(), sigma, mode="nearest", truncate=3.0) for v in volumes
        ]
        smoothed = gaussian_smoothed(volumes, sigma)
        # scipy's radius is int(3 sigma + 0.5), ours ceil(3 sigma): equal at these sigmas
        assert torch.allclose(smoothed, torch.tensor(np.stack(reference)), atol=1e-12)
    assert gaussian_smoothed(volumes, 0.0) is volumes


def test_smoothing_by_hand_on_a_step() -> None:
    # sigma 0.5: radius 2, weights exp(-2 d^2) for d = -2..2, normalised
    weights = torch.exp(-2.0 * torch.arange(-2.0, 3.0) ** 2)
    weights = weights / weights.sum()
    line = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    smoothed = gaussian_smoothed(line, 0.5)
    # voxel 2 sees the step's 1s at offsets +1, +2; voxel 3 at 0, +1, +2 (edge repeated)
    assert smoothed[0, 2].item() == pytest.approx(float(weights[3] + weights[4]))
    assert smoothed[0, 3].item() == pytest.approx(float(weights[2] + weights[3] + weights[4]))
    assert smoothed[0, 0].item() == pytest.approx(0.0)


def test_smoothing_removes_specks_of_noise_around_a_threshold() -> None:
    # a tissue whose grey value sits on the threshold: noise alone splits it voxel by voxel
    noisy = 0.05 * torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    noisy[..., 8:] += 0.5  # a second tissue, well above the threshold
    label = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    plain = TissueClasses(1, (0.25,)).tissue_map(noisy, label)
    smoothed = TissueClasses(1, (0.25,), smoothing=1.0).tissue_map(noisy, label)
    assert torch.equal(plain, smoothed)  # far from the threshold, noise changes nothing
    on_threshold = noisy + torch.where(torch.arange(16) < 8, 0.25, 0.0)  # first half: at 0.25
    plain = TissueClasses(1, (0.25,)).tissue_map(on_threshold, label)[0, :, :, :8]
    smoothed = TissueClasses(1, (0.25,), smoothing=1.0).tissue_map(on_threshold, label)[0, :, :, :8]
    assert 0.3 < plain.float().mean() < 0.7  # about half the voxels flip class
    flips_plain = (plain.diff(dim=0) != 0).float().mean()
    flips_smoothed = (smoothed.diff(dim=0) != 0).float().mean()
    assert flips_smoothed < flips_plain / 3


def test_negative_smoothing_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        TissueClasses(3, (-0.2,), smoothing=-1.0)
