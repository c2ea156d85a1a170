"""Chunked top-k nearest-neighbour search of query cases among reference cases, per space.

For each chunk of ``audit.chunk-cases`` query cases: the feature distance to every reference
case (exact, one ``cdist``), and the coarse image and label similarities to every reference case
(one matrix product each, ``common.audit.coarse``). The ``top-k`` reference cases by coarse
image similarity and the ``top-k`` by coarse label similarity are the candidates whose exact
shifted voxel and label distances are computed (``common.audit.shifted``); the other reference
cases are farther in both coarse spaces and are not scored exactly. Memory is bounded by one
chunk: (chunk x reference) similarities and (chunk x 2 top-k) candidate volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from common.audit.coarse import CoarseImages, label_vectors
from common.audit.features import feature_distances, feature_scale, feature_vectors
from common.audit.shifted import label_distances, voxel_distances
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
    """What the search keeps of the reference cases: their coarse and feature vectors."""

    def __init__(self, cases: CaseSet, values: tuple[int, ...]) -> None:
        self.cases = cases
        self.values = values
        self.images = CoarseImages(cases.images)
        self.labels = label_vectors(cases.labels, values)
        self.features = feature_vectors(cases.images, cases.labels, values)
        self.scale = feature_scale(self.features)


def _top(scores: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    return scores.topk(min(k, scores.shape[1]), dim=1, largest=largest).indices


def _first_occurrence(candidates: torch.Tensor) -> torch.Tensor:
    same = candidates.unsqueeze(2) == candidates.unsqueeze(1)
    earlier = torch.ones_like(same[0]).tril(diagonal=-1).bool()
    return ~(same & earlier).any(dim=2)


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
    if exclude_self:
        rows = torch.arange(stop - start)
        image_sim[rows, rows + start] = -torch.inf
        slab_sim[rows, rows + start] = -torch.inf
        label_sim[rows, rows + start] = -torch.inf
        feature[rows, rows + start] = torch.inf
    k = settings.top_k
    feature_top = _top(feature, k, largest=False)
    candidates = torch.cat(
        [_top(sim, k, largest=True) for sim in (image_sim, slab_sim, label_sim)] + [feature_top],
        dim=1,
    )
    unique = _first_occurrence(candidates)
    if exclude_self:
        unique &= candidates != (torch.arange(stop - start) + start).unsqueeze(1)
    rows = torch.arange(stop - start).unsqueeze(1).expand_as(candidates)[unique]
    refs = candidates[unique]
    voxel = torch.full(candidates.shape, torch.inf, dtype=torch.float64)
    label = torch.full(candidates.shape, torch.inf, dtype=torch.float64)
    radius = settings.shift_voxels
    voxel[unique] = voxel_distances(
        images[rows], ref.cases.images[refs], radius=radius, slab=settings.slab_voxels
    ).double()
    label[unique] = label_distances(labels[rows], ref.cases.labels[refs], radius=radius).double()
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
        settings: the audit settings (shift radius, slab thickness, top-k, chunk size).
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
    ref = _Reference(reference, values)
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
