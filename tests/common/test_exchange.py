"""Tests for common/exchange.py: packing a model's networks as named arrays and loading them back
(with every way a global model can fail to fit), the run settings a train message carries, and
site pseudonyms."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from model_support import tiny_config

from common.config import load_config
from common.errors import ConfigError
from common.exchange import (
    PSEUDONYM_BITS,
    ROUND_KEY,
    RUN_ID_KEY,
    ArraySpec,
    ExchangeError,
    array_spec,
    load_model_arrays,
    model_arrays,
    read_settings,
    settings_record,
    site_pseudonym,
    spec_problems,
)
from common.models.interface import GenerativeModel
from common.models.registry import build_model

State = dict[str, dict[str, torch.Tensor]]
Corruption = Callable[[dict[str, np.ndarray], str], None]


def tiny_model(family: str, seed: int = 0) -> GenerativeModel:
    """A tiny 16^3 model of ``family``; another seed gives other initial weights."""
    return build_model(tiny_config(**{"model.family": family, "seed": seed}))


def snapshot(model: GenerativeModel) -> State:
    """A copy of every network's parameters and buffers."""
    return {
        network: {name: tensor.detach().clone() for name, tensor in state.items()}
        for network, state in model.network_state().items()
    }


def same_state(left: State, right: State) -> bool:
    """Whether two snapshots hold the same names and exactly the same values."""
    return left.keys() == right.keys() and all(
        left[net].keys() == right[net].keys()
        and all(torch.equal(left[net][name], right[net][name]) for name in left[net])
        for net in left
    )


def as_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord's arrays as writable numpy arrays, by name."""
    return {name: np.array(array.numpy(), copy=True) for name, array in arrays.items()}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays by name as an ArrayRecord."""
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})


def drop(arrays: dict[str, np.ndarray], name: str) -> None:
    del arrays[name]


def add_extra(arrays: dict[str, np.ndarray], name: str) -> None:
    arrays[name + "_extra"] = np.zeros(2, dtype=np.float32)


def reshape(arrays: dict[str, np.ndarray], name: str) -> None:
    arrays[name] = np.zeros(arrays[name].size + 1, dtype=np.float32)


def to_float64(arrays: dict[str, np.ndarray], name: str) -> None:
    arrays[name] = arrays[name].astype(np.float64)


def put_nan(arrays: dict[str, np.ndarray], name: str) -> None:
    arrays[name].flat[0] = np.nan


def put_inf(arrays: dict[str, np.ndarray], name: str) -> None:
    arrays[name].flat[-1] = -np.inf


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_array_names_are_network_slash_parameter_and_cover_the_state(family: str) -> None:
    model = tiny_model(family)
    arrays = model_arrays(model)
    state = model.network_state()
    expected = {f"{network}/{name}" for network, params in state.items() for name in params}
    assert set(arrays.keys()) == expected
    assert len(arrays) == sum(len(params) for params in state.values()) > 0
    for network, params in state.items():
        for name, tensor in params.items():
            array = arrays[f"{network}/{name}"]
            assert array.dtype == "float32"
            assert np.array_equal(array.numpy(), tensor.detach().cpu().numpy())


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_arrays_load_into_another_model_of_the_family(family: str) -> None:
    source, target = tiny_model(family, seed=1), tiny_model(family, seed=2)
    assert not same_state(snapshot(source), snapshot(target))  # else the test proves nothing
    load_model_arrays(target, model_arrays(source))
    assert same_state(snapshot(target), snapshot(source))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (drop, "missing array"),
        (add_extra, "unexpected array"),
        (reshape, "expected float32"),
        (to_float64, "is float64"),
        (put_nan, "NaN or infinite"),
        (put_inf, "NaN or infinite"),
    ],
    ids=["missing", "extra", "shape", "dtype", "nan", "inf"],
)
def test_arrays_that_do_not_fit_raise_and_leave_the_model_unchanged(
    corrupt: Corruption, message: str
) -> None:
    model = tiny_model("gan", seed=1)
    before = snapshot(model)
    # The other arrays come from another model, so a partial load would show.
    arrays = as_numpy(model_arrays(tiny_model("gan", seed=2)))
    name = sorted(arrays)[-1]
    corrupt(arrays, name)
    with pytest.raises(ExchangeError, match=message) as caught:
        load_model_arrays(model, record(arrays))
    assert name in str(caught.value)
    assert same_state(snapshot(model), before)


def test_spec_problems_lists_each_kind_of_mismatch() -> None:
    expected: ArraySpec = {
        "g/w": ((3,), "float32"),
        "g/b": ((2,), "float32"),
        "g/m": ((1,), "float32"),
        "g/ok": ((2, 2), "float32"),
    }
    arrays = record(
        {
            "g/w": np.zeros(4, dtype=np.float32),
            "g/b": np.zeros(2, dtype=np.float64),
            "g/x": np.zeros(1, dtype=np.float32),
            "g/ok": np.zeros((2, 2), dtype=np.float32),
        }
    )
    assert spec_problems(arrays, expected) == [
        "missing array g/m",
        "unexpected array g/x",
        "array g/b is float64 (2,), expected float32 (2,)",
        "array g/w is float32 (4,), expected float32 (3,)",
    ]
    fitting = record({"g/w": np.ones(3, dtype=np.float32), "g/b": np.ones(2, dtype=np.float32)})
    assert spec_problems(fitting, array_spec(fitting)) == []


def test_settings_round_trip_with_round_and_run_id() -> None:
    config = tiny_config(
        **{"model.family": "diffusion", "federation.strategy": "fedmedian", "seed": 7}
    )
    assert config != load_config({})  # non-default settings must survive the trip
    settings = settings_record(config, 3, "run-abc")
    assert settings[ROUND_KEY] == 3
    assert settings[RUN_ID_KEY] == "run-abc"
    assert read_settings(settings) == (config, 3, "run-abc")


@pytest.mark.parametrize("missing", [ROUND_KEY, RUN_ID_KEY])
def test_settings_without_round_or_run_id_raise(missing: str) -> None:
    settings = dict(settings_record(tiny_config(), 2, "run-abc"))
    del settings[missing]
    with pytest.raises(ExchangeError, match=missing):
        read_settings(settings)


def test_unknown_setting_raises_config_error_naming_it() -> None:
    settings = dict(settings_record(tiny_config(), 2, "run-abc"))
    settings["federation.no-such-setting"] = 1
    with pytest.raises(ConfigError, match=re.escape("federation.no-such-setting")):
        read_settings(settings)


def test_site_pseudonym_is_a_deterministic_48_bit_hash_of_run_and_fingerprint() -> None:
    assert PSEUDONYM_BITS == 48
    assert site_pseudonym("run-1", "fp-a") == site_pseudonym("run-1", "fp-a")
    assert site_pseudonym("run-1", "fp-a") != site_pseudonym("run-2", "fp-a")
    assert site_pseudonym("run-1", "fp-a") != site_pseudonym("run-1", "fp-b")
    digest = hashlib.sha256(b"run-1:fp-a").digest()
    assert site_pseudonym("run-1", "fp-a") == int.from_bytes(digest[:6], "big")
    pseudonyms = [site_pseudonym(f"run-{i}", "fp") for i in range(200)]
    assert all(0 <= p < 2**48 for p in pseudonyms)
    assert max(pseudonyms) >= 2**46  # the 48 bits are used, not a few low ones
    assert len(set(pseudonyms)) == 200
