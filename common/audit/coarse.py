"""Cheap vectors that pick each query case's candidate neighbours before the exact distances.

Volumes are average-pooled to about 8 cells per axis after the reference cases' mean volume is
subtracted (what every patient of the site shares, the body outline above all, would otherwise
make every pair look alike). Reference cases are pooled at offsets of 0 and half a cell along
each axis, and a query keeps its best match over those, so a copy moved by a few voxels stays a
candidate. Similarities are those of centred unit vectors (the NCC of the pooled volumes), of
the whole volume and of every slab of two pooled rows along z, so that a copied slab is a
candidate too. Label maps become unit vectors of the pooled fraction of each structure.
"""

from __future__ import annotations

import itertools

import torch

COARSE_CELLS = 8
SLAB_CELLS = 2


def pool_factor(shape: tuple[int, ...]) -> int:
    """Voxels per pooled cell along each axis, for a volume of ``shape`` (z, y, x)."""
    return max(1, min(shape) // COARSE_CELLS)


def _pooled(volumes: torch.Tensor, offset: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    factor = pool_factor(tuple(volumes.shape[1:]))
    dz, dy, dx = offset
    moved = volumes[:, dz:, dy:, dx:]
    return torch.nn.functional.avg_pool3d(moved.unsqueeze(1), factor, ceil_mode=True)[:, 0]


def _offsets(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    half = pool_factor(shape) // 2
    steps = (0, half) if half else (0,)
    return [(a, b, c) for a, b, c in itertools.product(steps, repeat=3)]


def _unit(rows: torch.Tensor) -> torch.Tensor:
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _slabs(pooled: torch.Tensor) -> list[torch.Tensor]:
    depth = pooled.shape[1]
    thickness = min(SLAB_CELLS, depth)
    return [_unit(pooled[:, i : i + thickness].flatten(1)) for i in range(depth - thickness + 1)]


def _pooled_at_offsets(volumes: torch.Tensor) -> list[torch.Tensor]:
    """``_pooled`` at every offset of ``_offsets``, from one pass over the full volumes: pooled
    first by the cell's half (every offset is a multiple of it), then each offset by two of
    those: the same averages, where every axis holds whole half-cells."""
    shape = tuple(volumes.shape[1:])
    factor, half = pool_factor(shape), pool_factor(shape) // 2
    if half < 2 or factor != 2 * half or any(size % half for size in shape):
        # no whole half-cells to share: pool each offset from the volumes
        return [_pooled(volumes, offset) for offset in _offsets(shape)]
    halves = torch.nn.functional.avg_pool3d(volumes.unsqueeze(1), half, ceil_mode=True)
    pooled = []
    for dz, dy, dx in _offsets(shape):
        moved = halves[:, :, dz // half :, dy // half :, dx // half :]
        pooled.append(torch.nn.functional.avg_pool3d(moved, 2, ceil_mode=True)[:, 0])
    return pooled


class CoarseImages:
    """The reference cases' pooled images, to score queries against in one product per offset."""

    def __init__(self, images: torch.Tensor) -> None:
        self.mean = images.float().mean(dim=0, keepdim=True)
        self.variants = [
            (_unit(pooled.flatten(1)), _slabs(pooled))
            for pooled in _pooled_at_offsets(images.float() - self.mean)
        ]

    def similarity(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, R) whole-volume and best-slab similarities of query ``images``."""
        full = _pooled(images.float() - self.mean)
        whole_q, slabs_q = _unit(full.flatten(1)), _slabs(full)
        whole = slab = None
        for whole_r, slabs_r in self.variants:
            w = whole_q @ whole_r.T
            count = min(len(slabs_q), len(slabs_r))
            s = torch.stack([slabs_q[i] @ slabs_r[i].T for i in range(count)]).amax(dim=0)
            whole = w if whole is None else torch.maximum(whole, w)
            slab = s if slab is None else torch.maximum(slab, s)
        if whole is None or slab is None:  # pragma: no cover - there is always offset 0
            raise ValueError("no pooled reference")
        return whole, slab


def label_vectors(labels: torch.Tensor, values: tuple[int, ...]) -> torch.Tensor:
    """Unit vectors of the pooled fraction of each structure in ``values`` (N, cells x labels)."""
    parts = [_pooled((labels == value).float()).flatten(1) for value in values]
    return _unit(torch.cat(parts, dim=1))
