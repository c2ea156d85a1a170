"""Images generated for the real set's label maps, for the paired figures (MAE, paired MS-SSIM).

Only whoever holds the global model can do this (the federation's operator): ``fedsynth evaluate
--run RUN`` loads ``RUN/model.pt`` and asks the model for an image per real label map
(``GenerativeModel.sample_images``). The generated images come back in release units (HU for
CT), on the real cases' grid, so they compare directly with the real images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from common.config import FedsynthConfig
from common.models.checkpoint import load_model
from common.release import release_intensity
from common.runs import MODEL_FILE
from common.seeding import torch_generator
from evaluator.cases import EvalCase, EvaluationInputError

PAIRED_STAGE = "evaluation-paired"
"""Seed stage of the generator that draws the paired images."""


def generate_for_labels(
    run: Path,
    real: Sequence[EvalCase],
    release_config: FedsynthConfig,
    *,
    batch_size: int = 2,
    on_case: Callable[[str], None] | None = None,
) -> list[EvalCase]:
    """One generated image per real case, conditioned on its label map.

    Raises:
        EvaluationInputError: the run's model was trained for another grid or modality than
            the release being evaluated.
        CheckpointError: the run has no readable model.
    """
    model, config = load_model(run / MODEL_FILE)
    if (config.data.modality, config.data.target_shape) != (
        release_config.data.modality,
        release_config.data.target_shape,
    ):
        raise EvaluationInputError(
            f"{run / MODEL_FILE}: a {config.data.modality} model on a "
            f"{config.data.target_shape} grid, but the release is "
            f"{release_config.data.modality} on {release_config.data.target_shape}: give the "
            "run the release was sampled from"
        )
    model.train_mode(False)
    intensity = release_intensity(config)
    generator = torch_generator(config.seed, PAIRED_STAGE)
    generated = []
    for start in range(0, len(real), batch_size):
        chunk = real[start : start + batch_size]
        labels = torch.from_numpy(np.stack([case.label for case in chunk]).astype(np.int64))
        with torch.no_grad():
            images = model.sample_images(labels.to(model.device), generator)
        for case, image in zip(chunk, images[:, 0].cpu().numpy(), strict=True):
            world = intensity.inverse(np.clip(image, -1.0, 1.0)).astype(np.float32)
            generated.append(EvalCase(case.case_id, world, case.label, case.spacing))
            if on_case is not None:
                on_case(case.case_id)
    return generated
