"""Strict JSON for result files: every non-finite float written as text, never as NaN."""

from __future__ import annotations

import json
import math
from typing import Any


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float written as "inf", "-inf" or "nan" (nested
    dicts, lists and tuples too), for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def strict_dumps(value: Any) -> str:
    """``value`` as indented strict JSON text (non-finite floats as text), with a final newline."""
    return json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n"
