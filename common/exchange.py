"""What crosses between a site and the server in a federated round, and how it is packed.

Server -> site (a train message): ``arrays`` (the global model's networks, one array per
parameter or buffer, named ``<network>/<name>``) and ``config`` (the run settings as a flat run
config, plus the round number and the federation's run id).

Site -> server (the reply): ``arrays`` of the same names, shapes and dtypes, and ``metrics``:
scalars only (examples, steps, losses, epsilon). Nothing else: no voxels, paths or identifiers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord

from common.config import FedsynthConfig, Scalar, load_config, to_run_config
from common.errors import FedsynthError
from common.models.interface import GenerativeModel

ARRAYS_KEY = "arrays"
"""Key of the ArrayRecord in train messages and replies (Flower strategies' default)."""
CONFIG_KEY = "config"
"""Key of the ConfigRecord in train messages (Flower strategies' default)."""
METRICS_KEY = "metrics"
"""Key of the MetricRecord in replies."""
ROUND_KEY = "server-round"
"""The round number Flower's strategies put in every train message's config."""
RUN_ID_KEY = "federation-run-id"
"""The federation run's id in a train message's config (names the privacy-ledger charges)."""
EXAMPLES_KEY = "num-examples"
"""Cases a site trained on: Flower's FedAvg weights each site's update by it."""
SITE_WEIGHT_KEY = "site-weight"
"""A metric every site sends as 1: the weight of equal-weight aggregation (central DP)."""
TUMOUR_VOXELS_KEY = "tumour-voxels"
"""With model.tumour-calibration-cases: the mean tumour voxels of a site's training cases (the
server's aggregate of it is the calibration's target; ``common.models.calibration``)."""
TUMOUR_PRESENT_KEY = "tumour-present"
"""With model.tumour-calibration-cases and model.tumour-presence-redraws: the fraction of a
site's training cases that have a tumour (the server's aggregate is ``model.tumour-presence``;
``common.models.presence``)."""


def label_voxels_key(value: int) -> str:
    """With model.label-calibration-tries: the metric of the mean voxels of label ``value`` in
    a site's training cases."""
    return f"label-voxels-{value}"


SITE_KEY = "site-key"
"""A site's pseudonym in a run: see :func:`site_pseudonym`."""
PSEUDONYM_BITS = 48
"""Bits of a site pseudonym (a MetricRecord integer holds 64)."""
SEPARATOR = "/"
"""Between a network's name and its parameter's name in array names."""
MESSAGE_KEYS = (ROUND_KEY, RUN_ID_KEY)


class ExchangeError(FedsynthError, ValueError):
    """Arrays or settings in a message do not fit the model; the message says which."""


ArraySpec = dict[str, tuple[tuple[int, ...], str]]
"""Array name -> (shape, dtype) of what a model federates."""


def model_arrays(model: GenerativeModel) -> ArrayRecord:
    """Every network's parameters and buffers as one ArrayRecord (``<network>/<name>``)."""
    flat: dict[str, torch.Tensor] = {}
    for network, state in model.network_state().items():
        for name, tensor in state.items():
            flat[f"{network}{SEPARATOR}{name}"] = tensor.detach().cpu()
    return ArrayRecord(flat)


def array_spec(arrays: ArrayRecord) -> ArraySpec:
    """Name -> (shape, dtype) of every array in ``arrays``."""
    return {name: (tuple(array.shape), str(array.dtype)) for name, array in arrays.items()}


def spec_problems(arrays: ArrayRecord, expected: ArraySpec) -> list[str]:
    """Why ``arrays`` does not match ``expected`` (missing, extra, shape, dtype); [] if it does."""
    actual = array_spec(arrays)
    problems = [f"missing array {name}" for name in sorted(set(expected) - set(actual))]
    problems += [f"unexpected array {name}" for name in sorted(set(actual) - set(expected))]
    for name in sorted(set(actual) & set(expected)):
        if actual[name] != expected[name]:
            problems.append(
                f"array {name} is {actual[name][1]} {actual[name][0]}, expected "
                f"{expected[name][1]} {expected[name][0]}"
            )
    return problems


def load_model_arrays(model: GenerativeModel, arrays: ArrayRecord) -> None:
    """Load ``arrays`` (as made by :func:`model_arrays`) into ``model``'s networks.

    Raises:
        ExchangeError: names, shapes or dtypes differ from the model's, or a value is not
            finite.
    """
    problems = spec_problems(arrays, array_spec(model_arrays(model)))
    if problems:
        raise ExchangeError(
            "the global arrays do not fit this site's model (are the server and the site on "
            f"the same fedsynth version and settings?): {'; '.join(problems[:5])}"
        )
    state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in model.network_state()}
    for name, array in arrays.items():
        values = array.numpy()
        if not np.isfinite(values).all():
            raise ExchangeError(f"the global array {name} holds NaN or infinite values")
        network, _, key = name.partition(SEPARATOR)
        state[network][key] = torch.from_numpy(np.array(values, copy=True))
    model.load_network_state(state)


def settings_record(config: FedsynthConfig, server_round: int, run_id: str) -> ConfigRecord:
    """The run settings a train message carries, with the round and the run id."""
    record: dict[str, Scalar] = dict(to_run_config(config))
    record[ROUND_KEY] = server_round
    record[RUN_ID_KEY] = run_id
    return ConfigRecord(record)  # type: ignore[arg-type]


def read_settings(record: Mapping[str, object]) -> tuple[FedsynthConfig, int, str]:
    """The run settings, round and run id of a train message's config.

    Raises:
        ExchangeError: the round or run id is missing.
        ConfigError: a setting is unknown or invalid (the message names it).
    """
    if ROUND_KEY not in record or RUN_ID_KEY not in record:
        raise ExchangeError(
            f"a train message's config needs {ROUND_KEY!r} and {RUN_ID_KEY!r}; got "
            f"{', '.join(sorted(map(str, record))) or 'nothing'}"
        )
    settings = {k: v for k, v in record.items() if k not in MESSAGE_KEYS}
    config = load_config(settings)  # type: ignore[arg-type]
    return config, int(record[ROUND_KEY]), str(record[RUN_ID_KEY])  # type: ignore[call-overload]


def site_pseudonym(run_id: str, fingerprint: str) -> int:
    """A site's name in one federation run: a hash of the run id and its data fingerprint.

    Stable across the run's rounds and a resume; unlinkable to the site's data or to other runs
    by anyone without the data itself.
    """
    digest = hashlib.sha256(f"{run_id}:{fingerprint}".encode()).digest()
    return int.from_bytes(digest[: PSEUDONYM_BITS // 8], "big")
