"""Membership inference: the ROC AUC and its bootstrap interval by hand, the attack scores of
both families (a GAN's advantage swaps with its training set; a diffusion score is minus the
loss recomputed by hand), seeding, and the settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_support import stacked, tiny_cohort, tiny_config
from torch.nn.functional import mse_loss

from common.audit.membership import (
    attack_scores,
    bootstrap_interval,
    membership_attack,
    roc_auc,
)
from common.audit.search import CaseSet
from common.config import Scalar, load_config
from common.errors import ConfigError
from common.models.diffusion import DiffusionModel
from common.models.diffusion_process import one_hot_channels, velocity_target
from common.models.gan import GanModel
from common.models.interface import Batch, GenerativeModel
from common.models.registry import build_model

MEMBERS = [0.9, 0.8, 0.4, 0.7]
NON_MEMBERS = [0.3, 0.6, 0.5, 0.2]
"""By hand: 0.9, 0.8 and 0.7 beat all four non-members (12 pairs), 0.4 beats 0.3 and 0.2 (2):
14 of 16 pairs, AUC 0.875."""
SMALL: dict[str, Scalar] = {
    "phantoms.size": 8,
    "data.target-shape": "8,8,8",
    "data.target-spacing": "25,25,25",
    "privacy.enabled": False,
    "training.batch-size": 4,
}
"""8^3 phantoms: a discriminator memorises 4 of them in 40 steps, in seconds."""
GAN: dict[str, Scalar] = {
    **SMALL,
    "model.family": "gan",
    "training.discriminator-learning-rate": 2e-3,
}
DIFFUSION: dict[str, Scalar] = {
    **SMALL,
    "model.family": "diffusion",
    "model.diffusion-steps": 100,
    "model.tissue-thresholds": "-0.659,-0.353",
    "audit.membership-timesteps": "5,40,90",
}


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaseSet, CaseSet]:
    """The tiny phantom cohort's 8 CT cases (8^3) as two sets of 4: A the even cases, B the
    odd ones, so that neither half is the cohort's first or last cases."""
    images, labels = stacked(tiny_cohort(tmp_path_factory.mktemp("cohort"), tiny_config(**GAN)))
    images, labels = images[:, 0], labels.to(torch.uint8)
    return CaseSet(images[0::2], labels[0::2]), CaseSet(images[1::2], labels[1::2])


def _batch(cases: CaseSet) -> Batch:
    return Batch(cases.images[:, None].float(), cases.labels.long())


def _trained(settings: dict[str, Scalar], cases: CaseSet, steps: int) -> GenerativeModel:
    model = build_model(tiny_config(**settings))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model.train_step(_batch(cases), generator)
    return model


def test_the_auc_counts_pairs_as_by_hand() -> None:
    assert roc_auc(MEMBERS, NON_MEMBERS) == 0.875
    assert roc_auc(NON_MEMBERS, MEMBERS) == 0.125
    assert roc_auc([2.0], [1.0, 3.0]) == 0.5


def test_ties_count_one_half() -> None:
    assert roc_auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    # 0.5 beats 0.2, ties 0.5 (1 + 0.5); 0.1 loses both: 1.5 of 4 pairs
    assert roc_auc([0.5, 0.1], [0.5, 0.2]) == 0.375


@pytest.mark.parametrize(
    ("members", "non_members", "message"),
    [
        ([], [0.1], "scores of members; there are none"),
        ([0.1], [], "scores of non-members; there are none"),
        ([0.1, float("nan")], [0.2], "members hold NaN"),
    ],
)
def test_degenerate_inputs_are_value_errors(
    members: list[float], non_members: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(members, non_members)
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(members, non_members, 10, 0.9, np.random.default_rng(0))


def test_bad_bootstrap_arguments_are_value_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="resamples >= 1"):
        bootstrap_interval(MEMBERS, NON_MEMBERS, 0, 0.9, rng)
    with pytest.raises(ValueError, match="0 < level < 1"):
        bootstrap_interval(MEMBERS, NON_MEMBERS, 10, 1.0, rng)


