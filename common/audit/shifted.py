"""Exact distances of case pairs over small shifts: voxels (normalised cross-correlation per
slab) and label maps (Dice).

Both compare the interior of the query case (``radius`` voxels trimmed on every side) with the
reference case's windows at every shift ``(dz, dy, dx)`` in ``[-radius, radius]^3`` and keep the
best, so a copy moved by a few voxels is as close as an unmoved one. The voxel distance is
``1 - NCC`` of the best slab: slabs of ``slab`` slices along z with a stride of half that, so a
slab copied into an otherwise new volume is caught even when the rest differs. NCC ignores a
linear change of intensity (a rescaled copy is still a copy). A slab without contrast (pure air)
has NCC 0: it carries no evidence either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

EPS = 1e-6


def _shifts(radius: int) -> Iterator[tuple[int, int, int]]:
    span = range(-radius, radius + 1)
    for dz in span:
        for dy in span:
            for dx in span:
                yield dz, dy, dx


def slab_starts(depth: int, slab: int) -> list[int]:
    """First slices of the slabs along a z-extent of ``depth`` (stride ``slab // 2``, the last
    slab flush with the end)."""
    thickness = min(slab, depth)
    stride = max(1, thickness // 2)
    starts = list(range(0, depth - thickness + 1, stride))
    if starts[-1] != depth - thickness:
        starts.append(depth - thickness)
    return starts


def _interior(volumes: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return volumes
    return volumes[:, radius:-radius, radius:-radius, radius:-radius]


def _check(query: torch.Tensor, reference: torch.Tensor, radius: int) -> None:
    if query.shape != reference.shape or query.dim() != 4:
        raise ValueError(
            f"pairs need equal (P, z, y, x) shapes, got {query.shape}, {reference.shape}"
        )
    if min(query.shape[1:]) <= 2 * radius:
        raise ValueError(f"a shift radius of {radius} voxels leaves nothing of {query.shape[1:]}")


def _slab_sums(per_slice: torch.Tensor, starts: list[int], thickness: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(per_slice.cumsum(dim=1), (1, 0))
    index = torch.tensor(starts)
    return padded[:, index + thickness] - padded[:, index]


def voxel_distances(
    query: torch.Tensor, reference: torch.Tensor, *, radius: int, slab: int
) -> torch.Tensor:
    """``1 -`` the best slab NCC over every shift, for each pair ``(query[i], reference[i])``.

    Args:
        query, reference: float (P, z, y, x), the site's preprocessed intensities.
        radius: the largest shift in voxels along each axis.
        slab: slab thickness in slices (along z).

    Returns:
        float32 (P,) distances in [0, 2].
    """
    _check(query, reference, radius)
    x = _interior(query.float(), radius)
    y = reference.float()
    depth, rows, cols = x.shape[1:]
    thickness = min(slab, depth)
    starts = slab_starts(depth, slab)
    count = float(thickness * rows * cols)
    sx = _slab_sums(x.sum(dim=(2, 3)), starts, thickness)
    sxx = _slab_sums((x * x).sum(dim=(2, 3)), starts, thickness)
    vx = sxx - sx * sx / count
    best = torch.full(sx.shape, -1.0)
    r = radius
    for dz, dy, dx in _shifts(radius):
        window = y[:, r + dz : r + dz + depth, r + dy : r + dy + rows, r + dx : r + dx + cols]
        sxy = _slab_sums((x * window).sum(dim=(2, 3)), starts, thickness)
        sy = _slab_sums(window.sum(dim=(2, 3)), starts, thickness)
        syy = _slab_sums((window * window).sum(dim=(2, 3)), starts, thickness)
        vy = syy - sy * sy / count
        scale = (vx * vy).clamp_min(0).sqrt()
        ncc = torch.where(scale > EPS * count, (sxy - sx * sy / count) / scale.clamp_min(EPS), 0.0)
        best = torch.maximum(best, ncc)
    return (1.0 - best.amax(dim=1).clamp(-1.0, 1.0)).to(torch.float32)


def label_distances(query: torch.Tensor, reference: torch.Tensor, *, radius: int) -> torch.Tensor:
    """``1 -`` the best Dice over every shift, for each pair of label maps.

    Dice counts a voxel as agreeing when both maps hold the same non-zero label:
    ``2 |{a = b > 0}| / (|a > 0| + |b > 0|)`` over the query's interior and the reference's
    window (every structure at once, weighted by its volume). Two empty maps have Dice 1.

    Args:
        query, reference: integer (P, z, y, x) label maps.
        radius: the largest shift in voxels along each axis.

    Returns:
        float32 (P,) distances in [0, 1].
    """
    _check(query, reference, radius)
    a = _interior(query, radius)
    depth, rows, cols = a.shape[1:]
    a_fg = (a > 0).sum(dim=(1, 2, 3)).float()
    best = torch.zeros(a.shape[0])
    r = radius
    for dz, dy, dx in _shifts(radius):
        window = reference[
            :, r + dz : r + dz + depth, r + dy : r + dy + rows, r + dx : r + dx + cols
        ]
        agree = ((a == window) & (a > 0)).sum(dim=(1, 2, 3)).float()
        total = a_fg + (window > 0).sum(dim=(1, 2, 3)).float()
        dice = torch.where(total > 0, 2 * agree / total.clamp_min(1.0), 1.0)
        best = torch.maximum(best, dice)
    return (1.0 - best).to(torch.float32)
