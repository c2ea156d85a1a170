"""Exact distances of case pairs over small shifts: voxels (normalised cross-correlation per
slab) and label maps (Dice).

Both compare the interior of the query case (``radius`` voxels trimmed on every side) with the
reference case's windows at every shift ``(dz, dy, dx)`` in ``[-radius, radius]^3`` and keep the
best, so a copy moved by a few voxels is as close as an unmoved one. The voxel distance is
``1 - NCC`` of the best slab: slabs of ``slab`` slices along z with a stride of half that, so a
slab copied into an otherwise new volume is caught even when the rest differs. NCC ignores a
linear change of intensity (a rescaled copy is still a copy). A slab without contrast (pure air)
has NCC 0: it carries no evidence either way.

How, every shift at once: a query slice's correlation with a reference slice at every in-plane
shift is the product of their spectra (``torch.fft.rfft2`` per slice, taken once per case and
reused for every pair it is in), brought back only at the ``(2 radius + 1)^2`` in-plane lags
that are shifts by one matrix product with a restricted inverse DFT; summed over each slab's
slices, for each of the ``2 radius + 1`` slice offsets. That costs a few multiplications per
frequency and one matrix product per pair instead of a pass over the volume per shift. The
zero-padded query interior never wraps around the reference grid, so these are the exact
windowed sums, not circular ones. The reference windows' sums and sums of squares come from
running sums. Label agreement is the same correlation of each structure's indicator, summed over
the whole volume and rounded to the integer count it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS = 1e-6


def slab_starts(depth: int, slab: int) -> list[int]:
    """First slices of the slabs along a z-extent of ``depth`` (stride ``slab // 2``, the last
    slab flush with the end)."""
    thickness = min(slab, depth)
    stride = max(1, thickness // 2)
    starts = list(range(0, depth - thickness + 1, stride))
    if starts[-1] != depth - thickness:
        starts.append(depth - thickness)
    return starts


@dataclass(frozen=True)
class Layout:
    """Where the windows are: the grid, the shift radius, and the slabs of the query interior."""

    shape: tuple[int, int, int]
    radius: int
    starts: tuple[int, ...]
    thickness: int

    @classmethod
    def of(cls, shape: tuple[int, ...], radius: int, slab: int) -> Layout:
        """The layout for volumes of ``shape`` (z, y, x).

        Raises:
            ValueError: the radius leaves no interior.
        """
        if len(shape) != 3 or min(shape) <= 2 * radius:
            raise ValueError(f"a shift radius of {radius} voxels leaves nothing of {shape}")
        depth = shape[0] - 2 * radius
        z, y, x = (int(size) for size in shape)
        return cls((z, y, x), radius, tuple(slab_starts(depth, slab)), min(slab, depth))

    @property
    def lags(self) -> int:
        """Shifts per axis, ``2 radius + 1``."""
        return 2 * self.radius + 1

    @property
    def interior(self) -> tuple[int, int, int]:
        """The query interior's (z, y, x) extent."""
        return tuple(size - 2 * self.radius for size in self.shape)  # type: ignore[return-value]


