"""Shared fixtures and the test session's environment (one torch thread per worker, Flower
telemetry and update checks off)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from data_support import tiny_ct, write_pattern_case

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ["COLUMNS"] = "200"  # rich wraps at 80 columns when not on a terminal
torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores: one thread each


@pytest.fixture
def ct_site(tmp_path: Path) -> Path:
    """A pattern-layout site folder with two valid tiny CT cases."""
    site = tmp_path / "site"
    for case_id in ("a", "b"):
        write_pattern_case(site, case_id, *tiny_ct())
    return site
