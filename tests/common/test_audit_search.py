"""Top-k search, calibration and the report's figures, on small hand-made case sets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from common.audit.calibration import HOLDOUT, LEAVE_ONE_OUT, calibrate
from common.audit.run import run_audit
from common.audit.search import SPACES, CaseSet, Neighbours, search
from common.audit.shifted import Layout, image_references, label_references, spectra_bytes
from common.audit.summary import closer_to_training, identifiability, ratios
from common.config import AuditConfig

SETTINGS = AuditConfig(shift_voxels=1, slab_voxels=4, top_k=3, chunk_cases=2)


def _cases(seed: int, count: int, size: int = 16) -> CaseSet:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(count, size, size, size)).astype(np.float32)
    labels = (rng.random((count, size, size, size)) < 0.1).astype(np.uint8)
    labels[:, 4:10, 4:10, 4:10] = 2
    return CaseSet.of(np.tanh(images), labels)


def _neighbours(nearest: list[list[float]], index: list[list[int]] | None = None) -> Neighbours:
    distance = np.array(nearest, dtype=float)
    ids = np.array(index) if index is not None else np.zeros(distance.shape, dtype=int)
    return Neighbours({s: ids for s in SPACES}, {s: distance for s in SPACES})


def test_a_copy_is_its_sources_nearest_neighbour_at_distance_zero() -> None:
    train = _cases(0, 6)
    query = CaseSet(train.images[[4, 1]], train.labels[[4, 1]])
    found = search(query, train, (1, 2), SETTINGS)
    for space in SPACES:
        assert found.index[space][:, 0].tolist() == [4, 1]
        assert found.nearest(space) == pytest.approx([0.0, 0.0], abs=1e-5)
        assert found.index[space].shape == (2, 3)
        assert np.all(np.diff(found.distance[space], axis=1) >= 0)  # nearest first
        assert np.all(found.second(space) > 0.1)  # random others are far


def test_chunks_change_nothing_and_leave_one_out_never_returns_the_case_itself() -> None:
    train, query = _cases(1, 5), _cases(2, 5)
    one = search(query, train, (1, 2), replace(SETTINGS, chunk_cases=5))
    many = search(query, train, (1, 2), replace(SETTINGS, chunk_cases=2))
    for space in SPACES:
        np.testing.assert_array_equal(one.index[space], many.index[space])
        np.testing.assert_allclose(one.distance[space], many.distance[space], rtol=1e-6)
    loo = search(train, train, (1, 2), SETTINGS, exclude_self=True)
    for space in SPACES:
        assert not np.any(loo.index[space] == np.arange(5)[:, None])
        assert np.all(loo.nearest(space) > 0.1)


def test_cached_reference_spectra_change_nothing() -> None:
    train, query = _cases(3, 6), _cases(4, 5)
    cached = search(query, train, (1, 2), SETTINGS)  # 6 cases x 55 KiB fit the default
    per_chunk = search(query, train, (1, 2), replace(SETTINGS, spectra_cache_mib=0))
    for space in SPACES:
        np.testing.assert_array_equal(cached.index[space], per_chunk.index[space])
        np.testing.assert_array_equal(cached.distance[space], per_chunk.distance[space])


def test_spectra_bytes_are_what_the_reference_sides_hold() -> None:
    cases = _cases(5, 3)
    layout = Layout.of((16, 16, 16), radius=1, slab=4)
    held = (
        image_references(cases.images, layout).spectra.nbytes
        + label_references(cases.labels, (1, 2), layout).spectra.nbytes
    )
    assert spectra_bytes(layout, 2) == 8 * 16 * 16 * 9 * 3  # complex64, rfft half of x
    assert held == 3 * spectra_bytes(layout, 2)


def test_search_refuses_an_empty_reference_or_another_grid() -> None:
    with pytest.raises(ValueError, match="at least one"):
        search(
            _cases(0, 1), CaseSet(_cases(0, 1).images[:0], _cases(0, 1).labels[:0]), (1,), SETTINGS
        )
    with pytest.raises(ValueError, match="different grids"):
        search(_cases(0, 1, size=16), _cases(0, 2, size=12), (1,), SETTINGS)


def test_run_audit_refuses_no_candidates_an_id_short_or_one_training_case() -> None:
    train, query = _cases(0, 3), _cases(1, 2)
    no_candidates = CaseSet(query.images[:0], query.labels[:0])
    with pytest.raises(ValueError, match="needs synthetic cases, one id each"):
        run_audit(no_candidates, [], train, None, (1, 2), SETTINGS)
    with pytest.raises(ValueError, match="needs synthetic cases, one id each"):
        run_audit(query, ["only-one"], train, None, (1, 2), SETTINGS)
    one = CaseSet(train.images[:1], train.labels[:1])
    with pytest.raises(ValueError, match="needs at least 2 training cases, got 1"):
        run_audit(query, ["a", "b"], one, None, (1, 2), SETTINGS)


def test_thresholds_are_the_factor_times_the_percentile_of_held_out_distances() -> None:
    held = _neighbours([[d, 1.0] for d in (0.2, 0.4, 0.6, 0.8, 1.0)])
    settings = AuditConfig(percentile=25.0, threshold_factor=0.5, min_holdout=5)
    calibration = calibrate(held, None, settings)
    assert calibration.source == HOLDOUT
    assert calibration.thresholds["voxels"] == pytest.approx(0.5 * 0.4)  # numpy's linear rule


def test_too_few_held_out_cases_fall_back_to_leave_one_out_and_say_so() -> None:
    held = _neighbours([[0.9, 1.0]])
    loo = _neighbours([[0.1, 1.0], [0.3, 1.0], [0.5, 1.0]])
    settings = AuditConfig(percentile=0.0, threshold_factor=1.0, min_holdout=2)
    calibration = calibrate(held, loo, settings)
    assert calibration.source == LEAVE_ONE_OUT
    assert calibration.thresholds["labels"] == pytest.approx(0.1)
    assert "fallback: 1 held-out cases" in calibration.note
    with pytest.raises(ValueError, match="cannot calibrate"):
        calibrate(None, _neighbours([[0.1, 1.0]]), settings)


def test_figures_by_hand() -> None:
    synthetic = _neighbours([[0.0, 0.5], [0.2, 0.4], [0.3, np.inf]], [[0, 1], [1, 0], [2, -1]])
    assert ratios(synthetic, "voxels")[:2].tolist() == pytest.approx([0.0, 0.5])
    assert np.isnan(ratios(synthetic, "voxels")[2])
    loo = _neighbours([[0.1, 1.0], [0.1, 1.0], [0.1, 1.0], [0.1, 1.0]])
    # training case 0 is nearest to synthetic 0 (0.0 < 0.1); cases 1, 2 are not; 3 is in no list
    assert identifiability(synthetic, loo, "voxels", 4) == pytest.approx(0.25)
    holdout = _neighbours([[0.1, 1.0], [0.5, 1.0], [0.3, 1.0]])
    assert closer_to_training(synthetic, holdout, "voxels") == pytest.approx(2 / 3)
