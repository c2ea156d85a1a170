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
    flat_labels = labels.flatten(start_dim=1)
    columns = []
    for value in values:
        inside = (flat_labels == value).float()
        volume = inside.sum(dim=1)
        columns.append(volume / flat_labels.shape[1])
        columns.append((flat_images * inside).sum(dim=1) / volume.clamp_min(1.0))
    bins = ((flat_images.clamp(-1.0, 1.0) + 1.0) / 2.0 * HISTOGRAM_BINS).long()
    bins = bins.clamp_max(HISTOGRAM_BINS - 1)
    histogram = torch.zeros(flat_images.shape[0], HISTOGRAM_BINS)
    histogram.scatter_add_(1, bins, torch.ones_like(flat_images))
    columns.extend((histogram / flat_images.shape[1]).T)
    return torch.stack(columns, dim=1)


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
