"""The utility study: metrics against hand-computed values, the fixed segmentation recipe, a
good synthetic set told apart from a useless one, determinism, and every error path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_support import tiny_config

from common.config import Scalar
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.errors import ConfigError, FedsynthError
from evaluator.segmentation import (
    Case,
    SegmentationInputError,
    SegmentationRecipe,
    augment,
    learning_rate_factor,
    predict,
    resolve_device,
    train_segmenter,
)
from evaluator.utility import (
    STUDY_COLUMNS,
    STUDY_DICE,
    ArmResult,
    CaseScore,
    StructureStats,
    UtilityResult,
    schema_num_classes,
    schema_structures,
    score_case,
    score_masks,
    structure_stats,
    study_table,
    utility_study,
)
from simulations.phantoms import write_cohort

SIZE = 16
SPACING = (12.5, 12.5, 12.5)
TINY = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=40, learning_rate=1e-2)
"""40 steps at 16^3 take about a second on one CPU thread."""
MRI_CLASSES = 4


@pytest.fixture(scope="module")
def mri_sites(tmp_path_factory: pytest.TempPathFactory) -> list[list[Case]]:
    """Two phantom MRI sites of six prepared 16^3 cases each, as (image, label) tensors."""
    folder: Path = tmp_path_factory.mktemp("utility")
    settings: dict[str, Scalar] = {
        "data.modality": "mri",
        "phantoms.sites": 2,
        "phantoms.cases-per-site": 6,
    }
    config = tiny_config(**settings)
    cohort = write_cohort(config, folder / "sites")
    sites: list[list[Case]] = []
    for index, site in enumerate(cohort.sites):
        prepare_site(site, folder / f"cache-{index}", config.data)
        dataset = CachedCases(folder / f"cache-{index}")
        sites.append([(image[0], label) for image, label in (dataset[i] for i in range(6))])
    return sites


def noise_cases(count: int, num_classes: int, seed: int) -> list[Case]:
    """A useless synthetic set: uniform noise images with uniformly random labels."""
    generator = torch.Generator().manual_seed(seed)
    shape = (SIZE, SIZE, SIZE)
    return [
        (
            torch.rand(shape, generator=generator) * 2 - 1,
            torch.randint(0, num_classes, shape, generator=generator),
        )
        for _ in range(count)
    ]


def cube(corner: tuple[int, int, int], side: int) -> np.ndarray:
    """A boolean 16^3 mask holding one cube of ``side`` voxels from ``corner`` (z, y, x)."""
    mask = np.zeros((SIZE, SIZE, SIZE), dtype=bool)
    z, y, x = corner
    mask[z : z + side, y : y + side, x : x + side] = True
    return mask


def _case(shape: tuple[int, ...] = (SIZE, SIZE, SIZE), top_label: int = 1) -> Case:
    """A blank case (zero image) whose label map holds ``top_label`` in one voxel."""
    label = np.zeros(shape, dtype=np.int64)
    label.flat[0] = top_label
    return np.zeros(shape, dtype=np.float32), label


# --- metrics against hand-computed values ---------------------------------------------------


def test_identical_masks_have_dice_one_and_hd95_zero() -> None:
    mask = cube((4, 4, 4), 4)
    score = score_masks(mask, mask, (2.0, 1.0, 0.5))
    assert (score.dice, score.hd95) == (1.0, 0.0)


@pytest.mark.parametrize(("axis", "expected_mm"), [(0, 14.0), (1, 7.0), (2, 3.5)])
def test_disjoint_cubes_hd95_is_the_known_distance_in_mm(axis: int, expected_mm: float) -> None:
    # Two 2^3 cubes 7 voxels apart along ``axis``: half of each surface lies 6 voxels from the
    # other cube, half 7, so the 95th percentile is 7 voxels of that axis' spacing (z 2 mm,
    # y 1 mm, x 0.5 mm).
    corner = [2, 2, 2]
    corner[axis] = 9
    score = score_masks(cube((2, 2, 2), 2), cube((corner[0], corner[1], corner[2]), 2), (2, 1, 0.5))
    assert score.dice == 0.0
    assert score.hd95 == pytest.approx(expected_mm)


def test_half_overlapping_cubes_have_dice_one_half() -> None:
    # 4^3 cubes shifted by 2 voxels along x share 2 * 4 * 4 = 32 of 64 voxels: Dice 2*32/128.
    # HD95: of each cube's 56 surface voxels, 24 lie on the other's surface, 16 at 1 voxel and
    # 16 (the far face) at 2 voxels of 0.5 mm; the 95th percentile is 1.0 mm.
    score = score_masks(cube((4, 4, 4), 4), cube((4, 4, 6), 4), (2.0, 1.0, 0.5))
    assert score.dice == pytest.approx(0.5)
    assert score.hd95 == pytest.approx(1.0)


def test_empty_masks_follow_the_documented_convention() -> None:
    empty, full = np.zeros((SIZE,) * 3, dtype=bool), cube((4, 4, 4), 4)
    both_empty = score_masks(empty, empty, SPACING)
    missed, invented = score_masks(empty, full, SPACING), score_masks(full, empty, SPACING)
    assert both_empty.dice == 1.0
    assert math.isnan(both_empty.hd95)
    assert not both_empty.unmatched
    assert (missed.dice, invented.dice) == (0.0, 0.0)
    assert math.isnan(missed.hd95)
    assert math.isnan(invented.hd95)
    assert missed.unmatched
    assert invented.unmatched


def test_structures_are_unions_of_label_values() -> None:
    truth = np.zeros((SIZE,) * 3, dtype=np.int64)
    truth[4:8, 4:8, 4:8] = 2  # oedema, 64 voxels
    truth[5:7, 5:7, 5:7] = 3  # enhancing inside it, 8 voxels
    prediction = truth.copy()
    prediction[prediction == 3] = 1  # enhancing taken for necrosis: the union is unchanged
    scores = score_case(prediction, truth, {"tumour": {1, 2, 3}, "enhancing": {3}}, SPACING)
    assert (scores["tumour"].dice, scores["tumour"].hd95) == (1.0, 0.0)
    assert scores["enhancing"].dice == 0.0
    assert scores["enhancing"].unmatched


def test_masks_on_different_grids_are_refused() -> None:
    with pytest.raises(SegmentationInputError, match="differ"):
        score_masks(np.ones((4, 4, 4), bool), np.ones((4, 4, 8), bool), SPACING)


# --- the recipe ------------------------------------------------------------------------------


def test_schedule_and_device() -> None:
    poly = SegmentationRecipe(iterations=10, schedule="poly", poly_power=0.9)
    cosine = SegmentationRecipe(iterations=10, schedule="cosine")
    assert learning_rate_factor(poly, 0) == 1.0
    assert learning_rate_factor(poly, 5) == pytest.approx(0.5**0.9)
    assert learning_rate_factor(cosine, 5) == pytest.approx(0.5)
    assert learning_rate_factor(cosine, 10) == pytest.approx(0.0)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_augmentation_moves_image_and_label_together() -> None:
    labels = torch.zeros(4, SIZE, SIZE, SIZE, dtype=torch.int64)
    labels[:, 2:6, 3:9, 1:4] = 1  # off-centre, so every flip moves it
    images = labels[:, None].float()
    recipe = SegmentationRecipe(flip_probability=0.5, intensity_scale=0.1, intensity_shift=0.1)
    out_images, out_labels = augment(images, labels, recipe, torch.Generator().manual_seed(3))
    assert torch.equal(
        out_images > out_images.amin(dim=(1, 2, 3, 4), keepdim=True), out_labels[:, None] == 1
    )
    assert not torch.equal(out_labels, labels)  # at least one case was flipped
    low = out_images.amin(dim=(1, 2, 3, 4))  # background 0 -> the shift b, within ±0.1
    high = out_images.amax(dim=(1, 2, 3, 4))  # foreground 1 -> 1 + a + b, a within ±0.1
    assert bool((low.abs() <= 0.1).all())
    assert bool(((high - low - 1).abs() <= 0.1).all())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"norm": "batch"}, "norm"),
        ({"channels": (8,)}, "two or more"),
        ({"norm": "group", "channels": (8, 12), "norm_groups": 8}, "does not divide"),
        ({"flip_axes": (3,)}, "axes are 0"),
        ({"intensity_scale": 1.0}, "below 1"),
        ({"iterations": 0}, "minimum"),
        ({"flip_probability": 1.5}, "maximum"),
    ],
)
def test_recipe_rejects_bad_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SegmentationRecipe(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_network_never_uses_batch_norm(norm: str) -> None:
    recipe = SegmentationRecipe(channels=(8, 16, 32), norm=norm, norm_groups=4, iterations=1)
    model = train_segmenter([_case()], recipe, 0, MRI_CLASSES, "cpu")
    kinds = {type(module).__name__ for module in model.modules()}
    assert ("InstanceNorm3d" if norm == "instance" else "GroupNorm") in kinds
    assert not any("BatchNorm" in kind for kind in kinds)
    assert model(torch.zeros(1, 1, SIZE, SIZE, SIZE)).shape == (1, MRI_CLASSES, SIZE, SIZE, SIZE)


def test_training_needs_two_classes() -> None:
    with pytest.raises(SegmentationInputError, match="background plus one or more"):
        train_segmenter([_case(top_label=0)], TINY, seed=0, num_classes=1, device="cpu")


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ([], "no training cases"),
        ([_case(), _case((SIZE, SIZE, 2 * SIZE))], "resample every case to one grid"),
        ([_case(top_label=MRI_CLASSES)], r"values 0\.\.4 but num_classes = 4"),
        ([(np.zeros((1, SIZE, SIZE, SIZE), np.float32), _case()[1])], "drop a channel axis"),
        ([(_case()[0], np.zeros((SIZE,) * 3, np.float32))], "integer"),
        ([(np.full((SIZE,) * 3, np.nan, np.float32), _case()[1])], "NaN"),
        ([(_case()[0], np.zeros((SIZE, SIZE, 8), np.int64))], "resample the label"),
        ([_case((SIZE, SIZE, 10))], "not a multiple of 4"),
        ([("image", _case()[1])], "numpy array or tensor"),
    ],
)
def test_training_rejects_unusable_cases(cases: list[Case], message: str) -> None:
    with pytest.raises(SegmentationInputError, match=message) as error:
        train_segmenter(cases, TINY, seed=0, num_classes=MRI_CLASSES, device="cpu")
    assert isinstance(error.value, FedsynthError)


def _train_recording_losses(
    cases: list[Case], recipe: SegmentationRecipe, seed: int
) -> tuple[torch.nn.Module, list[float]]:
    losses: list[float] = []
    model = train_segmenter(
        cases, recipe, seed, MRI_CLASSES, "cpu", lambda _, loss: losses.append(loss)
    )
    return model, losses


def test_training_is_deterministic_from_its_seed(mri_sites: list[list[Case]]) -> None:
    recipe = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=6)
    global_state = torch.get_rng_state()
    runs = []
    for seed in (5, 5, 6):
        model, losses = _train_recording_losses(mri_sites[0], recipe, seed)
        runs.append((losses, [predict(model, image) for image, _ in mri_sites[1]]))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert len(runs[0][0]) == 6
    assert all(math.isfinite(loss) for loss in runs[0][0])
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    assert runs[2][0] != runs[0][0]
    prediction = runs[0][1][0]
    assert prediction.shape == (SIZE,) * 3
    assert prediction.dtype == np.int64
    assert 0 <= prediction.min() <= prediction.max() < MRI_CLASSES


def test_prediction_on_another_grid_is_refused(mri_sites: list[list[Case]]) -> None:
    recipe = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=1)
    model = train_segmenter(mri_sites[0][:1], recipe, 0, MRI_CLASSES, "cpu")
    with pytest.raises(SegmentationInputError, match="grid it was trained on"):
        predict(model, np.zeros((SIZE, SIZE, 10), np.float32))


# --- the study ------------------------------------------------------------------------------


def test_good_synthetic_set_beats_noise_for_every_seed(mri_sites: list[list[Case]]) -> None:
    # Phantoms of site 1 against noise with random labels, tested on the cases of site 2.
    # Seen (40 steps, seeds 0-7): phantom-trained tumour Dice 0.59-0.63, noise-trained
    # 0.076-0.082. The test asks for 0.45 against 0.15, and a gap of 0.3 within every seed.
    structures = {"tumour": {1, 2, 3}}
    seeds = (0, 1, 2)
    dice = {}
    for name, synthetic in (("good", mri_sites[0]), ("noise", noise_cases(6, MRI_CLASSES, 7))):
        result = utility_study(
            [], mri_sites[1], synthetic, structures, TINY, seeds, MRI_CLASSES, SPACING, "cpu"
        )
        dice[name] = result.arms["synthetic"].structures["tumour"].dice_per_seed
    assert len(dice["good"]) == len(seeds)
    assert min(dice["good"]) > 0.45
    assert max(dice["noise"]) < 0.15
    assert all(g - n > 0.3 for g, n in zip(dice["good"], dice["noise"], strict=True))


def test_study_reports_every_arm_ratio_table_and_json(mri_sites: list[list[Case]]) -> None:
    real, synthetic = mri_sites[1], mri_sites[0]
    recipe = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=8)
    progress: list[tuple[int, int, str]] = []
    result = utility_study(
        real[:3],
        real[3:],
        synthetic,
        schema_structures("mri"),
        recipe,
        (0, 1),
        schema_num_classes("mri"),
        SPACING,
        "cpu",
        on_progress=lambda done, total, what: progress.append((done, total, what)),
    )
    # 3 arms x 2 seeds x 8 iterations, reported iteration by iteration
    assert [p[:2] for p in progress] == [(i, 48) for i in range(1, 49)]
    assert (progress[0][2], progress[8][2], progress[-1][2]) == (
        "real, seed 0",
        "real, seed 1",
        "real+synthetic, seed 1",
    )
    assert {name: arm.training_cases for name, arm in result.arms.items()} == {
        "real": 3,
        "synthetic": 6,
        "real+synthetic": 9,
    }
    assert result.test_cases == 3
    tumour = {name: arm.structures["tumour"] for name, arm in result.arms.items()}
    assert all(len(stats.dice_per_seed) == 2 for stats in tumour.values())
    assert all(0.0 <= d <= 1.0 for stats in tumour.values() for d in stats.dice_per_seed)
    assert tumour["real"].dice_mean == pytest.approx(np.mean(tumour["real"].dice_per_seed))
    assert tumour["real"].dice_std == pytest.approx(np.std(tumour["real"].dice_per_seed))
    ratio = tumour["synthetic"].dice_mean / tumour["real"].dice_mean
    assert result.dice_ratio("tumour") == pytest.approx(ratio)

    rows = study_table(result, "mri")
    assert [row["structure"] for row in rows] == ["tumour", "tumour_core", "enhancing_tumour"]
    assert list(rows[0]) == list(STUDY_COLUMNS)
    assert rows[0]["study_synthetic_dice"] == 0.834
    assert rows[1]["study_synthetic_dice"] is None
    assert rows[0]["synthetic_dice"] == tumour["synthetic"].dice_mean
    assert rows[0]["synthetic_over_real_dice"] == pytest.approx(ratio)

    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    arm = document["arms"]["synthetic"]
    assert arm["structures"]["tumour"]["dice_per_seed"] == list(tumour["synthetic"].dice_per_seed)
    assert document["recipe"]["iterations"] == 8
    assert document["structures"]["tumour"] == [1, 2, 3]


def test_arms_without_training_cases_are_reported_not_computed(
    mri_sites: list[list[Case]],
) -> None:
    recipe = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=2)
    structures = {"tumour": {1, 2, 3}}
    result = utility_study(
        mri_sites[0], mri_sites[1], [], structures, recipe, (0,), MRI_CLASSES, SPACING, "cpu"
    )
    assert result.arms["real"].computed
    assert not result.arms["synthetic"].computed
    assert result.arms["synthetic"].reason == "no synthetic set"
    assert result.arms["real+synthetic"].reason == "no synthetic set"
    assert result.dice_ratio("tumour") is None
    row = study_table(result, "mri")[0]
    assert row["synthetic_dice"] is None
    assert row["real_dice"] is not None
    assert row["synthetic_over_real_dice"] is None
    document = result.to_json()
    assert document["arms"]["synthetic"] == {
        "computed": False,
        "training_cases": 0,
        "reason": "no synthetic set",
    }
    assert document["synthetic_over_real_dice"] == {"tumour": None}


def test_only_the_arms_asked_for_are_trained(mri_sites: list[list[Case]]) -> None:
    recipe = SegmentationRecipe(channels=(8, 16, 32), num_res_units=1, iterations=2)
    calls: list[str] = []
    result = utility_study(
        mri_sites[0],
        mri_sites[1],
        mri_sites[0],
        {"tumour": {1, 2, 3}},
        recipe,
        (0,),
        MRI_CLASSES,
        SPACING,
        "cpu",
        on_progress=lambda done, total, what: calls.append(what),
        arms=("synthetic",),
    )
    assert result.arms["synthetic"].computed
    for arm in ("real", "real+synthetic"):
        assert result.arms[arm].reason == "not asked for (evaluation.utility-arms)"
    assert set(calls) == {"synthetic, seed 0"}  # nothing else trained
    assert result.dice_ratio("tumour") is None  # no real arm to divide by


def test_utility_arms_setting_is_checked() -> None:
    from common.config import load_config

    assert load_config({"evaluation.utility-arms": "synthetic, real"}).evaluation.arm_names() == (
        "synthetic",
        "real",
    )
    for bad in ("", "real,both"):
        with pytest.raises(ConfigError, match=r"evaluation\.utility-arms"):
            load_config({"evaluation.utility-arms": bad})


def test_hd95_is_the_mean_over_cases_where_both_masks_hold_the_structure() -> None:
    # One seed, four test cases: HD95 2 mm and 4 mm measured, one structure missed, one case
    # where neither mask holds it. Dice (0.8 + 0.6 + 0 + 1) / 4; HD95 (2 + 4) / 2; 1 unmatched.
    scores = [
        {"tumour": CaseScore(0.8, 2.0)},
        {"tumour": CaseScore(0.6, 4.0)},
        {"tumour": CaseScore(0.0, math.nan, unmatched=True)},
        {"tumour": CaseScore(1.0, math.nan)},
    ]
    stats = structure_stats([scores], "tumour")
    assert stats.dice_per_seed == pytest.approx((0.6,))
    assert stats.hd95_per_seed == pytest.approx((3.0,))
    assert stats.unmatched_per_seed == (1,)
    nothing = structure_stats([[{"tumour": CaseScore(0.0, math.nan, unmatched=True)}]], "tumour")
    assert math.isnan(nothing.hd95_per_seed[0])
    assert math.isnan(nothing.hd95_mean)
    assert math.isnan(nothing.hd95_std)


def test_table_and_json_keep_unmeasured_hd95_and_the_study_rows() -> None:
    # Hand-made result: CT bone found on one seed (HD95 2 mm), missed in all 3 cases on the
    # other (no HD95): the mean over seeds that measured one is 2 mm, spread 0.
    bone = StructureStats(
        dice_per_seed=(0.9, 0.0), hd95_per_seed=(2.0, math.nan), unmatched_per_seed=(0, 3)
    )
    tumour = StructureStats(
        dice_per_seed=(0.2, 0.4), hd95_per_seed=(10.0, 20.0), unmatched_per_seed=(0, 0)
    )
    arms = {
        "real": ArmResult("real", 4, {"tumour": tumour, "bone": bone}, (1.0, 1.0)),
        "synthetic": ArmResult("synthetic", 4, {"tumour": tumour, "bone": bone}, (1.0, 1.0)),
        "real+synthetic": ArmResult("real+synthetic", 8, reason="not run"),
    }
    structures: dict[str, tuple[int, ...]] = {"tumour": (1,), "bone": (2,)}
    result = UtilityResult(arms, (0, 1), 3, SPACING, structures, SegmentationRecipe())
    assert bone.dice_mean == pytest.approx(0.45)
    assert bone.dice_std == pytest.approx(0.45)
    assert (bone.hd95_mean, bone.hd95_std) == (2.0, 0.0)
    assert tumour.hd95_mean == pytest.approx(15.0)
    assert tumour.hd95_std == pytest.approx(5.0)
    rows = study_table(result, "ct")
    assert [(r["structure"], r["study_synthetic_dice"]) for r in rows] == [
        ("tumour", STUDY_DICE["ct"]["tumour"]),
        ("bone", STUDY_DICE["ct"]["bone"]),
    ]
    assert rows[1]["real_hd95_mm"] == 2.0
    assert rows[1]["synthetic_over_real_dice"] == pytest.approx(1.0)
    assert rows[0]["real+synthetic_dice"] is None
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    bone_json = document["arms"]["real"]["structures"]["bone"]
    assert bone_json["hd95_mm_per_seed"] == [2.0, "nan"]
    assert (bone_json["hd95_mm_mean"], bone_json["hd95_mm_std"]) == (2.0, 0.0)
    assert bone_json["unmatched_cases_per_seed"] == [0, 3]


def test_real_dice_of_zero_gives_no_ratio() -> None:
    zero = StructureStats((0.0,), (math.nan,), (1,))
    arms = {name: ArmResult(name, 1, {"tumour": zero}, (1.0,)) for name in ("real", "synthetic")}
    arms["real+synthetic"] = ArmResult("real+synthetic", 2, {"tumour": zero}, (1.0,))
    result = UtilityResult(arms, (0,), 1, SPACING, {"tumour": (1,)}, SegmentationRecipe())
    assert result.dice_ratio("tumour") is None


def test_a_real_arm_under_the_minimum_dice_gives_no_ratio() -> None:
    weak = StructureStats((0.007,), (math.nan,), (1,))
    fair = StructureStats((0.3,), (math.nan,), (1,))
    arms = {"real": ArmResult("real", 1, {"tumour": weak, "bone": fair}, (1.0,))}
    arms["synthetic"] = ArmResult("synthetic", 1, {"tumour": fair, "bone": fair}, (1.0,))
    arms["real+synthetic"] = ArmResult("real+synthetic", 2, reason="not run")
    structures: dict[str, tuple[int, ...]] = {"tumour": (1,), "bone": (2,)}
    result = UtilityResult(arms, (0,), 1, SPACING, structures, SegmentationRecipe(), 0.1)
    assert result.dice_ratio("tumour") is None  # 0.3 / 0.007 = 43 would mean nothing
    assert result.dice_ratio("bone") == pytest.approx(1.0)
    lenient = UtilityResult(arms, (0,), 1, SPACING, structures, SegmentationRecipe(), 0.0)
    assert lenient.dice_ratio("tumour") == pytest.approx(0.3 / 0.007)


def test_schema_helpers() -> None:
    assert schema_structures("ct") == {"tumour": frozenset({1}), "bone": frozenset({2})}
    assert schema_structures("mri")["tumour"] == frozenset({1, 2, 3})
    assert (schema_num_classes("ct"), schema_num_classes("mri")) == (3, 4)
    with pytest.raises(ConfigError, match="is not one of"):
        schema_structures("pet")
    with pytest.raises(ConfigError, match="is not one of"):
        schema_num_classes("pet")
    result = UtilityResult({}, (0,), 1, SPACING, {}, SegmentationRecipe())
    with pytest.raises(ConfigError, match="is not one of ct, mri"):
        study_table(result, "pet")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"real_test": []}, SegmentationInputError, "no real test cases"),
        ({"seeds": ()}, ConfigError, "no seeds"),
        ({"seeds": (1, 1)}, ConfigError, "distinct non-negative"),
        ({"seeds": (-1,)}, ConfigError, "distinct non-negative"),
        ({"structures": {}}, ConfigError, "no structures"),
        ({"structures": {"tumour": {0, 1}}}, ConfigError, "0 is background"),
        ({"structures": {"tumour": {4}}}, ConfigError, r"1\.\.3"),
        ({"structures": {"tumour": set()}}, ConfigError, "one or more"),
        ({"spacing": (1.0, 1.0)}, ConfigError, "three positive"),
        ({"spacing": (1.0, 0.0, 1.0)}, ConfigError, "three positive"),
        ({"synthetic": [_case((32, 32, 32))]}, SegmentationInputError, "resample every set"),
        ({"real_train": [_case(top_label=7)]}, SegmentationInputError, "num_classes = 4"),
    ],
)
def test_study_rejects_bad_arguments(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {
        "real_train": [_case()],
        "real_test": [_case()],
        "synthetic": [_case()],
        "structures": {"tumour": {1}},
        "recipe": TINY,
        "seeds": (0,),
        "num_classes": MRI_CLASSES,
        "spacing": SPACING,
        "device": "cpu",
    }
    arguments.update(change)
    with pytest.raises(error, match=message) as raised:
        utility_study(**arguments)  # type: ignore[arg-type]
    assert isinstance(raised.value, FedsynthError)
