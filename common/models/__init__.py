"""Generators of (image, label map) pairs: one small interface, a literal registry of families."""

from common.models.interface import Batch, GenerativeModel, SyntheticPairs
from common.models.registry import FAMILIES, build_model, families

__all__ = [
    "FAMILIES",
    "Batch",
    "GenerativeModel",
    "SyntheticPairs",
    "build_model",
    "families",
]
