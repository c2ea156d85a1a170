"""A site's prepared cases as a torch dataset, for local training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.cache import CacheIndex, read_cache
from common.data.preprocess import PreparedCase


def case_tensors(case: PreparedCase, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (1, *spatial) float32, label (*spatial) int64) of one case.

    In 2D the middle axial slice is used: the quick-experiment mode of ``model.spatial-dims``.
    """
    image, label = case.image, case.label
    if spatial_dims == 2:
        middle = image.shape[0] // 2
        image, label = image[middle], label[middle]
    return (
        torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
        torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
    )


class CachedCases(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Every case of a site's cache, held in memory (a site's prepared cases are small)."""

    def __init__(self, cache: Path, spatial_dims: int = 3) -> None:
        self.index: CacheIndex
        self.index, cases = read_cache(cache)
        self._items = [case_tensors(case, spatial_dims) for case in cases]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._items[item]
