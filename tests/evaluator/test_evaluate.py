"""`fedsynth evaluate` end to end on tiny phantoms: evaluation.json, report.html, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from model_support import TINY, release_of_cache
from typer.testing import CliRunner

from common.config import load_config
from common.data.site import prepare_site
from common.memory.plan import MemoryPlanError
from common.models.checkpoint import save_model
from common.models.registry import build_model
from common.runs import MODEL_FILE
from common.strict_json import json_ready
from evaluator.evaluate import EVALUATION_FILE, REPORT_FILE, ProgressEvent, evaluate
from simulations.cli import app
from simulations.phantoms import write_cohort

SETTINGS = {**TINY, "phantoms.sites": 2, "phantoms.cases-per-site": 3, "model.family": "gan"}
CONFIG = load_config(SETTINGS)
REALISM_ONLY = {"evaluation.parts": "realism"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two phantom sites: site 1 is the real set; the release copies site 1's prepared cases
    (so its diversity must equal the real set's); a tiny untrained run for paired images."""
    root = tmp_path_factory.mktemp("world")
    cohort = write_cohort(CONFIG, root / "sites")
    prepare_site(cohort.sites[0], root / "cache", CONFIG.data)
    release_of_cache(root / "cache", root / "release", CONFIG)
    (root / "run").mkdir()
    save_model(root / "run" / MODEL_FILE, build_model(CONFIG), CONFIG)
    return {"real": cohort.sites[0], "release": root / "release", "run": root / "run"}


def test_without_a_run_the_paired_figures_say_why_and_diversity_matches(
    world: dict[str, Path], tmp_path: Path
) -> None:
    outcome = evaluate(world["release"], world["real"], tmp_path / "eval", overrides=REALISM_ONLY)
    results = json.loads((tmp_path / "eval" / EVALUATION_FILE).read_text())
    assert results == json.loads(json.dumps(json_ready(outcome.results)))
    assert results["real"] == {"cases": 3, "paired_images": False}
    realism = results["realism"]
    assert realism["paired_mae"]["computed"] is False
    assert "no --run given" in realism["paired_mae"]["reason"]
    real_div = realism["diversity"]["real"]["mean_pairwise_msssim"]
    synth_div = realism["diversity"]["synthetic"]["mean_pairwise_msssim"]
    assert synth_div == pytest.approx(real_div, abs=1e-3)  # the release copies the real cases
    real_pairs = realism["diversity"]["real"]["pairwise_msssim"]
    assert len(real_pairs) == 3  # 3 cases: 3 pairs, whose mean is the diversity
    assert np.mean(real_pairs) == pytest.approx(real_div, rel=1e-12)
    assert realism["msssim_settings"]["kernel_size"] == 7
    page = (tmp_path / "eval" / REPORT_FILE).read_text()
    assert "paired MAE in the body (HU): not computed (no --run given" in page
    assert "distribution of within-set MS-SSIM (diversity)" in page
    for text in (page, json.dumps(results)):  # real case ids never reach the outputs
        assert "phantom-ct-s01" not in text


def test_with_the_run_the_paired_figures_are_computed(
    world: dict[str, Path], tmp_path: Path
) -> None:
    outcome = evaluate(
        world["release"], world["real"], tmp_path / "eval", run=world["run"], overrides=REALISM_ONLY
    )
    realism = outcome.results["realism"]
    assert outcome.results["real"]["paired_images"] is True
    assert realism["paired_mae"]["computed"] is True
    assert realism["paired_mae"]["cases"] == ["real-001", "real-002", "real-003"]
    assert realism["paired_mae"]["mean"] > 0  # an untrained model is far from the real images
    assert 0 < realism["paired_msssim"]["mean"] < 1
    assert "distribution of paired MS-SSIM" in (tmp_path / "eval" / REPORT_FILE).read_text()


def test_the_command_reports_and_refuses_bad_inputs_with_messages(
    world: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["evaluate", "--synthetic", str(world["release"]), "--real", str(world["real"])]
    parts = ["--run-config", 'evaluation.parts="realism"']
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "e"), *parts])
    assert result.exit_code == 0, result.output
    assert "evaluated 3 synthetic against 3 real cases" in result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "e"), *parts])
    assert result.exit_code == 2
    assert "already exists" in result.output
    mri = ["--run-config", 'evaluation.parts="realism" data.modality="mri"']
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "m"), *mri])
    assert result.exit_code == 2
    assert "but the release is ct (another label schema)" in " ".join(result.output.split())
    no_release = ["evaluate", "--synthetic", str(tmp_path), "--real", str(world["real"])]
    result = runner.invoke(app, [*no_release, "--out", str(tmp_path / "n")])
    assert result.exit_code == 2
    assert "no manifest.json" in result.output
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "n").exists()


