"""The server's rounds with real ClientApps in this process: aggregation, the update gate in a
run, fault tolerance, checkpoint and resume, and what leaves a site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from federation_support import (
    LocalGrid,
    as_round,
    dies_in,
    never_replies,
    phantom_sites,
    scaled_update,
    smoke_config,
    task_identity,  # noqa: F401  (fixture)
    without_pseudonyms,
)
from flwr.app import ArrayRecord, MetricRecord

from common.config import FedsynthConfig
from common.data.dataset import CachedCases
from common.errors import OutputExistsError
from common.exchange import ARRAYS_KEY, METRICS_KEY, array_spec, model_arrays
from common.models.calibration import GROUP_PASSES
from common.models.checkpoint import load_model
from common.models.registry import build_model
from common.release import read_manifest
from common.runs import MODEL_FILE, read_summary
from server.federation import (
    ROUNDS_FILE,
    SERVER_CHECKPOINT_FILE,
    NoUpdatesError,
    ResumeError,
    federate,
    run_federation,
)

pytestmark = pytest.mark.usefixtures("task_identity")


def _rounds(run: Path) -> list[dict[str, object]]:
    lines = (run / ROUNDS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _global(run: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(run / MODEL_FILE)
    return {f"{k}/{n}": t for k, state in model.network_state().items() for n, t in state.items()}


class InterruptedRunError(Exception):
    """Stands for the server process being killed."""


@pytest.fixture
def sites(tmp_path: Path) -> dict[int, dict[str, object]]:
    return phantom_sites(tmp_path, smoke_config())  # type: ignore[return-value]


def test_rounds_train_aggregate_and_release_synthetic_cases(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config()
    grid = LocalGrid(sites)  # type: ignore[arg-type]
    outcome = federate(grid.as_grid(), config, tmp_path / "run")
    rounds = _rounds(tmp_path / "run")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["accepted"] == 2 and r["aggregated"] and r["rejected"] == {} for r in rounds)
    assert len(grid.asked) == 6  # 2 sites x 2 rounds, then 2 sites x 1 audit
    assert len(grid.audits) == 2
    initial = {k: v.numpy() for k, v in model_arrays(build_model(config)).items()}
    trained = _global(tmp_path / "run")
    assert any(not np.allclose(initial[k], trained[k].numpy()) for k in initial)
    summary = read_summary(tmp_path / "run")
    assert summary.rounds == 2
    assert len(summary.sites) == 2
    for site in summary.sites:  # the target (8) covers both rounds, never more
        assert site.epsilon is not None
        assert 4.0 < site.epsilon <= 8.0 + 1e-6
    assert sorted(p.name for p in outcome.release.iterdir()) == [
        "dataset.json",
        "imagesTr",
        "labelsTr",
        "manifest.json",
    ]
    assert len(list((outcome.release / "imagesTr").iterdir())) == 2


def test_the_global_model_is_the_case_weighted_mean_of_the_sites_updates(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config(**{"federation.num-rounds": 1})
    grid = LocalGrid(sites)  # type: ignore[arg-type]
    run_federation(grid.as_grid(), config, tmp_path / "run")
    updates = [r.content[ARRAYS_KEY] for r in grid.sent]
    examples = [float(r.content[METRICS_KEY]["num-examples"]) for r in grid.sent]  # type: ignore[index, arg-type]
    trained = _global(tmp_path / "run")
    for name, value in trained.items():
        expected = sum(
            w * u[name].numpy()  # type: ignore[index, union-attr]
            for w, u in zip(examples, updates, strict=True)
        ) / sum(examples)
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_every_message_a_site_sends_holds_only_parameters_and_scalars(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config()
    grid = LocalGrid(sites)  # type: ignore[arg-type]
    federate(grid.as_grid(), config, tmp_path / "run")
    expected = array_spec(model_arrays(build_model(config)))
    secrets = [str(value) for node in sites.values() for value in node.values()]
    secrets += [p.name for p in (tmp_path / "sites").rglob("*")]  # file names, case ids
    trained = [reply for reply in grid.sent if reply.metadata.message_type == "train"]
    assert len(trained) == 4
    for reply in trained:
        assert not reply.has_error()
        assert set(reply.content.keys()) == {ARRAYS_KEY, METRICS_KEY}
        arrays, metrics = reply.content[ARRAYS_KEY], reply.content[METRICS_KEY]
        assert isinstance(arrays, ArrayRecord)
        assert isinstance(metrics, MetricRecord)
        assert array_spec(arrays) == expected
        assert all(type(v) in (int, float) for v in metrics.values())
        text = " ".join([*metrics.keys(), *arrays.keys()])
        assert not [s for s in secrets if s in text]
    manifest = without_pseudonyms(json.dumps(read_manifest(tmp_path / "run" / "release")))
    assert not [s for s in secrets if s in manifest]
    assert str(tmp_path) not in manifest


def test_a_failing_site_is_left_out_and_its_reason_names_no_file(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    broken = tmp_path / "broken-site"
    broken.mkdir()
    (broken / "case_0000.nii.gz").write_bytes(b"not an image")
    nodes = {**sites, 103: {"data-path": str(broken), "ledger-dir": str(tmp_path / "l3")}}
    config = smoke_config(**{"federation.num-rounds": 1})
    run_federation(LocalGrid(nodes).as_grid(), config, tmp_path / "run")  # type: ignore[arg-type]
    (report,) = _rounds(tmp_path / "run")
    assert report["accepted"] == 2
    assert report["aggregated"] is True
    reason = report["rejected"]["103"]  # type: ignore[index]
    assert "site data problem" in reason
    assert str(tmp_path) not in reason
    assert "case_0000" not in reason


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (never_replies, None),
        (as_round(7), "not to round 1 (late)"),
        (scaled_update(1e6), "update norm"),
    ],
    ids=["timeout", "late-reply", "poisoned-update"],
)
def test_a_site_that_times_out_answers_late_or_poisons_is_left_out(
    tmp_path: Path, tamper: object, reason: str | None
) -> None:
    config = smoke_config(
        **{"phantoms.sites": 3, "federation.num-rounds": 1, "federation.max-update-norm-ratio": 5}
    )
    nodes = phantom_sites(tmp_path, config)
    grid = LocalGrid(nodes, tamper={103: tamper})  # type: ignore[dict-item]
    run_federation(grid.as_grid(), config, tmp_path / "run")
    (report,) = _rounds(tmp_path / "run")
    assert report["accepted"] == 2
    assert report["aggregated"] is True
    if reason is None:
        assert report["replied"] == 2
        assert report["rejected"] == {}
        assert report["missed"] == {"103": None}  # no update of it ever came: no pseudonym
    else:
        assert reason in report["rejected"]["103"]  # type: ignore[index]
        assert report["missed"] == {}
    good = [r.content[ARRAYS_KEY] for r in grid.sent if r.metadata.src_node_id != 103]
    trained = _global(tmp_path / "run")
    for name, value in trained.items():  # two sites of two cases each: the plain mean
        expected = (good[0][name].numpy() + good[1][name].numpy()) / 2  # type: ignore[index]
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_site_whose_node_dies_is_missed_and_trains_again_under_a_new_node_id(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config(**{"federation.num-rounds": 3})
    grid = LocalGrid(sites, tamper={102: dies_in(2)})  # type: ignore[arg-type]

    def restarted(report: object) -> None:  # its SuperNode comes back, registered anew
        if getattr(report, "round", 0) == 2:
            grid.node_configs[202] = grid.node_configs.pop(102)

    summary = run_federation(grid.as_grid(), config, tmp_path / "run", on_round=restarted)
    rounds = _rounds(tmp_path / "run")
    names = sorted(site.name for site in summary.sites)
    assert len(names) == 2  # the same site under its new node id, not a third one
    assert [(r["asked"], r["replied"], r["accepted"]) for r in rounds] == [
        (2, 2, 2),
        (2, 1, 1),
        (2, 2, 2),
    ]
    assert [r["missed"] for r in rounds[::2]] == [{}, {}]
    ((node, site),) = rounds[1]["missed"].items()  # type: ignore[attr-defined]
    assert node == "102"
    assert site in names
    assert rounds[1]["rejected"] == {}
    assert rounds[1]["aggregated"] is False  # 1 update < federation.min-sites = 2
    for ledger in (tmp_path / "ledger").glob("*/site-ledger.json"):
        run_ids = [run["run_id"] for run in json.loads(ledger.read_text())["runs"]]
        # each round charged once; the dead node's round 2 too: it was charged before training
        assert [run_id.split("/")[1] for run_id in run_ids] == ["round-1", "round-2", "round-3"]
    epsilons = {site.epsilon for site in summary.sites}
    assert len(epsilons) == 1  # same cases, same rounds charged: the same epsilon


def test_a_round_with_too_few_accepted_updates_keeps_the_global_model(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config(**{"federation.num-rounds": 1})
    grid = LocalGrid(sites, tamper={102: never_replies})  # type: ignore[arg-type]
    run_federation(grid.as_grid(), config, tmp_path / "run")
    (report,) = _rounds(tmp_path / "run")
    assert report["aggregated"] is False
    initial = model_arrays(build_model(config))
    trained = _global(tmp_path / "run")
    for name, array in initial.items():
        np.testing.assert_array_equal(trained[name].numpy(), array.numpy())


def test_a_run_where_no_site_update_arrives_releases_nothing(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config(**{"federation.num-rounds": 1})
    grid = LocalGrid(sites, tamper={101: never_replies, 102: never_replies})  # type: ignore[arg-type]
    with pytest.raises(NoUpdatesError, match="nothing is released"):
        federate(grid.as_grid(), config, tmp_path / "run")
    assert not (tmp_path / "run" / "release").exists()


def _interrupt_after(round_number: int) -> object:
    def callback(report: object) -> None:
        if getattr(report, "round", 0) == round_number:
            raise InterruptedRunError

    return callback


def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(tmp_path: Path) -> None:
    config = smoke_config()
    whole = phantom_sites(tmp_path / "a", config)
    run_federation(LocalGrid(whole).as_grid(), config, tmp_path / "a" / "run")  # type: ignore[arg-type]
    parts = phantom_sites(tmp_path / "b", config)
    with pytest.raises(InterruptedRunError):
        run_federation(
            LocalGrid(parts).as_grid(),  # type: ignore[arg-type]
            config,
            tmp_path / "b" / "run",
            on_round=_interrupt_after(1),  # type: ignore[arg-type]
        )
    assert (tmp_path / "b" / "run" / SERVER_CHECKPOINT_FILE).exists()
    assert not (tmp_path / "b" / "run" / MODEL_FILE).exists()
    resumed = smoke_config(**{"federation.resume": True})
    grid = LocalGrid(parts)  # type: ignore[arg-type]
    run_federation(grid.as_grid(), resumed, tmp_path / "b" / "run")
    assert len(grid.asked) == 2  # only round 2 was run again
    a, b = _global(tmp_path / "a" / "run"), _global(tmp_path / "b" / "run")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert [r["round"] for r in _rounds(tmp_path / "b" / "run")] == [1, 2]
    spent_a = {s.name: s.epsilon for s in read_summary(tmp_path / "a" / "run").sites}
    spent_b = {s.name: s.epsilon for s in read_summary(tmp_path / "b" / "run").sites}
    assert sorted(spent_a.values()) == pytest.approx(sorted(spent_b.values()))  # type: ignore[type-var]
    for ledger in (tmp_path / "b" / "ledger").rglob("*.json"):  # round 1 and round 2 charged
        assert len(json.loads(ledger.read_text())["runs"]) == 2


def test_a_run_folder_in_use_needs_resume(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    config = smoke_config(**{"federation.num-rounds": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "other.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="resume"):
        run_federation(LocalGrid(sites).as_grid(), config, tmp_path / "run")  # type: ignore[arg-type]


def test_resume_without_checkpoint_or_with_other_settings_is_refused(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    grid = LocalGrid(sites).as_grid()  # type: ignore[arg-type]
    with pytest.raises(ResumeError, match="no server checkpoint"):
        run_federation(grid, smoke_config(**{"federation.resume": True}), tmp_path / "run")
    config: FedsynthConfig = smoke_config()
    with pytest.raises(InterruptedRunError):
        run_federation(grid, config, tmp_path / "run", on_round=_interrupt_after(1))  # type: ignore[arg-type]
    changed = smoke_config(**{"federation.resume": True, "training.learning-rate": 0.1})
    with pytest.raises(ResumeError, match=r"training\.learning-rate"):
        run_federation(grid, changed, tmp_path / "run")


def test_a_corrupt_server_checkpoint_is_refused_with_its_path(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / SERVER_CHECKPOINT_FILE).write_bytes(b"half a checkpoint")
    config = smoke_config(**{"federation.resume": True})
    with pytest.raises(ResumeError, match="corrupt") as caught:
        run_federation(LocalGrid(sites).as_grid(), config, run)  # type: ignore[arg-type]
    assert str(run / SERVER_CHECKPOINT_FILE) in str(caught.value)


@pytest.mark.parametrize(
    "family",
    [
        {"model.denoiser-output": "class-probabilities"},
        {"model.family": "gan"},
    ],
    ids=["diffusion", "gan"],
)
def test_the_tumour_volume_is_calibrated_to_the_sites_case_weighted_mean(
    tmp_path: Path, sites: dict[int, dict[str, object]], family: dict[str, str]
) -> None:
    """Each site sends its cases' mean tumour voxels and, with presence redraws, the fraction
    of its cases with a tumour (nothing else about its labels); the server calibrates the
    final model's shift to their case-weighted mean, sampling with the sites' case-weighted
    presence, keeps both in model.pt and records the search in run.json; for either family."""
    config = smoke_config(
        **{
            "federation.num-rounds": 1,
            "privacy.enabled": False,
            **family,
            "model.tumour-calibration-cases": 2,
            "model.tumour-calibration-tries": 3,
            "model.tumour-presence-redraws": 1,
        }
    )
    grid = LocalGrid(sites)  # type: ignore[arg-type]
    run_federation(grid.as_grid(), config, tmp_path / "run")
    sent, counted = [], []
    for reply in grid.sent:
        metrics = reply.content[METRICS_KEY]
        assert {k for k in metrics if "tumour" in k} == {"tumour-voxels", "tumour-present"}  # type: ignore[union-attr]
        sent.append(
            (
                float(metrics["tumour-voxels"]),  # type: ignore[index, arg-type]
                float(metrics["tumour-present"]),  # type: ignore[index, arg-type]
                float(metrics["num-examples"]),  # type: ignore[index, arg-type]
            )
        )
    for node_config in sites.values():
        cases = CachedCases(Path(str(node_config["cache-dir"])))
        labels = [cases[i][1] for i in range(len(cases))]
        counted.append(
            (
                sum(float((label == 1).sum()) for label in labels) / len(labels),
                sum(float((label == 1).any()) for label in labels) / len(labels),
            )
        )
    # CT: tumour is label 1
    pairs = sorted((v, p) for v, p, _ in sent)
    assert [x for pair in pairs for x in pair] == pytest.approx(
        [x for pair in sorted(counted) for x in pair]
    )
    total = sum(n for _, _, n in sent)
    calibration = read_summary(tmp_path / "run").calibration
    assert calibration["target_tumour_voxels"] == pytest.approx(
        sum(v * n for v, _, n in sent) / total
    )
    assert calibration["tumour_presence"] == pytest.approx(sum(p * n for _, p, n in sent) / total)
    assert 1 <= len(calibration["tried"]) <= 3
    _, saved = load_model(tmp_path / "run" / MODEL_FILE)
    assert saved.model.tumour_logit_shift == calibration["tumour_logit_shift"]
    assert saved.model.tumour_presence == calibration["tumour_presence"]


def test_each_glioma_label_is_calibrated_to_the_sites_case_weighted_means(
    tmp_path: Path,
) -> None:
    """With label tries, MRI sites send the union's mean and one mean per label (necrotic,
    oedema, enhancing) and nothing else about their labels; the server searches the tumour
    core's shift, then the necrotic core's, then the oedema's, on top of the union's, keeps
    them in model.pt and records the search."""
    config = smoke_config(
        **{
            "data.modality": "mri",
            "federation.num-rounds": 1,
            "privacy.enabled": False,
            "model.denoiser-output": "class-probabilities",
            "model.tumour-calibration-cases": 2,
            "model.tumour-calibration-tries": 2,
            "model.label-calibration-tries": 2,
        }
    )
    grid = LocalGrid(phantom_sites(tmp_path, config))  # type: ignore[arg-type]
    run_federation(grid.as_grid(), config, tmp_path / "run")
    keys = ["label-voxels-1", "label-voxels-2", "label-voxels-3"]
    sent = []
    for reply in grid.sent:
        metrics = reply.content[METRICS_KEY]
        voxel_keys = {k for k in metrics if "voxels" in k}  # type: ignore[union-attr]
        assert voxel_keys == {"tumour-voxels", *keys}
        sent.append(([float(metrics[k]) for k in keys], float(metrics["num-examples"])))  # type: ignore[index, arg-type]
    total = sum(n for _, n in sent)
    expected = [sum(v[i] * n for v, n in sent) / total for i in range(3)]
    found = read_summary(tmp_path / "run").calibration["labels"]
    assert found["target_voxels"] == pytest.approx(expected)
    # the union's choice, then at most 2 tries a group and pass
    assert 1 <= len(found["tried"]) <= 1 + 3 * 2 * GROUP_PASSES
    groups = [group["labels"] for group in found["groups"]]
    assert groups in ([[1, 3], [1], [2]], [[1, 3], [1], [2]] * GROUP_PASSES)
    _, saved = load_model(tmp_path / "run" / MODEL_FILE)
    assert list(saved.model.label_shifts() or (0.0,) * 3) == pytest.approx(
        found["logit_shifts"], abs=1e-5
    )


def test_without_calibration_no_site_sends_its_tumour_volume(
    tmp_path: Path, sites: dict[int, dict[str, object]]
) -> None:
    grid = LocalGrid(sites)  # type: ignore[arg-type]
    run_federation(grid.as_grid(), smoke_config(**{"federation.num-rounds": 1}), tmp_path / "r")
    for reply in grid.sent:
        assert not any("voxels" in key or "tumour" in key for key in reply.content[METRICS_KEY])  # type: ignore[union-attr]
    assert read_summary(tmp_path / "r").calibration == {}
