"""The one typed config: Flower's flat keys in, frozen dataclasses out, every mistake named."""

from __future__ import annotations

import dataclasses
import logging
import re
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from common.config import (
    SECTIONS,
    DataConfig,
    FedsynthConfig,
    SiteConfig,
    default_run_config,
    load_config,
    log_config,
    parse_label_remap,
    parse_run_config_args,
    to_run_config,
    valid_keys,
)
from common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_holds_every_setting_with_its_default() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flat = flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])
    assert flat == default_run_config()


def test_empty_run_config_gives_defaults() -> None:
    assert load_config({}) == FedsynthConfig()


def test_dotted_kebab_keys_map_to_fields() -> None:
    config = load_config(
        {
            "seed": 7,
            "data.modality": "mri",
            "data.target-spacing": "1.5,1.5,3",
            "data.target-shape": 64,
            "phantoms.cases-per-site": 4,
            "data.require-tumour": False,
        }
    )
    assert config.seed == 7
    assert config.data.modality == "mri"
    assert config.data.target_spacing == (1.5, 1.5, 3.0)
    assert config.data.target_shape == (64, 64, 64)
    assert config.phantoms.cases_per_site == 4
    assert config.data.require_tumour is False


def test_round_trip_through_run_config() -> None:
    config = load_config({"data.target-shape": "96x96x48", "seed": 3})
    assert load_config(to_run_config(config)) == config
    assert to_run_config(config)["data.target-shape"] == "96,96,48"


def test_unknown_key_lists_valid_ones_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'data.modalty'") as info:
        load_config({"data.modalty": "ct"})
    assert "Did you mean data.modality" in str(info.value)
    assert "phantoms.cases-per-site" in str(info.value)


@pytest.mark.parametrize("key", ["data.target_shape", "nosection.x", "model.colour"])
def test_unknown_or_snake_case_keys_are_rejected(key: str) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config({key: 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.modality", "pet", "is not one of ct, mri"),
        ("phantoms.sites", 0, "below its minimum 1"),
        ("phantoms.size", 4096, "above its maximum 512"),
        ("data.target-shape", "32,32", "one number or three"),
        ("data.target-spacing", "1,a,1", "must be a number"),
        ("phantoms.sites", 2.5, "whole number"),
        ("data.require-tumour", "maybe", "true or false"),
        ("data.image-pattern", 3, "must be a string"),
        ("seed", -1, "below its minimum 0"),
    ],
)
def test_bad_values_are_named(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config({key: value})  # type: ignore[dict-item]
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.ct-window-min": 100.0, "data.ct-window-max": 0.0}, "ct-window-min must be"),
        ({"data.mri-percentile-low": 90.0, "data.mri-percentile-high": 10.0}, "percentile-low"),
        ({"phantoms.noise-min": 0.5, "phantoms.noise-max": 0.1}, "noise-min"),
        ({"data.image-pattern": "image.nii.gz"}, "must contain {case}"),
        ({"data.label-remap": "4-3"}, "from:to"),
        ({"data.hu-min": 10.0, "data.hu-max": 0.0}, "hu-min"),
    ],
)
def test_cross_field_checks(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)  # type: ignore[arg-type]


def test_dataclasses_are_frozen() -> None:
    config = DataConfig()
    with pytest.raises(AttributeError):
        config.modality = "mri"  # type: ignore[misc]


def test_label_remap_parsing() -> None:
    assert parse_label_remap("4:3, 7:0") == {4: 3, 7: 0}
    assert parse_label_remap("") == {}


def test_cli_overrides_parse_like_flower(tmp_path: Path) -> None:
    toml = tmp_path / "site.toml"
    toml.write_text('seed = 5\n[data]\nmodality = "mri"\ntarget-shape = "48,48,48"\n')
    merged = parse_run_config_args('data.modality="ct" phantoms.sites=4', toml)
    assert merged == {
        "seed": 5,
        "data.modality": "ct",
        "data.target-shape": "48,48,48",
        "phantoms.sites": 4,
    }


def test_cli_reads_a_pyproject_config_table(tmp_path: Path) -> None:
    toml = tmp_path / "pyproject.toml"
    toml.write_text('[tool.flwr.app.config]\nseed = 9\ndata.modality = "mri"\n')
    assert parse_run_config_args(None, toml) == {"seed": 9, "data.modality": "mri"}


def test_cli_config_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_run_config_args(None, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_run_config_args(None, bad)
    with pytest.raises(ConfigError, match="key=value"):
        parse_run_config_args("data.modality=mri oops=", None)


def test_every_setting_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedsynth.config"):
        log_config(FedsynthConfig())
    logged = {record.args[0] for record in caplog.records}  # type: ignore[index]
    assert logged == set(valid_keys())


def test_site_values_come_from_node_config() -> None:
    site = SiteConfig.from_node_config({"data-path": "/data/site", "site-name": "hospital-a"})
    assert site.data_path == Path("/data/site")
    assert site.site_name == "hospital-a"
    assert site.cache_dir is None
    assert SiteConfig.from_node_config({"partition-id": 2}).site_name == "2"
    assert "data.data-path" not in valid_keys()


def test_lists_of_widths() -> None:
    assert load_config({"model.channels": "32, 64,128"}).model.channels == (32, 64, 128)
    assert load_config({"model.channels": 24}).model.channels == (24,)
    with pytest.raises(ConfigError, match="below its minimum 4"):
        load_config({"model.channels": "16,2"})
    with pytest.raises(ConfigError, match="must be a whole number"):
        load_config({"model.channels": "16,x"})


def test_gan_losses_that_feed_real_voxels_to_the_generator_need_dp_off() -> None:
    settings = {"model.family": "gan", "model.l1-weight": 10.0}
    with pytest.raises(ConfigError, match="must be 0 with DP-SGD"):
        load_config(settings)
    assert load_config({**settings, "privacy.enabled": False}).model.l1_weight == 10.0
    assert load_config({"model.family": "gan"}).privacy.enabled


def _bounded_settings() -> list[tuple[str, float, str]]:
    """(key, a value just outside, 'below'/'above') for every numeric setting with a bound."""
    cases = []
    for section, section_type in SECTIONS.items():
        for spec in dataclasses.fields(section_type):
            key = f"{section}.{spec.name.replace('_', '-')}"
            low, high = spec.metadata.get("minimum"), spec.metadata.get("maximum")
            if isinstance(spec.default, bool) or not isinstance(spec.default, int | float):
                continue
            if low is not None:
                cases.append((key, low - 1, "below"))
            if high is not None:
                cases.append((key, high + 1, "above"))
    return cases


@pytest.mark.parametrize(("key", "value", "side"), _bounded_settings())
def test_every_bounded_setting_is_checked_in_every_section(
    key: str, value: float, side: str
) -> None:
    with pytest.raises(ConfigError, match=f"{re.escape(key)} = .* is {side} its"):
        load_config({key: value})


def test_evaluation_parts_are_checked_and_listed_in_order() -> None:
    config = load_config({"evaluation.parts": "utility, realism"})
    assert config.evaluation.part_names() == ("utility", "realism")
    with pytest.raises(ConfigError, match="names texture: choose among radiomics, realism"):
        load_config({"evaluation.parts": "realism,texture"})