def test_a_utility_study_that_would_not_fit_in_memory_is_refused_before_it_starts(
    world: dict[str, Path], tmp_path: Path
) -> None:
    overrides = {"evaluation.parts": "realism,utility", "training.memory-limit-gib": 0.01}
    with pytest.raises(MemoryPlanError) as refused:
        evaluate(world["release"], world["real"], tmp_path / "eval", overrides=overrides)
    text = str(refused.value)
    assert text.startswith("the utility study's segmentation training needs an estimated")
    assert "(2 cases per step)" in text  # the recipe's batch
    assert "evaluation.parts without utility" in text
    assert "a release sampled on a smaller data.target-shape (half each side) would need" in text
    assert not (tmp_path / "eval").exists()


def test_every_part_runs_and_a_copy_of_the_real_cases_matches_their_radiomics(
    world: dict[str, Path], tmp_path: Path
) -> None:
    quick = {
        "evaluation.utility-iterations": 2,
        "evaluation.utility-seeds": 1,
        "evaluation.radiomics-workers": 1,
    }
    events: list[ProgressEvent] = []
    outcome = evaluate(
        world["release"],
        world["real"],
        tmp_path / "eval",
        overrides=quick,
        on_progress=events.append,
    )
    steps = list(dict.fromkeys(event.step for event in events))
    assert steps == [
        "reading the release",
        "checking and preparing the real cases",
        "realism: MAE and MS-SSIM",
        "radiomics of every structure",
        "segmentation utility",
    ]
    radiomics_done = [(e.done, e.total) for e in events if e.step.startswith("radiomics")]
    assert radiomics_done == [(done, 12) for done in range(1, 13)]  # 2 structures x 6 cases
    utility_events = [e for e in events if e.step == "segmentation utility"]
    assert (utility_events[-1].done, utility_events[-1].total) == (6, 6)  # 3 arms x 2 steps
    assert {e.detail for e in utility_events} == {
        f"{arm}, seed {CONFIG.seed}" for arm in ("real", "synthetic", "real+synthetic")
    }
    structures = outcome.results["radiomics"]["structures"]
    assert list(structures) == ["tumour", "bone"]
    for entry in structures.values():
        assert entry["computed"] is True
        assert entry["failures"] == {"real": [], "synthetic": []}
        assert entry["means_correlation"] > 0.999  # the release copies the real cases
    assert outcome.results["radiomics"]["study_means_correlation"] == 0.5461
    utility = outcome.results["utility"]
    assert utility["computed"] is True
    assert (utility["real_training_cases"], utility["real_test_cases"]) == (1, 2)
    assert [row["structure"] for row in utility["study_table"]] == ["tumour", "bone"]
    assert utility["study_table"][0]["study_synthetic_dice"] == 0.064
    page = (tmp_path / "eval" / REPORT_FILE).read_text()
    assert "<h2>Radiomics</h2>" in page
    assert "Dice per arm and structure" in page
    assert "Read it with care" in page  # the study's correlation, with its caveat
    radiomics_rows = re.findall(r"<tr><td>(tumour|bone)</td>.*?</tr>", page)[:2]
    assert radiomics_rows == ["tumour", "bone"]
    tumour_row, bone_row = re.findall(r"<tr><td>(?:tumour|bone)</td>.*?</tr>", page)[:2]
    assert tumour_row.endswith("<td>0.5461</td></tr>")  # the study reported tumours only
    assert bone_row.endswith("<td>-</td></tr>")
    assert "<th>real+synthetic HD95 (mm)</th>" in page
    assert "trained on synthetic cases only finds tumour" in page
    assert "HD95 (mm) is averaged over the test cases where both" in page
    assert "phantom-ct-s01" not in page + json.dumps(outcome.results)

    def refuse(constant: str) -> None:
        raise AssertionError(f"evaluation.json holds {constant}: not strict JSON")

    json.loads((tmp_path / "eval" / EVALUATION_FILE).read_text(), parse_constant=refuse)