def _interior(volumes: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return volumes
    return volumes[:, radius:-radius, radius:-radius, radius:-radius]


def _spectra(volumes: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(N, z, frequencies) complex64 in-plane spectrum of each slice on the full grid (a query
    interior zero-padded)."""
    return torch.fft.rfft2(volumes.float(), s=layout.shape[1:]).flatten(-2)


def _basis(size: int, lags: int, *, half: bool) -> torch.Tensor:
    """(frequencies, lags) complex128 inverse DFT along one axis of ``size``, restricted to lags
    ``0 .. lags - 1``; ``half``: the axis of a real FFT (its other half counted twice)."""
    frequencies = size // 2 + 1 if half else size
    k = torch.arange(frequencies, dtype=torch.float64)
    weight = torch.ones_like(k)
    if half:
        weight[1:] = 2.0
        if size % 2 == 0:
            weight[-1] = 1.0
    lag = torch.arange(lags, dtype=torch.float64)
    return weight[:, None] * torch.exp(2j * math.pi * torch.outer(k, lag) / size) / size


def _inverse(layout: Layout) -> torch.Tensor:
    """(2 frequencies, lags^2) float32 in-plane inverse DFT at the shifts, for a product
    spectrum P viewed as real (real and imaginary parts interleaved):
    ``correlation = view_as_real(P).flatten(-2) @ inverse``."""
    rows, cols = layout.shape[1:]
    by = _basis(rows, layout.lags, half=False)
    bx = _basis(cols, layout.lags, half=True)
    both = (by[:, None, :, None] * bx[None, :, None, :]).reshape(by.shape[0] * bx.shape[0], -1)
    return torch.stack([both.real, -both.imag], dim=1).flatten(0, 1).float()


def _slab_matrix(layout: Layout) -> torch.Tensor:
    """(slabs, interior depth) float32: 1 where a slice is in a slab."""
    matrix = torch.zeros(len(layout.starts), layout.interior[0])
    for row, start in enumerate(layout.starts):
        matrix[row, start : start + layout.thickness] = 1.0
    return matrix


def _window_sums(values: torch.Tensor, dim: int, width: int, lags: int) -> torch.Tensor:
    """Sums of ``width`` consecutive entries along ``dim`` starting at ``0 .. lags - 1``."""
    running = values.cumsum(dim=dim)
    padded = torch.cat([torch.zeros_like(running.narrow(dim, 0, 1)), running], dim=dim)
    index = torch.arange(lags)
    return padded.index_select(dim, index + width) - padded.index_select(dim, index)


def _box_sums(
    values: torch.Tensor, layout: Layout, starts: tuple[int, ...], thickness: int
) -> torch.Tensor:
    """(N, slabs, lag z, lag y, lag x) float64 sums of ``values`` (N, z, y, x) over the reference
    windows (``thickness`` x the interior's rows x cols) at slab ``starts`` + every shift."""
    _, rows, cols = layout.interior
    lags = layout.lags
    along_x = _window_sums(values.float(), 3, cols, lags).double()  # rows of a few dozen
    plane = _window_sums(along_x, 2, rows, lags)  # (N, z, lag y, lag x)
    running = torch.cat([torch.zeros_like(plane[:, :1]), plane.cumsum(dim=1)], dim=1)
    first = torch.tensor(starts)[:, None] + torch.arange(lags)[None, :]
    return running[:, first + thickness] - running[:, first]


def _blocks(count: int, block: int) -> list[slice]:
    return [slice(start, min(count, start + block)) for start in range(0, count, block)]


@dataclass(frozen=True)
class ImageSide:
    """One side's images, ready for every pair: per-slice spectra (``_spectra``, centred by each
    case's mean, which NCC ignores; a query's conjugated) and the sums and sums of squares of
    each slab window (float64; a query: (N, slabs), a reference: (N, slabs, lag z, lag y,
    lag x))."""

    spectra: torch.Tensor
    sums: torch.Tensor
    squares: torch.Tensor


def image_queries(images: torch.Tensor, layout: Layout) -> ImageSide:
    """The query side of float (N, z, y, x) images: their interiors."""
    x = _interior(images.double(), layout.radius)
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    slabs = _slab_matrix(layout).double().T
    sums, squares = x.sum(dim=(2, 3)) @ slabs, (x * x).sum(dim=(2, 3)) @ slabs
    return ImageSide(_spectra(x, layout).conj().resolve_conj(), sums, squares)


def _centred(images: torch.Tensor) -> torch.Tensor:
    y = images.float()
    return y - y.mean(dim=(1, 2, 3), keepdim=True)


def image_windows(images: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums and sums of squares of every reference window of float (N, z, y, x) images."""
    y = _centred(images)
    return (
        _box_sums(y, layout, layout.starts, layout.thickness),
        _box_sums(y * y, layout, layout.starts, layout.thickness),
    )


def image_references(
    images: torch.Tensor,
    layout: Layout,
    windows: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ImageSide:
    """The reference side of float (N, z, y, x) images: every window at every shift
    (``windows``: their ``image_windows``, if already computed)."""
    sums, squares = image_windows(images, layout) if windows is None else windows
    return ImageSide(_spectra(_centred(images), layout), sums, squares)


def voxel_distances_of(
    queries: ImageSide,
    references: ImageSide,
    pairs: tuple[torch.Tensor, torch.Tensor],
    layout: Layout,
    block: int,
) -> torch.Tensor:
    """``1 -`` the best slab NCC over every shift of the pairs ``(queries[i], references[j])``
    for ``(i, j)`` in ``pairs``, ``block`` pairs at a time (what bounds memory).

    Returns:
        float32 (P,) distances in [0, 2].
    """
    rows, refs = pairs
    depth, height, width = layout.interior
    count = float(layout.thickness * height * width)
    inverse = _inverse(layout)
    slabs = _slab_matrix(layout)
    out = []
    for part in _blocks(len(rows), block):
        x, y = queries.spectra[rows[part]], references.spectra[refs[part]]
        per_offset = []
        for offset in range(layout.lags):
            product = torch.view_as_real(x * y[:, offset : offset + depth]).flatten(-2)
            per_offset.append(slabs @ (product @ inverse))  # (pairs, slabs, lags^2)
        shape = (len(x), len(layout.starts), layout.lags, layout.lags, layout.lags)
        sxy = torch.stack(per_offset, dim=2).double().reshape(shape)
        sx = queries.sums[rows[part]][:, :, None, None, None]
        sxx = queries.squares[rows[part]][:, :, None, None, None]
        sy, syy = references.sums[refs[part]], references.squares[refs[part]]
        scale = ((sxx - sx * sx / count) * (syy - sy * sy / count)).clamp_min(0).sqrt()
        ncc = torch.where(scale > EPS * count, (sxy - sx * sy / count) / scale.clamp_min(EPS), 0.0)
        out.append(ncc.flatten(1).amax(dim=1))
    best = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return (1.0 - best.clamp(-1.0, 1.0)).to(torch.float32)


@dataclass(frozen=True)
class LabelSide:
    """One side's label maps: 3D spectra of each structure's indicator (complex64 (N,
    structures, z, y, kx); a query's conjugated) and foreground counts (a query: (N,) over its
    interior; a reference: (N, lag z, lag y, lag x) over the window at every shift)."""

    spectra: torch.Tensor
    foreground: torch.Tensor


def _indicator_spectra(
    labels: torch.Tensor, values: tuple[int, ...], layout: Layout
) -> torch.Tensor:
    frequencies = (*layout.shape[:2], layout.shape[2] // 2 + 1)
    if not values:  # no structure: nothing to transform
        return torch.zeros(labels.shape[0], 0, *frequencies, dtype=torch.complex64)
    indicators = torch.stack([(labels == value).float() for value in values], dim=1)
    return torch.fft.rfftn(indicators, s=layout.shape, dim=(-3, -2, -1))


def label_queries(labels: torch.Tensor, values: tuple[int, ...], layout: Layout) -> LabelSide:
    """The query side of integer (N, z, y, x) label maps with structures ``values``."""
    a = _interior(labels, layout.radius)
    foreground = (a > 0).flatten(1).sum(dim=1).double()
    return LabelSide(_indicator_spectra(a, values, layout).conj().resolve_conj(), foreground)


def label_windows(labels: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(N, lag z, lag y, lag x) foreground counts of every reference window."""
    return _box_sums((labels > 0).float(), layout, (0,), layout.interior[0])[:, 0]


def label_references(
    labels: torch.Tensor,
    values: tuple[int, ...],
    layout: Layout,
    windows: torch.Tensor | None = None,
) -> LabelSide:
    """The reference side of integer (N, z, y, x) label maps with structures ``values``
    (``windows``: their ``label_windows``, if already computed)."""
    foreground = label_windows(labels, layout) if windows is None else windows
    return LabelSide(_indicator_spectra(labels, values, layout), foreground)


def spectra_bytes(layout: Layout, structures: int) -> int:
    """Bytes of one reference case's spectra: its slices' (``image_references``) and its
    structures' (``label_references``), complex64."""
    depth, rows, cols = layout.shape
    return 8 * depth * rows * (cols // 2 + 1) * (1 + structures)


def _volume_lags(spectra: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(P, z, y, kx) spectra of real correlations -> (P, lag z, lag y, lag x) float64 values."""
    depth, rows, cols = layout.shape
    bz = _basis(depth, layout.lags, half=False).to(torch.complex64)
    by = _basis(rows, layout.lags, half=False).to(torch.complex64)
    bx = _basis(cols, layout.lags, half=True).to(torch.complex64)
    along_x = spectra @ bx  # (P, z, y, lag x)
    along_y = along_x.transpose(-1, -2) @ by  # (P, z, lag x, lag y)
    along_z = along_y.permute(0, 2, 3, 1) @ bz  # (P, lag x, lag y, lag z)
    return along_z.permute(0, 3, 2, 1).real.double()


def label_distances_of(
    queries: LabelSide,
    references: LabelSide,
    pairs: tuple[torch.Tensor, torch.Tensor],
    layout: Layout,
    block: int,
) -> torch.Tensor:
    """``1 -`` the best Dice over every shift of the label-map pairs in ``pairs``, ``block``
    pairs at a time.

    Returns:
        float32 (P,) distances in [0, 1].
    """
    rows, refs = pairs
    out = []
    for part in _blocks(len(rows), block):
        product = (queries.spectra[rows[part]] * references.spectra[refs[part]]).sum(dim=1)
        agree = _volume_lags(product, layout).round()
        total = (
            queries.foreground[rows[part]][:, None, None, None] + references.foreground[refs[part]]
        )
        dice = torch.where(total > 0, 2 * agree / total.clamp_min(1.0), 1.0)
        out.append(dice.flatten(1).amax(dim=1))
    best = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return (1.0 - best).to(torch.float32)


def _check(query: torch.Tensor, reference: torch.Tensor) -> None:
    if query.shape != reference.shape or query.dim() != 4:
        raise ValueError(
            f"pairs need equal (P, z, y, x) shapes, got {query.shape}, {reference.shape}"
        )


def _each(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(count)
    return index, index


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
    _check(query, reference)
    layout = Layout.of(tuple(query.shape[1:]), radius, slab)
    queries, references = image_queries(query, layout), image_references(reference, layout)
    return voxel_distances_of(queries, references, _each(len(query)), layout, len(query))


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
    _check(query, reference)
    layout = Layout.of(tuple(query.shape[1:]), radius, 1)
    present = torch.unique(torch.cat([query.flatten(), reference.flatten()]))
    values = tuple(int(v) for v in present.tolist() if v != 0)
    queries = label_queries(query, values, layout)
    references = label_references(reference, values, layout)
    return label_distances_of(queries, references, _each(len(query)), layout, len(query))
