"""The peak memory of training, from a model fitted to measured peaks.

A training step's peak resident memory is modelled as a sum of terms, each a count of float32
values (4 bytes) times a fitted number of copies:

* ``base``: the process (Python, torch, MONAI, Opacus, Flower, the cases), in bytes; the
  evaluator's (``base-segmentation``) imports other libraries;
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
    "activations-diffusion": 46.7,
    "activations-gan": 19.2,
    "activations-segmentation": 5.18,
    "attention": 3.15,
    "base": 7.30e8,
    "base-segmentation": 5.85e8,
    "dp-activations-diffusion": 8.15,
    "dp-activations-gan": 0.0,
    "parameters": 5.14,
    "per-sample-gradients": 1.0,
}
"""Fitted by ``python -m bench.memory`` (bench/results.json "memory" "fit", measured 2026-12-03
on a 2-core CPU machine: 29 points at 16^3-80^3 and the gpu preset's two 128^3 steps of
``bench.scale``; largest error 12%, mean 4.3%): bytes for the bases, copies of float32 values
for the others (``per-sample-gradients`` at its floor of one copy)."""

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
    terms["base-segmentation" if work.family == "segmentation" else "base"] = 1.0
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
