"""Flat keys with a separator (``a.b.c``, ``a/b``) turned into nested dictionaries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nested(flat: Mapping[str, Any], separator: str) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` with separator ``.`` as ``{"a": {"b": 1, "c": 2}}``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *path, last = key.split(separator)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree
