"""Determinism from one seed: every stage and site derives its own seed from the run's seed.

Seeds are derived with numpy's ``SeedSequence`` whose spawn key is built from the stage's
path (names and indices), so adding a new stage never shifts the seeds of the others.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def _word(part: str | int) -> int:
    if isinstance(part, int):
        return part
    digest = hashlib.sha256(part.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def derive_seed(root_seed: int, *path: str | int) -> int:
    """A 63-bit seed for the stage named by ``path`` (e.g. ``"phantoms", "ct", site, case``)."""
    sequence = np.random.SeedSequence(entropy=root_seed, spawn_key=tuple(_word(p) for p in path))
    return int(sequence.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1, 1 << 32]) >> 1


def numpy_rng(root_seed: int, *path: str | int) -> np.random.Generator:
    """A numpy generator for the stage named by ``path``."""
    return np.random.default_rng(derive_seed(root_seed, *path))


def torch_generator(root_seed: int, *path: str | int, device: str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` for the stage named by ``path``, to pass explicitly."""
    import torch  # here, so that commands without models start without loading torch

    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(root_seed, *path))
    return generator
