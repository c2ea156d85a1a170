"""Chunked top-k nearest-neighbour search of query cases among reference cases, per space.

Coarse to fine. For each chunk of ``audit.chunk-cases`` query cases: the feature distance to
every reference case (exact, one ``cdist``), and the coarse whole-image, best-slab and label-map
similarities to every reference case (one matrix product each, ``common.audit.coarse``). Those
four rankings make the *shortlist*: the best of each ranking, then the second best of each, and
so on, until ``audit.shortlist`` different reference cases; only these get the exact shifted
voxel and label distances (``common.audit.shifted``), ``audit.chunk-cases`` pairs at a time.
Setting the shortlist to the number of reference cases makes the search exhaustive.

Why a shortlist does not miss a planted copy. Each ranking's best case is on every shortlist
(``audit.shortlist`` >= 4 keeps all four), so a copy is shortlisted as soon as it comes first in
one ranking, and its coarse similarity is bounded close to 1 in the ranking its kind of copying
leaves intact. The coarse vectors are centred, unit-norm average pools, so a rescaled copy
(``a x + b``, ``a > 0``) has coarse similarity exactly 1 to its source. Pooling averages noise of
standard deviation ``s`` over ``f^3`` voxels per cell, so a noisy copy's similarity is about
``1 / (1 + s^2 / (f^3 c^2))`` for a pooled contrast ``c`` (0.02 noise, ``f = 3``, ``c = 0.1``:
above 0.99). A shift by ``h <= radius`` voxels leaves the pooled cells misaligned by at most
``h`` voxels (by none for the shifts the half-cell offsets meet, ``coarse``), so the similarity
falls only as far as the pooled image's own autocorrelation at that fraction of a cell. A copied
slab keeps its similarity in the slab ranking, whatever the rest of the volume holds, although
it can rank far down the whole-volume ranking (a test plants exactly that). Two different
patients of a site sit clearly lower than these bounds. The tests plant every kind of copy and
check that the shortlist finds the same nearest neighbours, at the same distances, as the
exhaustive search. A copy shifted by much more than a coarse cell, or a copied part thinner than
a slab, is outside this argument (as it is outside the exact distances' radius and slabs).

Memory is bounded by one chunk, (chunk x reference) coarse similarities and one block of pairs,
plus the reference cases' spectra: all of them, taken once, when they fit
``audit.spectra-cache-mib``, else only the chunk's shortlisted cases', taken again per chunk;
never (query x reference x voxels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from common.audit.coarse import CoarseImages, label_vectors
from common.audit.features import feature_distances, feature_scale, feature_vectors
from common.audit.shifted import (
    ImageSide,
    LabelSide,
    Layout,
    image_queries,
    image_references,
    image_windows,
    label_distances_of,
    label_queries,
    label_references,
    label_windows,
    spectra_bytes,
    voxel_distances_of,
)
from common.config import AuditConfig

SPACES = ("voxels", "labels", "features")
"""The audit's spaces, in report order."""