def test_the_bootstrap_interval_holds_the_auc_and_repeats_for_a_seed() -> None:
    def interval(seed: int) -> tuple[float, float]:
        return bootstrap_interval(MEMBERS, NON_MEMBERS, 2000, 0.95, np.random.default_rng(seed))

    low, high = interval(3)
    assert low < 0.875 < high <= 1.0  # 4 v 4: wide
    assert interval(3) == (low, high)
    # one value per side: every resample is the same pair
    assert bootstrap_interval([2.0], [1.0], 50, 0.95, np.random.default_rng(0)) == (1.0, 1.0)


def test_the_bootstrap_equals_pair_counting_on_the_same_draws() -> None:
    """The vectorised rank form against a loop of :func:`roc_auc` over the same resamples
    (members' indices drawn first, then non-members'), percentiles by numpy's default."""
    members, non_members = np.array([*MEMBERS, 0.3]), np.array(NON_MEMBERS)  # a tie with 0.3
    draws = np.random.default_rng(5)
    inside = members[draws.integers(0, 5, (300, 5))]
    outside = non_members[draws.integers(0, 4, (300, 4))]
    aucs = [roc_auc(a, b) for a, b in zip(inside, outside, strict=True)]
    expected = tuple(np.quantile(aucs, [0.05, 0.95]))
    found = bootstrap_interval(members, non_members, 300, 0.9, np.random.default_rng(5))
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)


def test_the_bootstrap_resamples_each_side_separately() -> None:
    """A resample that mixed the sides could leave one empty or move cases between them; by
    hand, 1 member vs n non-members all below it gives AUC 1 in every resample."""
    low, high = bootstrap_interval([5.0], [1.0, 2.0, 3.0], 200, 0.9, np.random.default_rng(1))
    assert (low, high) == (1.0, 1.0)


