"""The feature space: a short vector of what a radiologist would call a case's make-up.

Per case: the volume fraction of each structure, the mean intensity inside each structure, and
a 16-bin histogram of the whole image (preprocessed units, [-1, 1]). Chosen over radiomics and
over a learned embedding because it is exact and fast for a million pairs (radiomics takes
seconds per case; an embedding needs a network trained on public data, which would itself have
to be audited), blind to shifts by construction, and it sees what the voxel space does not: a
case whose anatomy is reordered but whose make-up is a patient's. Features are z-scored by the
reference cases' spread and compared by Euclidean distance divided by the root of their count.
"""

from __future__ import annotations

import torch

HISTOGRAM_BINS = 16


def feature_vectors(
    images: torch.Tensor, labels: torch.Tensor, values: tuple[int, ...]
) -> torch.Tensor:
    """float32 (N, features) for images (N, z, y, x) in [-1, 1] and their label maps."""
    flat_images = images.flatten(start_dim=1).float()
    cases, voxels = flat_images.shape
    width = max(max(values, default=0), int(labels.max()) if labels.numel() else 0) + 1
    index = _per_case(labels.flatten(start_dim=1).int(), width).flatten()
    counts = torch.bincount(index, minlength=cases * width).reshape(cases, width).float()
    sums = torch.bincount(index, weights=flat_images.flatten(), minlength=cases * width)
    sums = sums.reshape(cases, width)
    columns = []
    for value in values:
        columns.append(counts[:, value] / voxels)
        columns.append(sums[:, value] / counts[:, value].clamp_min(1.0))
    bins = (flat_images + 1.0).mul_(HISTOGRAM_BINS / 2.0).int().clamp_(0, HISTOGRAM_BINS - 1)
    histogram = torch.bincount(
        _per_case(bins, HISTOGRAM_BINS).flatten(), minlength=cases * HISTOGRAM_BINS
    )
    columns.extend((histogram.reshape(cases, HISTOGRAM_BINS).float() / voxels).T)
    return torch.stack(columns, dim=1)


def _per_case(index: torch.Tensor, width: int) -> torch.Tensor:
    """(N, voxels) int32 ``index`` in ``[0, width)`` moved to case ``n``'s own ``width`` bins."""
    return index + (width * torch.arange(index.shape[0], dtype=torch.int32))[:, None]


def feature_scale(reference: torch.Tensor) -> torch.Tensor:
    """The spread of each reference feature; a constant feature gets spread 1."""
    spread = reference.std(dim=0, unbiased=False)
    return torch.where(spread > 1e-8, spread, torch.ones_like(spread))


def feature_distances(
    query: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """(Q, R) Euclidean distances of z-scored features over the root of their count."""
    q, r = query / scale, reference / scale
    return torch.cdist(q, r) / q.shape[1] ** 0.5
