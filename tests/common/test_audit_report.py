"""The audit report's parts on a hand-built audit: histograms with the threshold marked, which
cases are shown, the neighbour galleries, and the settings taken from a release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from audit_support import SMALL_GRID

from common.audit.calibration import LEAVE_ONE_OUT, Calibration
from common.audit.figures import HISTOGRAM_BINS, gallery_rows, histograms, shown_cases
from common.audit.inputs import AuditInputError, audit_config
from common.audit.report import central_page
from common.audit.run import Audit
from common.audit.search import SPACES, CaseSet, Neighbours
from common.config import load_config
from common.release import MANIFEST_FILE, new_manifest

LIMITS = {"voxels": 0.1, "labels": 0.2, "features": 0.0}
# nearest distances per case: voxels, labels (features are never under a threshold of 0)
NEAREST = [(0.05, 0.5), (0.3, 0.3), (0.12, 0.9), (0.01, 0.0)]
FLAGGED = [True, False, False, True]  # voxels 0.05 and 0.01 are under 0.1


def _audit() -> Audit:
    voxels = np.array([[v, 1.0] for v, _ in NEAREST])
    labels = np.array([[lab, 1.0] for _, lab in NEAREST])
    features = np.array([[0.5, np.inf]] * 4)
    index = np.array([[1, 0]] * 4)
    found = Neighbours(
        index={"voxels": index, "labels": index, "features": np.array([[0, -1]] * 4)},
        distance={"voxels": voxels, "labels": labels, "features": features},
    )
    reference = Neighbours(
        index={space: np.array([[1], [0]]) for space in SPACES},
        distance={space: np.array([[0.4], [0.6]]) for space in SPACES},
    )
    cases = [
        {
            "case": f"synth_{i:04d}",
            "flagged": flag,
            "nearest": {"voxels": v, "labels": lab, "features": 0.5},
            "neighbours": {"voxels": [{"id": "train-002", "distance": v}]},
            "reason": "voxels under its threshold" if flag else "farther than every threshold",
        }
        for i, ((v, lab), flag) in enumerate(zip(NEAREST, FLAGGED, strict=True))
    ]
    result = {
        "cases": cases,
        "counts": {"synthetic": 4, "train": 2, "holdout": 0, "flagged": 2},
        "figures": {
            space: {"dcr": {"q50": 0.1}, "identifiability": 0.5, "closer_to_training": None}
            for space in SPACES
        },
    }
    calibration = Calibration(LIMITS, LEAVE_ONE_OUT, 2, "fallback: 0 held-out cases")
    return Audit(result, found, calibration, np.array(FLAGGED), reference)


def test_each_histogram_counts_the_finite_distances_and_marks_the_threshold() -> None:
    figures = histograms(_audit())
    assert [alt for alt, _ in figures] == [
        "voxels distance histogram, threshold 0.1 marked",
        "labels distance histogram, threshold 0.2 marked",
        "features distance histogram, threshold 0 marked",
    ]
    for (_, figure), space in zip(figures, SPACES, strict=True):
        axis = figure.axes[0]
        (line,) = axis.lines
        assert list(line.get_xdata()) == [LIMITS[space]] * 2  # a vertical line at the threshold
        bars = axis.patches[:HISTOGRAM_BINS]
        assert sum(bar.get_height() for bar in bars) == 4  # 4 synthetic cases, all finite
        assert axis.get_legend().get_texts()[1].get_text() == (
            "training -> nearest other training case"
        )


def test_every_flagged_case_is_shown_then_the_closest_unflagged_ones() -> None:
    audit = _audit()
    # distance over threshold: case 3 0.1, case 0 0.5, case 2 1.2, case 1 1.5 (features: 0)
    assert shown_cases(audit, 1) == [3, 0, 2]
    assert shown_cases(audit, 0) == [3, 0]
    assert shown_cases(audit, 9) == [3, 0, 2, 1]


def test_a_gallery_shows_the_case_above_each_distinct_nearest_training_case() -> None:
    rng = np.random.default_rng(0)
    synthetic = CaseSet.of(rng.random((4, 8, 8, 8)), np.zeros((4, 8, 8, 8)))
    train = CaseSet.of(rng.random((2, 8, 8, 8)), np.ones((2, 8, 8, 8)))
    rows = gallery_rows(_audit(), 0, synthetic, train, (1.0, 1.0, 2.0))
    assert [row.title for row in rows] == [
        "synth_0000 (flagged)",
        "train-002, nearest in\nvoxels 0.05, labels 0.5",
        "train-001, nearest in\nfeatures 0.5",
    ]
    assert np.array_equal(rows[1].image, train.images[1].numpy())
    assert np.array_equal(rows[2].image, train.images[0].numpy())
    assert {row.centre for row in rows} == {(4, 4, 4)}  # the grid's middle, for every row


def test_the_central_page_embeds_the_histograms_alone() -> None:
    page = central_page(_audit())
    assert page.count("<img") == 3
    assert "<td>synth_0003</td><td>0.01</td><td>0</td><td>0.5</td><td>train-002</td>" in page
    assert "synth_0002" not in page  # not flagged
    assert "method: train-leave-one-out (2 cases)" in page


@pytest.fixture
def release(tmp_path: Path) -> Path:
    config = load_config(SMALL_GRID)
    manifest = new_manifest(
        config, family="gan", model_hash="ab" * 32, rounds=1, sites=[], cases=1, seed=5
    )
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest.to_json()), encoding="utf-8")
    return tmp_path


def test_audit_and_file_reading_settings_change_and_equal_values_pass(release: Path) -> None:
    overrides = {
        "audit.percentile": 5.0,
        "data.skip-bad-cases": True,
        "data.layout": "nnunet",
        "data.target-shape": "16,16,16",  # what the release says
        "simulation.sites-dir": "/data/sites",  # a place on a machine: never in a release
    }
    config = audit_config(release, overrides)
    assert config.audit.percentile == 5.0
    assert (config.data.skip_bad_cases, config.data.layout) == (True, "nnunet")
    assert config.data.target_shape == (16, 16, 16)
    assert config.data.target_spacing == (12.0, 12.0, 12.0)  # from the manifest
    assert config.simulation.sites_dir == "/data/sites"


def test_settings_that_contradict_the_release_are_refused_by_name(release: Path) -> None:
    overrides = {"training.batch-size": 8, "data.target-spacing": "8.0,8.0,8.0"}
    with pytest.raises(AuditInputError) as caught:
        audit_config(release, overrides)
    message = str(caught.value)
    assert message.startswith(f"{release / MANIFEST_FILE}: data.target-spacing = '8.0,8.0,8.0'")
    assert "but the release was made with '12.0,12.0,12.0'" in message
    assert "training.batch-size = 8 but the release was made with 4" in message


def test_a_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match=r"no manifest\.json"):
        audit_config(tmp_path, {})
