"""The fast search against slow references: Fourier-domain distances against a loop over every
shift, and the coarse-to-fine shortlist against the exhaustive search."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from audit_support import phantom_config, phantom_set, planted_set

from common.audit.coarse import CoarseImages
from common.audit.search import SPACES, CaseSet, search, shortlist
from common.audit.shifted import label_distances, slab_starts, voxel_distances
from common.config import AuditConfig
from common.errors import FedsynthError

CT_VALUES = (1, 2)


def _loop_voxel(x: np.ndarray, y: np.ndarray, radius: int, slab: int) -> float:
    """1 - the best slab Pearson correlation over every shift, one window at a time."""
    r = radius
    inner = x[r : x.shape[0] - r, r : x.shape[1] - r, r : x.shape[2] - r]
    depth, rows, cols = inner.shape
    thickness = min(slab, depth)
    best = -1.0
    for dz, dy, dx in itertools.product(range(2 * r + 1), repeat=3):
        window = y[dz : dz + depth, dy : dy + rows, dx : dx + cols]
        for start in slab_starts(depth, slab):
            a = inner[start : start + thickness].ravel().astype(np.float64)
            b = window[start : start + thickness].ravel().astype(np.float64)
            a, b = a - a.mean(), b - b.mean()
            scale = np.sqrt((a @ a) * (b @ b))
            best = max(best, float(a @ b / scale) if scale > 1e-6 * a.size else 0.0)
    return 1.0 - best


def _loop_label(a: np.ndarray, b: np.ndarray, radius: int) -> float:
    """1 - the best Dice of same non-zero labels over every shift."""
    r = radius
    inner = a[r : a.shape[0] - r, r : a.shape[1] - r, r : a.shape[2] - r]
    depth, rows, cols = inner.shape
    best = 0.0
    for dz, dy, dx in itertools.product(range(2 * r + 1), repeat=3):
        window = b[dz : dz + depth, dy : dy + rows, dx : dx + cols]
        agree = np.sum((inner == window) & (inner > 0))
        total = np.sum(inner > 0) + np.sum(window > 0)
        best = max(best, 2 * agree / total if total else 1.0)
    return 1.0 - best


def test_fourier_distances_equal_a_loop_over_every_shift_and_slab() -> None:
    rng = np.random.default_rng(5)
    x = np.tanh(rng.normal(size=(4, 11, 10, 9))).astype(np.float32)
    y = np.tanh(rng.normal(size=(4, 11, 10, 9))).astype(np.float32)
    y[0] = 0.5 * np.roll(x[0], (1, -2, 2), axis=(0, 1, 2)) - 0.6  # shifted, rescaled copy
    y[1, 3:7] = x[1, 3:7]  # one copied slab
    y[2] = 0.7 * x[2] + y[2]  # correlated
    for radius, slab in ((2, 4), (1, 3), (0, 20)):
        got = voxel_distances(torch.from_numpy(x), torch.from_numpy(y), radius=radius, slab=slab)
        expected = [_loop_voxel(x[i], y[i], radius, slab) for i in range(4)]
        np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)
    assert _loop_voxel(x[0], y[0], 2, 4) == pytest.approx(0.0, abs=1e-6)
    a = (rng.random((4, 10, 10, 10)) < 0.3) * rng.integers(1, 4, (4, 10, 10, 10))
    b = (rng.random((4, 10, 10, 10)) < 0.3) * rng.integers(1, 4, (4, 10, 10, 10))
    b[0] = np.roll(a[0], (2, 0, -1), axis=(0, 1, 2))
    a, b = a.astype(np.uint8), b.astype(np.uint8)
    for radius in (0, 1, 2):
        got = label_distances(torch.from_numpy(a), torch.from_numpy(b), radius=radius)
        expected = [_loop_label(a[i], b[i], radius) for i in range(4)]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32, 32), (36, 33, 34)])
def test_reference_pools_at_every_offset_are_the_averages_of_their_cells(
    shape: tuple[int, int, int],
) -> None:
    volumes = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    coarse = CoarseImages(volumes)
    centred = (volumes - volumes.mean(dim=0, keepdim=True)).numpy().astype(np.float64)
    factor = 4  # min(shape) // 8
    for (whole, _), offset in zip(
        coarse.variants, itertools.product((0, 2), repeat=3), strict=True
    ):
        moved = centred[:, offset[0] :, offset[1] :, offset[2] :]
        cells = [range(0, size, factor) for size in moved.shape[1:]]
        expected = np.stack(
            [
                [
                    moved[n, z : z + factor, y : y + factor, x : x + factor].mean()
                    for z, y, x in itertools.product(*cells)
                ]
                for n in range(3)
            ]
        )
        expected -= expected.mean(axis=1, keepdims=True)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(whole.numpy(), expected, atol=1e-5)


def test_the_shortlist_takes_each_rankings_best_first_each_case_once() -> None:
    # 2 queries x 5 references; three rankings (higher is closer)
    first = torch.tensor([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    second = torch.tensor([[5.0, 1, 2, 3, 4], [0, 0, 9, 0, 0]])
    third = torch.tensor([[1.0, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    got = shortlist([first, second, third], 4, None)
    # query 0: bests 0, 0 (again), 4; then seconds 1, 4 (again), 3 -> 0, 4, 1, 3
    # query 1: bests 4, 2, 4 (again); then seconds 3 -> 4, 2, 3, then third ranks: 2, 0|1...
    assert got[0].tolist() == [0, 4, 1, 3]
    assert got[1].tolist()[:3] == [4, 2, 3]
    itself = shortlist([first, second, third], 4, torch.tensor([0, 4]))
    assert 0 not in itself[0].tolist()
    assert 4 not in itself[1].tolist()
    assert itself[0].tolist() == [4, 1, 3, 2]
    few = shortlist([first[:, :2], second[:, :2]], 4, None)
    assert few.tolist() == [[0, 1, -1, -1], [1, 0, -1, -1]]  # fewer references than asked


@pytest.fixture(scope="module")
def planted() -> tuple[CaseSet, CaseSet, list[str]]:
    train, fresh = phantom_set(1, 16), phantom_set(3, 8)
    copies, ids = planted_set(train, fresh, [0, 5, 9, 13])
    return train, copies, ids


def test_the_shortlist_finds_what_the_exhaustive_search_finds(
    planted: tuple[CaseSet, CaseSet, list[str]],
) -> None:
    train, copies, ids = planted
    settings = phantom_config(1).audit
    assert settings.shortlist < len(train)
    fast = search(copies, train, CT_VALUES, settings)
    full = search(copies, train, CT_VALUES, replace(settings, shortlist=len(train)))
    # a copied slab copies only a quarter of the label map: its labels are no copy
    whole_maps = [i for i, name in enumerate(ids) if not name.startswith("slab")]
    for space, rows in (("voxels", range(len(ids))), ("labels", whole_maps), ("features", None)):
        pick = slice(None) if rows is None else list(rows)
        np.testing.assert_array_equal(fast.index[space][pick, 0], full.index[space][pick, 0])
        np.testing.assert_allclose(fast.nearest(space)[pick], full.nearest(space)[pick], atol=1e-6)
    for space in SPACES:  # elsewhere a shortlist can only miss a nearer case, never invent one
        assert np.all(fast.nearest(space) >= full.nearest(space) - 1e-6)
    # and the exhaustive search scored every training case
    assert np.all(np.isfinite(full.distance["voxels"]))


def test_a_copied_slab_ranks_low_on_the_whole_volume_score_yet_is_found(
    planted: tuple[CaseSet, CaseSet, list[str]],
) -> None:
    train, copies, ids = planted
    settings = phantom_config(1).audit
    sources = torch.tensor([int(name.split("-")[1]) for name in ids])
    whole, _ = CoarseImages(train.images).similarity(copies.images)
    rank = (whole > whole.gather(1, sources[:, None])).sum(dim=1)  # 0 = first
    slabs = [i for i, name in enumerate(ids) if name.startswith("slab")]
    low = [i for i in slabs if rank[i] >= settings.shortlist]
    assert low  # a whole-volume shortlist alone would miss these copies
    found = search(copies, train, CT_VALUES, settings)
    assert found.index["voxels"][low, 0].tolist() == sources[low].tolist()
    assert np.all(found.nearest("voxels")[low] < 1e-3)  # the copied slab is exact


def test_a_shortlist_below_one_is_refused_naming_the_setting() -> None:
    with pytest.raises(FedsynthError, match=r"audit\.shortlist"):
        AuditConfig(shortlist=0)
