"""Tissue maps: a case's label map with its unlabelled voxels split into intensity classes.

A label map says where the tumour and the bone are, but not where the air, the fat or the brain's
grey and white matter are, which is most of what an image shows. A *tissue map* adds them
without any extra annotation: every voxel the label map leaves as background is put in an
intensity class by fixed thresholds on the normalised image (``model.tissue-thresholds``, in the
[-1, 1] units of a prepared cache), and every labelled voxel keeps its label. The image may be
smoothed first (``model.tissue-smoothing``, a Gaussian's standard deviation in voxels): where a
threshold lies close to a tissue's grey value, as between the grey and white matter of an MRI
at 6 mm, the scanner's noise would otherwise scatter the tissue into hundreds of specks per
case, a map no generator learns and no anatomy has. A generator that
draws tissue maps draws the whole anatomy as discrete classes (which a diffusion model learns far
faster than grey values), and an image decoder then only has to paint each class.

Classes: ``0 .. B - 1`` are the B = ``len(thresholds) + 1`` intensity classes of unlabelled voxels
(darkest first); ``B - 1 + v`` is label value ``v`` (1 .. K - 1). Released label maps keep the
labels only (:func:`labels_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn.functional import conv1d, pad


class TissueClasses:
    """The tissue classes of a label schema with ``num_classes`` labels (background included)
    and intensity ``thresholds``."""

    def __init__(
        self, num_classes: int, thresholds: Sequence[float], smoothing: float = 0.0
    ) -> None:
        if list(thresholds) != sorted(thresholds):
            raise ValueError(f"tissue thresholds {tuple(thresholds)} must increase")
        if smoothing < 0:
            raise ValueError(f"tissue smoothing {smoothing} cannot be negative")
        self.num_labels = num_classes
        self.thresholds = tuple(float(t) for t in thresholds)
        self.smoothing = float(smoothing)
        self.intensity_classes = len(self.thresholds) + 1

    @property
    def count(self) -> int:
        """Number of tissue classes: intensity classes plus the non-background labels."""
        return self.intensity_classes + self.num_labels - 1

    def tissue_map(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Tissue classes ``(B, *s)`` of images ``(B, 1, *s)`` and label maps ``(B, *s)``."""
        bounds = torch.tensor(self.thresholds, device=image.device, dtype=image.dtype)
        smoothed = gaussian_smoothed(image[:, 0], self.smoothing)
        intensity = torch.bucketize(smoothed.contiguous(), bounds, right=True)
        return torch.where(label > 0, label + self.intensity_classes - 1, intensity)

    def labels_of(self, tissue: torch.Tensor) -> torch.Tensor:
        """The label map ``(B, *s)`` of tissue maps: labels kept, intensity classes to 0."""
        return torch.clamp(tissue - (self.intensity_classes - 1), min=0)

    def label_channels(self) -> slice:
        """The one-hot channels that hold the labels (non-background)."""
        return slice(self.intensity_classes, self.count)

    def known_channels(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a label map ``(B, *s)`` fixes of a one-hot tissue map in [-1, 1]: (values,
        mask), both ``(B, count, *s)``. The label channels are known everywhere; the intensity
        channels where a label is set (they are -1 there)."""
        shape = (label.shape[0], self.count, *label.shape[1:])
        values = torch.full(shape, -1.0, device=label.device)
        mask = torch.zeros(shape, dtype=torch.bool, device=label.device)
        labelled = label > 0
        for value in range(1, self.num_labels):
            channel = self.intensity_classes + value - 1
            values[:, channel] = torch.where(label == value, 1.0, -1.0)
        mask[:, self.label_channels()] = True
        mask[:, : self.intensity_classes] = labelled[:, None]
        return values, mask


def gaussian_smoothed(volumes: torch.Tensor, sigma: float) -> torch.Tensor:
    """``volumes`` ``(B, *s)`` smoothed along every spatial axis by a Gaussian of standard
    deviation ``sigma`` voxels (kernel radius ceil(3 sigma), edges repeated); 0 returns them."""
    if sigma == 0:
        return volumes
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=volumes.device, dtype=volumes.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    smoothed = volumes
    for axis in range(1, volumes.dim()):
        moved = smoothed.movedim(axis, -1)
        lines = moved.reshape(-1, 1, moved.shape[-1])
        lines = conv1d(pad(lines, (radius, radius), mode="replicate"), kernel)
        smoothed = lines.reshape(moved.shape).movedim(-1, axis)
    return smoothed
