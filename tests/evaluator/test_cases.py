"""The evaluator's inputs: a release read back on its grid, a real set prepared to match it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from common.data.cache import read_cache
from common.data.site import prepare_site
from common.models.interface import SyntheticPairs
from common.release import MANIFEST_FILE, new_manifest, write_release
from evaluator.cases import (
    EvaluationInputError,
    check_same_modality,
    load_real,
    load_release,
    release_settings,
)
from simulations.phantoms import write_cohort

SETTINGS = {
    "phantoms.sites": 1,
    "phantoms.cases-per-site": 2,
    "phantoms.size": 16,
    "data.target-shape": "16,16,16",
    "data.target-spacing": "12.5,12.5,12.5",
}
CONFIG = load_config(SETTINGS)


def _release(folder: Path, n: int = 2) -> Path:
    image = torch.zeros(n, 1, 16, 16, 16)
    image[:, :, :8] = -1.0  # air at the window's floor
    image[:, :, 8:] = 0.5
    label = torch.zeros(n, 16, 16, 16, dtype=torch.long)
    label[:, 10:12, 4:6, 4:6] = 1
    label[:, 12:, :, :] = 2
    manifest = new_manifest(
        CONFIG, family="diffusion", model_hash="cd" * 32, rounds=1, sites=[], cases=n, seed=1
    )
    write_release(SyntheticPairs(image, label), folder, CONFIG, manifest)
    return folder


def test_a_release_reads_back_on_its_grid_in_hounsfield_units(tmp_path: Path) -> None:
    release = _release(tmp_path / "release")
    config = release_settings(release)
    assert config.data.target_shape == (16, 16, 16)
    cases = load_release(release, config)
    assert [c.case_id for c in cases] == ["synth_0000", "synth_0001"]
    window = (config.data.ct_window_min, config.data.ct_window_max)
    mid = window[0] + 0.75 * (window[1] - window[0])  # 0.5 in [-1, 1]
    for case in cases:
        assert case.image.shape == (16, 16, 16)
        assert case.image[:8].max() == pytest.approx(window[0])
        assert case.image[8:].min() == pytest.approx(mid, abs=0.5)  # int16 HU rounding
        assert int((case.label == 1).sum()) == 8
        assert int((case.label == 2).sum()) == 4 * 256
        assert case.spacing == (12.5, 12.5, 12.5)


def test_a_release_needs_its_manifest_and_untouched_cases(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError, match=r"no manifest\.json"):
        release_settings(tmp_path)
    release = _release(tmp_path / "release")
    (release / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(EvaluationInputError, match="unreadable manifest"):
        release_settings(release)
    release = _release(tmp_path / "second")
    (release / "labelsTr" / "synth_0001.nii.gz").unlink()
    with pytest.raises(EvaluationInputError, match=r"synth_0001\.nii\.gz: missing"):
        load_release(release, CONFIG)
    other = load_config({**SETTINGS, "data.target-shape": "16,16,8"})
    with pytest.raises(EvaluationInputError, match="the release was altered"):
        load_release(_release(tmp_path / "third"), other)


def test_a_real_set_is_prepared_with_the_release_settings_and_mapped_to_hu(
    tmp_path: Path,
) -> None:
    site = write_cohort(CONFIG, tmp_path / "sites").sites[0]
    cases = load_real(site, CONFIG)
    prepare_site(site, tmp_path / "cache", CONFIG.data)
    _, prepared = read_cache(tmp_path / "cache")
    assert [c.case_id for c in cases] == [p.case_id for p in prepared]
    for case, reference in zip(cases, prepared, strict=True):
        np.testing.assert_allclose(
            case.image, reference.intensity.inverse(reference.image), atol=1e-3
        )
        np.testing.assert_array_equal(case.label, reference.label)
        assert set(np.unique(case.label)) >= {1, 2}


def test_a_real_set_of_another_modality_or_no_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError, match="the release is ct"):
        check_same_modality(CONFIG, "mri", tmp_path)
    check_same_modality(CONFIG, "ct", tmp_path)  # the same modality passes
    with pytest.raises(EvaluationInputError, match="no such folder"):
        load_real(tmp_path / "absent", CONFIG)
