"""The peak memory of training, from a model fitted to measured peaks.

A training step's peak resident memory is modelled as a sum of terms, each a count of float32
values (4 bytes) times a fitted number of copies:

* ``base``: the process (Python, torch, MONAI, Opacus, the cases), in bytes;
* ``activations-<family>``: cases per step x voxels x the network's width, summed over its
  resolution levels with each level's voxels (``sum(widths[l] / 2**(dims * l))``): the
  feature maps kept for the backward pass;
* ``attention``: the diffusion denoiser's middle attention block holds a tokens x tokens
  matrix per case (tokens = the voxels of its coarsest level), the one term that grows with
  the square of the grid;
* ``parameters``: every trained parameter (weights, gradients, Adam's two moments, the
  sampling average);
* ``per-sample-gradients`` (DP-SGD only): cases per step x the private network's parameters,
  which Opacus keeps per case before clipping;
* ``dp-activations-<family>`` (DP-SGD only): what Opacus' per-sample backward adds on top of
  the activations.

:data:`COEFFICIENTS` are the numbers of copies, fitted by ``python -m bench.memory`` (least
squares on relative error, non-negative) to peaks measured on 2 CPU cores; the fit and its
error per point are in ``bench/results.json`` "memory".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

FLOAT_BYTES = 4
GIB = 2**30

COEFFICIENTS: dict[str, float] = {
    "base": 6.0e8,
    "activations-diffusion": 40.0,
    "activations-gan": 40.0,
    "activations-segmentation": 40.0,
    "attention": 3.0,
    "parameters": 5.0,
    "per-sample-gradients": 2.0,
    "dp-activations-diffusion": 10.0,
    "dp-activations-gan": 10.0,
}
"""Fitted by ``python -m bench.memory`` (bench/results.json "memory", measured 2026-12-03 on
the 2-core CPU machine): bytes for ``base``, copies of float32 values for the others."""

FAMILIES = ("diffusion", "gan", "segmentation")


@dataclass(frozen=True)
class Workload:
    """What one training step holds in memory: the network and its input."""

    family: str
    """diffusion, gan, or segmentation (the utility study's recipe)."""
    cases: int
    """Cases in one step's batch."""
    voxels: int
    """Voxels of one case."""
    widths: tuple[int, ...]
    """Feature widths of the resolution levels (``model.channels``)."""
    spatial_dims: int
    parameters: int
    """Every trained parameter of the model."""
    private_parameters: int = 0
    """Parameters trained with DP-SGD (0 without)."""
    attention_tokens: int = 0
    """Tokens of the attention block per case (0 for none)."""


def features(work: Workload) -> dict[str, float]:
    """The model's terms for ``work``, in bytes of float32 values, named as :data:`COEFFICIENTS`."""
    width = sum(w / 2 ** (work.spatial_dims * level) for level, w in enumerate(work.widths))
    activations = FLOAT_BYTES * work.cases * work.voxels * width
    private = work.private_parameters > 0
    terms = {name: 0.0 for name in COEFFICIENTS}
    terms["base"] = 1.0
    terms[f"activations-{work.family}"] = activations
    terms["attention"] = FLOAT_BYTES * work.cases * float(work.attention_tokens) ** 2
    terms["parameters"] = FLOAT_BYTES * work.parameters
    if private:
        terms["per-sample-gradients"] = FLOAT_BYTES * work.cases * work.private_parameters
        terms[f"dp-activations-{work.family}"] = activations
    return terms


def estimate_bytes(work: Workload, coefficients: Mapping[str, float] | None = None) -> int:
    """The estimated peak resident memory of training ``work``, in bytes."""
    chosen = COEFFICIENTS if coefficients is None else coefficients
    return int(sum(chosen.get(name, 0.0) * value for name, value in features(work).items()))


def gib(value: float) -> str:
    """Bytes as GiB for messages, e.g. '9.1 GiB'."""
    return f"{value / GIB:.{1 if value >= GIB else 2}f} GiB"


def coarsest_tokens(voxels: int, levels: int, spatial_dims: int) -> int:
    """Voxels of the coarsest level of a UNet halving the grid ``levels - 1`` times."""
    return max(1, math.ceil(voxels / 2 ** (spatial_dims * (levels - 1))))