@dataclass(frozen=True)
class CaseSet:
    """Cases on one grid: ``images`` float32 (N, z, y, x) after the site's preprocessing
    ([-1, 1]), ``labels`` uint8 (N, z, y, x) schema values."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray) -> CaseSet:
        """A case set of numpy stacks (N, z, y, x)."""
        if images.shape != labels.shape or images.ndim != 4:
            raise ValueError(
                f"images {images.shape} and labels {labels.shape} must be (N, z, y, x)"
            )
        return cls(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8)),
        )


@dataclass(frozen=True)
class Neighbours:
    """Per query case and space: reference indices and distances of the nearest cases, nearest
    first (``index`` -1 and distance inf where fewer reference cases were scored)."""

    index: dict[str, np.ndarray]
    distance: dict[str, np.ndarray]

    def nearest(self, space: str) -> np.ndarray:
        """(Q,) distance to the nearest reference case."""
        return self.distance[space][:, 0]

    def second(self, space: str) -> np.ndarray:
        """(Q,) distance to the second-nearest reference case (inf when there is none)."""
        column = self.distance[space]
        return column[:, 1] if column.shape[1] > 1 else np.full(column.shape[0], np.inf)


Progress = Callable[[int, int], None]


class _Reference:
    """What the search keeps of the reference cases: their coarse and feature vectors, the sums
    over every window the exact distances compare with (a few thousand numbers per case), and
    their spectra when they fit ``audit.spectra-cache-mib`` (else each chunk takes the spectra
    of its shortlisted cases)."""

    def __init__(self, cases: CaseSet, values: tuple[int, ...], settings: AuditConfig) -> None:
        self.cases = cases
        self.values = values
        self.layout = Layout.of(
            tuple(cases.images.shape[1:]), settings.shift_voxels, settings.slab_voxels
        )
        self.images = CoarseImages(cases.images)
        self.labels = label_vectors(cases.labels, values)
        self.features = feature_vectors(cases.images, cases.labels, values)
        self.scale = feature_scale(self.features)
        parts = [
            (
                *image_windows(cases.images[start : start + settings.chunk_cases], self.layout),
                label_windows(cases.labels[start : start + settings.chunk_cases], self.layout),
            )
            for start in range(0, len(cases), settings.chunk_cases)
        ]
        self.sums, self.squares, self.foreground = (
            torch.cat(part) for part in zip(*parts, strict=True)
        )
        self.sides: tuple[ImageSide, LabelSide] | None = None
        cache_bytes = len(cases) * spectra_bytes(self.layout, len(values))
        if cache_bytes <= settings.spectra_cache_mib * 2**20:
            self.sides = self.spectra(torch.arange(len(cases)), settings.chunk_cases)

    def spectra(self, cases: torch.Tensor, chunk: int) -> tuple[ImageSide, LabelSide]:
        """The image and label sides of the reference ``cases`` (indices), ``chunk`` at a time
        into tensors allocated once."""
        images: torch.Tensor | None = None
        labels: torch.Tensor | None = None
        for start in range(0, len(cases), chunk):
            part = cases[start : start + chunk]
            image = image_references(
                self.cases.images[part], self.layout, (self.sums[part], self.squares[part])
            ).spectra
            label = label_references(
                self.cases.labels[part], self.values, self.layout, self.foreground[part]
            ).spectra
            if images is None or labels is None:
                images = image.new_empty((len(cases), *image.shape[1:]))
                labels = label.new_empty((len(cases), *label.shape[1:]))
            images[start : start + len(part)] = image
            labels[start : start + len(part)] = label
        if images is None or labels is None:
            raise ValueError("no reference cases to take spectra of")
        return (
            ImageSide(images, self.sums[cases], self.squares[cases]),
            LabelSide(labels, self.foreground[cases]),
        )


def _top(scores: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    return scores.topk(min(k, scores.shape[1]), dim=1, largest=largest).indices


def _first_occurrence(candidates: torch.Tensor) -> torch.Tensor:
    same = candidates.unsqueeze(2) == candidates.unsqueeze(1)
    earlier = torch.ones_like(same[0]).tril(diagonal=-1).bool()
    return ~(same & earlier).any(dim=2)


def shortlist(
    rankings: list[torch.Tensor], size: int, exclude: torch.Tensor | None
) -> torch.Tensor:
    """(Q, size) reference indices: the best of each ranking's (Q, R) scores (higher is closer),
    then the second best of each, and so on, each case once; -1 where fewer are left.

    Args:
        rankings: scores of every query against every reference case.
        size: cases per query.
        exclude: (Q,) a reference index per query never to shortlist (the query itself), or
            None.
    """
    depth = min(size + (exclude is not None), rankings[0].shape[1])
    tops = torch.stack([_top(scores, depth, largest=True) for scores in rankings], dim=2)
    interleaved = tops.flatten(1)  # rank 1 of every ranking, then rank 2, ...
    keep = _first_occurrence(interleaved)
    if exclude is not None:
        keep &= interleaved != exclude.unsqueeze(1)
    position = keep.cumsum(dim=1) - 1
    keep &= position < size
    out = torch.full((interleaved.shape[0], size), -1, dtype=torch.long)
    rows = torch.arange(interleaved.shape[0]).unsqueeze(1).expand_as(interleaved)
    out[rows[keep], position[keep]] = interleaved[keep]
    return out


def _ranked(
    candidates: torch.Tensor, distances: torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    order = distances.argsort(dim=1)[:, :k]
    index = candidates.gather(1, order)
    distance = distances.gather(1, order)
    index = torch.where(torch.isfinite(distance), index, torch.full_like(index, -1))
    out_index = np.full((index.shape[0], k), -1, dtype=np.int64)
    out_distance = np.full((index.shape[0], k), np.inf, dtype=np.float64)
    out_index[:, : index.shape[1]] = index.numpy()
    out_distance[:, : index.shape[1]] = distance.double().numpy()
    return out_index, out_distance


def _exact(
    images: torch.Tensor,
    labels: torch.Tensor,
    candidates: torch.Tensor,
    ref: _Reference,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, shortlist) exact voxel and label distances of the shortlisted pairs (inf elsewhere)."""
    valid = candidates >= 0
    rows = torch.arange(len(images)).unsqueeze(1).expand_as(candidates)[valid]
    if ref.sides is None:
        needed, local = torch.unique(candidates[valid], return_inverse=True)
        image_side, label_side = ref.spectra(needed, block)
    else:
        local = candidates[valid]
        image_side, label_side = ref.sides
    layout = ref.layout
    voxel = torch.full(candidates.shape, torch.inf, dtype=torch.float64)
    label = torch.full(candidates.shape, torch.inf, dtype=torch.float64)
    voxel[valid] = voxel_distances_of(
        image_queries(images, layout), image_side, (rows, local), layout, block
    ).double()
    label[valid] = label_distances_of(
        label_queries(labels, ref.values, layout), label_side, (rows, local), layout, block
    ).double()
    return voxel, label


