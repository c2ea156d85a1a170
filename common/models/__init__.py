"""Generators of (image, label map) pairs: one small interface, a registry of families."""

from common.models.interface import Batch, GenerativeModel, SyntheticPairs
from common.models.registry import build_model, families, register_family

__all__ = [
    "Batch",
    "GenerativeModel",
    "SyntheticPairs",
    "build_model",
    "families",
    "register_family",
]