def test_a_gans_membership_advantage_swaps_with_its_training_set(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    """Trained on A, the discriminator scores A above B; trained on B, B above A: the
    advantage follows membership, not which cases are easier (measured: AUC 1.0 both ways)."""
    settings = load_config(GAN).audit
    for members, others in (halves, halves[::-1]):
        model = _trained(GAN, members, steps=40)
        assert isinstance(model, GanModel)
        inside = attack_scores(model, members, settings, seed=1)
        outside = attack_scores(model, others, settings, seed=1)
        assert roc_auc(inside, outside) >= 0.875, (inside, outside)
        assert inside.mean() > outside.mean()


def test_a_gan_score_is_the_discriminators_mean_patch_prediction(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    model = build_model(tiny_config(**GAN))
    assert isinstance(model, GanModel)
    cases = halves[0]
    scores = attack_scores(model, cases, load_config(GAN).audit, seed=1)
    labels = torch.nn.functional.one_hot(cases.labels.long(), model.num_classes)
    pairs = torch.cat([cases.images[:, None], labels.movedim(-1, 1).float()], dim=1)
    with torch.no_grad():
        by_hand = model.nets["discriminator"](pairs)[-1].flatten(start_dim=1).mean(dim=1)
    np.testing.assert_allclose(scores, by_hand.double().numpy(), rtol=1e-5, atol=1e-6)


def _loss_by_hand(model: DiffusionModel, cases: CaseSet, timesteps: tuple[int, ...]) -> np.ndarray:
    """The velocity MSE of each case at each timestep, noise drawn as documented (one draw
    of one case's shape per timestep, from the generator of ``attack_scores``), averaged."""
    from common.seeding import torch_generator

    generator = torch_generator(1, "membership")
    image, label = cases.images[:, None].float(), cases.labels.long()
    clean = one_hot_channels(model.tissues.tissue_map(image, label), model.tissues.count)
    net = model.nets["generator"]
    losses = []
    for timestep in timesteps:
        noise = torch.randn((1, *clean.shape[1:]), generator=generator).expand_as(clean)
        levels = torch.full((len(cases),), timestep, dtype=torch.long)
        noisy = model.scheduler.add_noise(clean, noise, levels)
        with torch.no_grad():
            output = net.denoise(noisy, levels)  # type: ignore[operator]
        target = velocity_target(model.scheduler, clean, noise, levels)
        error = mse_loss(output, target, reduction="none").mean(dim=1)
        tumour = 1.0 + model.config.tumour_weight * (label == 1).float()
        losses.append((tumour * error).flatten(start_dim=1).mean(dim=1))
    return torch.stack(losses).mean(dim=0).double().numpy()


def test_a_diffusion_score_is_minus_its_denoising_loss_at_the_timesteps(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    model = build_model(tiny_config(**DIFFUSION))
    assert isinstance(model, DiffusionModel)
    assert model.config.min_snr_gamma == 0  # no timestep weights: the plain loss
    settings = load_config(DIFFUSION).audit
    scores = attack_scores(model, halves[0], settings, seed=1)
    by_hand = _loss_by_hand(model, halves[0], (5, 40, 90))
    np.testing.assert_allclose(scores, -by_hand, rtol=1e-5)
    assert (scores < 0).all()


def test_diffusion_scores_repeat_for_a_seed_and_do_not_depend_on_the_batch(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    model = build_model(tiny_config(**DIFFUSION))
    settings = load_config(DIFFUSION).audit
    cases = halves[0]
    scores = attack_scores(model, cases, settings, seed=1)
    np.testing.assert_array_equal(attack_scores(model, cases, settings, seed=1), scores)
    assert not np.allclose(attack_scores(model, cases, settings, seed=2), scores)
    alone = CaseSet(cases.images[2:3], cases.labels[2:3])
    single = attack_scores(model, alone, settings, seed=1)
    np.testing.assert_allclose(single, scores[2:3], rtol=1e-5)


def test_a_timestep_the_diffusion_model_lacks_is_a_config_error(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    model = build_model(tiny_config(**DIFFUSION))
    settings = load_config({**DIFFUSION, "audit.membership-timesteps": "5,100"}).audit
    with pytest.raises(ConfigError, match=r"audit\.membership-timesteps = 5,100: .* = 100"):
        attack_scores(model, halves[0], settings, seed=1)


def test_the_attack_reports_family_counts_interval_and_timesteps(
    halves: tuple[CaseSet, CaseSet],
) -> None:
    config = tiny_config(**DIFFUSION)
    model = build_model(config)
    result = membership_attack(model, halves[0], halves[1], config.audit, seed=1)
    assert (result.family, result.members, result.non_members) == ("diffusion", 4, 4)
    assert result.interval[0] <= result.auc <= result.interval[1]
    assert result.to_json()["timesteps"] == [5, 40, 90]
    assert result.to_json()["attack"] == DiffusionModel.membership_attack
    assert "denoising loss" in result.to_json()["attack"]
    assert (result.level, result.resamples) == (0.95, 1000)
    empty = CaseSet(halves[1].images[:0], halves[1].labels[:0])
    with pytest.raises(ValueError, match="needs training and held-out cases"):
        membership_attack(model, halves[0], empty, config.audit, seed=1)
    gan = membership_attack(build_model(tiny_config(**GAN)), *halves, config.audit, seed=1)
    assert gan.timesteps is None
    assert gan.to_json()["timesteps"] is None


def test_the_membership_settings_are_checked() -> None:
    audit = load_config({}).audit
    assert audit.membership_timesteps == (50, 200, 500)
    assert (audit.membership_bootstrap, audit.membership_bootstrap_level) == (1000, 0.95)
    bad = [
        ({"audit.membership-timesteps": "5,5"}, r"audit\.membership-timesteps = 5,5: list each"),
        ({"audit.membership-timesteps": "-1,5"}, r"audit\.membership-timesteps = -1,5 is below"),
        ({"audit.membership-timesteps": "a"}, r"audit\.membership-timesteps = 'a' must be"),
        ({"audit.membership-bootstrap": 5}, r"audit\.membership-bootstrap = 5 is below"),
        ({"audit.membership-bootstrap-level": 1.0}, r"bootstrap-level = 1\.0 is above"),
        ({"audit.membership-bootstrap-level": 0.4}, r"bootstrap-level = 0\.4 is below"),
    ]
    for settings, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(settings)
