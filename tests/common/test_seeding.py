"""One seed drives everything; stages derive independent, stable seeds."""

from __future__ import annotations

import torch

from common.seeding import derive_seed, numpy_rng, torch_generator


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(42, "phantoms", "ct", 0) == derive_seed(42, "phantoms", "ct", 0)
    seeds = {
        derive_seed(42, "phantoms", "ct", 0),
        derive_seed(42, "phantoms", "ct", 1),
        derive_seed(42, "phantoms", "mri", 0),
        derive_seed(43, "phantoms", "ct", 0),
    }
    assert len(seeds) == 4
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_generators_reproduce_from_the_root_seed() -> None:
    assert numpy_rng(1, "a").random() == numpy_rng(1, "a").random()
    first = torch.rand(3, generator=torch_generator(1, "site", 2))
    again = torch.rand(3, generator=torch_generator(1, "site", 2))
    other = torch.rand(3, generator=torch_generator(1, "site", 3))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
