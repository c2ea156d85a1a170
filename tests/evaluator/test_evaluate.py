"""`fedsynth evaluate` end to end on tiny phantoms: evaluation.json, report.html, errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from model_support import TINY, release_of_cache
from typer.testing import CliRunner

import evaluator.evaluate as evaluate_module
from common.config import load_config
from common.data.site import prepare_site
from common.errors import OutputExistsError
from common.memory.estimate import gib
from common.memory.plan import MemoryPlanError
from common.models.checkpoint import save_model
from common.models.registry import build_model
from common.run_state import FINISHED, RUN_STATE_FILE, RUNNING, read_state
from common.runs import MODEL_FILE
from common.strict_json import json_ready
from evaluator.cases import EvaluationInputError
from evaluator.evaluate import EVALUATION_FILE, REPORT_FILE, ProgressEvent, evaluate
from evaluator.utility_section import plan_utility
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
    for step in ("reading the release", "realism: MAE and MS-SSIM"):  # lines off a terminal
        assert f"{step}: started" in result.output.splitlines()
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


KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from evaluator.evaluate import evaluate

    release, real, out, overrides, killed_at = sys.argv[1:]

    def progress(event):
        if event.step == killed_at:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does

    evaluate(Path(release), Path(real), Path(out), overrides=json.loads(overrides),
             on_progress=progress)
    """
)
QUICK_UTILITY = {
    "evaluation.parts": "realism,utility",
    "evaluation.utility-iterations": 2,
    "evaluation.utility-seeds": 1,
    "evaluation.utility-arms": "real",
}


def test_an_evaluation_killed_outright_is_reported_by_the_next_one(
    world: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = [str(world["release"]), str(world["real"]), str(out), json.dumps(QUICK_UTILITY)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *args, "segmentation utility"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in out.iterdir()) == [RUN_STATE_FILE]
    state = read_state(out)
    assert state is not None
    assert (state.status, state.stage, state.step, state.steps) == (
        RUNNING,
        "segmentation utility",
        2,  # the real cases and realism done
        3,
    )
    config = load_config({**SETTINGS, **QUICK_UTILITY})
    assert state.estimated_peak == plan_utility(config, config.data.target_shape).needed
    assert state.settings["evaluation.parts"] == "realism,utility"

    settings = " ".join(f"{key}={json.dumps(value)}" for key, value in QUICK_UTILITY.items())
    base = ["evaluate", "--synthetic", str(world["release"]), "--real", str(world["real"])]
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--run-config", settings])
    assert result.exit_code == 0, result.output  # a folder holding a dead run's record only
    text = " ".join(result.output.split())
    assert f"warning: the previous run in {out} died (killed?) after" in text
    assert "during segmentation utility (step 3 of 3); its estimated peak memory was " in text
    assert f"was {gib(state.estimated_peak)}; if the machine ran out of memory" in text
    finished = read_state(out)
    assert finished is not None
    assert (finished.status, finished.step) == (FINISHED, 3)
    assert sorted(p.name for p in out.iterdir()) == [EVALUATION_FILE, REPORT_FILE, RUN_STATE_FILE]


def test_an_existing_output_is_refused_before_any_work(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object) -> None:
        raise AssertionError("the release was read")

    monkeypatch.setattr(evaluate_module, "load_release", never)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        evaluate(world["release"], world["real"], tmp_path / "eval")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputExistsError):
        evaluate(world["release"], world["real"], tmp_path / "file", overwrite=True)


def test_an_evaluation_that_fails_leaves_no_record_and_the_old_output_as_it_was(
    world: dict[str, Path], tmp_path: Path
) -> None:
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    with pytest.raises(EvaluationInputError, match="no such folder"):
        evaluate(world["release"], tmp_path / "nowhere", fresh, overrides=REALISM_ONLY)
    assert not fresh.exists()
    evaluate(world["release"], world["real"], kept, overrides=REALISM_ONLY)
    before = {p.name: p.read_bytes() for p in kept.iterdir() if p.name != RUN_STATE_FILE}
    with pytest.raises(EvaluationInputError, match="no such folder"):
        evaluate(
            world["release"], tmp_path / "nowhere", kept, overrides=REALISM_ONLY, overwrite=True
        )
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before


def test_a_run_whose_model_file_holds_invalid_settings_is_refused(
    world: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    payload = torch.load(world["run"] / MODEL_FILE, weights_only=True)
    payload["run_config"] = {**payload["run_config"], "model.norm-groups": 0}
    torch.save(payload, run / MODEL_FILE)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--synthetic", str(world["release"]), "--real", str(world["real"]),
         "--out", str(out), "--run", str(run), "--run-config", 'evaluation.parts="realism"'],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{run / MODEL_FILE}:" in result.output.replace("\n", "")
    text = " ".join(result.output.split())
    assert "the model file's settings are invalid (model.norm-groups = 0 is below its" in text
    assert "Traceback" not in result.output
    assert not out.exists()


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
