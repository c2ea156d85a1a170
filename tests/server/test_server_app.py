"""The ServerApp and ClientApp in Flower's simulation engine (Ray), through `simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from federation_support import SMOKE

from common.config import load_config
from common.errors import ConfigError, OutputExistsError
from common.release import read_manifest
from simulations.simulate import STATE_DIR, simulate


def test_a_smoke_federation_runs_in_the_simulation_engine(tmp_path: Path) -> None:
    config = load_config(SMOKE)
    outcome = simulate(config, tmp_path / "sim")
    assert outcome.sites == 2
    rounds = [
        json.loads(line) for line in (outcome.server_dir / "rounds.jsonl").read_text().splitlines()
    ]
    assert [(r["round"], r["accepted"], r["aggregated"]) for r in rounds] == [
        (1, 2, True),
        (2, 2, True),
    ]
    manifest = read_manifest(outcome.release)
    assert manifest["rounds"] == 2
    assert len(manifest["sites"]) == 2
    assert all(0 < site["epsilon"] <= 8.0 + 1e-6 for site in manifest["sites"])
    assert len(list((outcome.release / "imagesTr").glob("*.nii.gz"))) == 2
    ledgers = sorted((tmp_path / "sim" / STATE_DIR / "ledger").glob("*/*.json"))
    assert len(ledgers) == 2  # one privacy ledger per virtual site, kept at the site


def test_a_simulation_needs_sites_and_a_fresh_folder(tmp_path: Path) -> None:
    config = load_config(SMOKE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no site folders"):
        simulate(config, tmp_path / "a", sites_dir=tmp_path / "empty")
    (tmp_path / "one" / "site-01").mkdir(parents=True)
    with pytest.raises(ConfigError, match="min-sites"):
        simulate(config, tmp_path / "b", sites_dir=tmp_path / "one")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(OutputExistsError, match="--resume"):
        simulate(config, tmp_path / "used")
