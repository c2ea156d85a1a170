"""Exact pair distances over shifts: hand-computed NCC and Dice, shifts, slabs, rescales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.audit.shifted import label_distances, slab_starts, voxel_distances


def _volumes(seed: int, count: int = 1, size: int = 12) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(count, size, size, size)).astype(np.float32))


def test_slab_starts_cover_the_depth_with_half_overlap() -> None:
    assert slab_starts(12, 4) == [0, 2, 4, 6, 8]
    assert slab_starts(11, 4) == [0, 2, 4, 6, 7]  # the last slab flush with the end
    assert slab_starts(3, 8) == [0]  # thicker than the volume: one slab


def test_voxel_distance_without_shift_or_slabs_is_one_minus_pearson() -> None:
    x, y = _volumes(0), _volumes(1)
    y = 0.6 * x + y  # correlated on purpose
    expected = 1.0 - np.corrcoef(x.numpy().ravel(), y.numpy().ravel())[0, 1]
    got = voxel_distances(x, y, radius=0, slab=12)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_a_copy_shifted_within_the_radius_or_rescaled_is_at_distance_zero() -> None:
    y = _volumes(2)
    shifted = torch.roll(y, shifts=(2, -1, 1), dims=(1, 2, 3))
    rescaled = 0.3 * y - 0.2
    assert voxel_distances(shifted, y, radius=2, slab=4).item() == pytest.approx(0.0, abs=1e-5)
    assert voxel_distances(rescaled, y, radius=2, slab=4).item() == pytest.approx(0.0, abs=1e-5)
    assert voxel_distances(shifted, y, radius=0, slab=4).item() > 0.5  # no shift: not found


def test_one_copied_slab_is_caught_where_the_whole_volume_is_not() -> None:
    x, y = _volumes(3), _volumes(4)
    x[:, 4:8] = y[:, 4:8]
    per_slab = voxel_distances(x, y, radius=0, slab=4)
    whole = voxel_distances(x, y, radius=0, slab=12)
    assert per_slab.item() == pytest.approx(0.0, abs=1e-5)
    assert whole.item() > 0.5


def test_a_slab_without_contrast_counts_as_no_evidence() -> None:
    flat = torch.zeros(1, 8, 8, 8)
    assert voxel_distances(flat, flat, radius=1, slab=4).item() == pytest.approx(1.0)


def test_dice_by_hand_and_best_over_shifts() -> None:
    a = torch.zeros(1, 10, 10, 10, dtype=torch.uint8)
    b = torch.zeros_like(a)
    a[0, 2:4, 2:4, 2:4] = 1  # 8 voxels
    b[0, 2:4, 2:4, 2:3] = 1  # 4 of them
    b[0, 6:8, 6:8, 6:7] = 1  # and 4 elsewhere
    assert label_distances(a, b, radius=0).item() == pytest.approx(1 - 2 * 4 / 16)
    b[0, 2:4, 2:4, 2:3] = 2  # another structure does not agree
    assert label_distances(a, b, radius=0).item() == pytest.approx(1.0)
    moved = torch.roll(a, shifts=(1, 0, -1), dims=(1, 2, 3))
    assert label_distances(moved, a, radius=1).item() == pytest.approx(0.0)
    empty = torch.zeros_like(a)
    assert label_distances(empty, empty, radius=1).item() == pytest.approx(0.0)


def test_mismatched_pairs_and_too_large_shifts_are_refused() -> None:
    with pytest.raises(ValueError, match="equal"):
        voxel_distances(_volumes(0, 1), _volumes(0, 2), radius=0, slab=4)
    with pytest.raises(ValueError, match="leaves nothing"):
        label_distances(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4), radius=2)