def _chunk(
    query: CaseSet,
    start: int,
    stop: int,
    ref: _Reference,
    settings: AuditConfig,
    exclude_self: bool,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    images, labels = query.images[start:stop], query.labels[start:stop]
    image_sim, slab_sim = ref.images.similarity(images)
    label_sim = label_vectors(labels, ref.values) @ ref.labels.T
    feature = feature_distances(
        feature_vectors(images, labels, ref.values), ref.features, ref.scale
    )
    itself = torch.arange(start, stop) if exclude_self else None
    if itself is not None:
        rows = torch.arange(stop - start)
        feature[rows, itself] = torch.inf
    k = settings.top_k
    feature_top = _top(feature, k, largest=False)
    candidates = shortlist([image_sim, slab_sim, label_sim, -feature], settings.shortlist, itself)
    voxel, label = _exact(images, labels, candidates, ref, settings.chunk_cases)
    feature_ranked = feature.gather(1, feature_top).double()
    return {
        "voxels": _ranked(candidates, voxel, k),
        "labels": _ranked(candidates, label, k),
        "features": _ranked(
            feature_top, torch.where(torch.isfinite(feature_ranked), feature_ranked, torch.inf), k
        ),
    }


def search(
    query: CaseSet,
    reference: CaseSet,
    values: tuple[int, ...],
    settings: AuditConfig,
    *,
    exclude_self: bool = False,
    on_chunk: Progress | None = None,
) -> Neighbours:
    """The ``settings.top_k`` nearest reference cases of every query case, per space.

    Args:
        query, reference: cases on one grid.
        values: the label values of the structures (the schema's non-zero values).
        settings: the audit settings (shift radius, slab thickness, top-k, shortlist, chunk
            size).
        exclude_self: ``query`` is ``reference`` and a case is not its own neighbour
            (leave-one-out calibration).
        on_chunk: called with (query cases done, total) after each chunk.

    Raises:
        ValueError: an empty reference set, or sets on different grids.
    """
    if len(reference) == 0:
        raise ValueError("the audit needs at least one reference case")
    if query.images.shape[1:] != reference.images.shape[1:]:
        raise ValueError(
            f"query cases {tuple(query.images.shape[1:])} and reference cases "
            f"{tuple(reference.images.shape[1:])} are on different grids"
        )
    ref = _Reference(reference, values, settings)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {space: [] for space in SPACES}
    with torch.no_grad():
        for start in range(0, len(query), settings.chunk_cases):
            stop = min(len(query), start + settings.chunk_cases)
            for space, ranked in _chunk(query, start, stop, ref, settings, exclude_self).items():
                parts[space].append(ranked)
            if on_chunk is not None:
                on_chunk(stop, len(query))
    return Neighbours(
        index={space: np.concatenate([p[0] for p in parts[space]]) for space in SPACES},
        distance={space: np.concatenate([p[1] for p in parts[space]]) for space in SPACES},
    )
