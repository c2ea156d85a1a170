"""Images generated for real label maps: one per case, on its grid, in HU, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_support import tiny_config

from common.models.checkpoint import CheckpointError, save_model
from common.models.registry import build_model
from common.runs import MODEL_FILE
from evaluator.cases import EvalCase, EvaluationInputError
from evaluator.paired import generate_for_labels


def _run(folder: Path, family: str) -> Path:
    config = tiny_config(**{"model.family": family, "model.sampling-steps": 2})
    folder.mkdir()
    save_model(folder / MODEL_FILE, build_model(config), config)
    return folder


def _real(n: int = 3) -> list[EvalCase]:
    cases = []
    for index in range(n):
        label = np.zeros((16, 16, 16), dtype=np.uint8)
        label[4 + index : 8 + index, 4:8, 4:8] = 1
        label[12:, :, :] = 2
        image = np.full((16, 16, 16), 40.0, dtype=np.float32)
        cases.append(EvalCase(f"real-{index}", image, label, (12.5, 12.5, 12.5)))
    return cases


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_one_image_per_real_label_map_in_hu_and_reproducible(tmp_path: Path, family: str) -> None:
    run = _run(tmp_path / "run", family)
    real = _real()
    config = tiny_config()
    seen: list[str] = []
    first = generate_for_labels(run, real, config, on_case=seen.append)
    again = generate_for_labels(run, real, config)
    assert [c.case_id for c in first] == seen == ["real-0", "real-1", "real-2"]
    window = (config.data.ct_window_min, config.data.ct_window_max)
    for made, case, repeat in zip(first, real, again, strict=True):
        assert made.image.shape == case.image.shape
        assert made.image.dtype == np.float32
        assert window[0] <= made.image.min() <= made.image.max() <= window[1]
        np.testing.assert_array_equal(made.label, case.label)
        np.testing.assert_array_equal(made.image, repeat.image)


def test_a_run_for_another_grid_or_no_run_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", "gan")
    other = tiny_config(**{"data.target-shape": "16,16,8"})
    with pytest.raises(EvaluationInputError, match="give the run the release was sampled from"):
        generate_for_labels(run, _real(1), other)
    with pytest.raises(CheckpointError, match="no model file here"):
        generate_for_labels(tmp_path / "nothing", _real(1), tiny_config())
