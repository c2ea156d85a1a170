"""Named bundles of run settings for simulations on one machine.

A preset is a plain run config, with the settings of each generator family on top for the
family chosen (``--model``, or the preset's own): the user's ``--config`` and ``--run-config``
are applied on top of both.

The quality presets are what ``python -m bench.quality`` measures (bench/results.json,
"quality"); their grid was chosen so that the segmentation recipe trained on real phantoms
learns both structures (CT at 3 mm: bone Dice 0.85, tumour 0.70 on held-out cases; at the
demo's 6.25 mm the tumour reaches only 0.06), and their training length so that it fits 30
minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import Scalar
from common.errors import ConfigError

CT_GRID: dict[str, Scalar] = {
    "data.modality": "ct",
    "data.target-shape": "32,32,32",
    "data.target-spacing": "3.0,3.0,3.0",  # a 96 mm field of view around the neck's centre
    "model.tissue-thresholds": "-0.659",  # air | body at -500 HU in the default CT window
}
MRI_GRID: dict[str, Scalar] = {
    "data.modality": "mri",
    "data.target-shape": "32,32,32",
    "data.target-spacing": "6.0,6.0,6.0",  # a 192 mm field of view: the whole head
    # background | skull, scalp and CSF | brain, on the image smoothed by 0.7 voxels: at 6 mm
    # grey and white matter blur into one brain value, and thresholds across it (the earlier
    # '-0.8,-0.35,0.1,0.6', unsmoothed) split each case into some 700 specks per class, which
    # the model drew as speckle (validation split: 4 and 2 components per class per case here)
    "model.tissue-thresholds": "-0.7,0.35",
    "model.tissue-smoothing": 0.7,
}
CPU_DIFFUSION: dict[str, Scalar] = {
    "model.channels": "16,32,32",
    "training.learning-rate": 1e-3,
    "training.adam-beta1": 0.9,
    "training.warmup-steps": 100,
    "training.lr-schedule": "cosine",
    "training.ema-decay": 0.999,
    "model.sampling-steps": 50,
    # tumour voxels weighted 5x made tumours 4.5x too large, 1x made them 4x too small
    # (validation split, 1000 steps): 2x lies between
    "model.tumour-weight": 2.0,
}
CT_DIFFUSION_RECIPE: dict[str, Scalar] = {
    # the median-and-logits recipe drew some 60-90 one-voxel bone specks and 15 tumour specks
    # a case, which the radiomics classifier told apart; class logits with self-conditioning
    # and no signal left at the last step draw none (quality-ct validation split, 1,600
    # steps, same-site held-out patients: bone Dice 0.84 vs 0.87 real, tumour 0.50 vs 0.56)
    "model.denoiser-output": "class-probabilities",
    "model.self-conditioning": True,
    "model.zero-terminal-snr": True,
    "model.tumour-weight": 1.0,
    # each voxel's intensity drawn from its learned quantiles with the scanner's texture, not
    # the median (validation split: a flat median made every tissue's spread a third of real)
    "model.image-decoder": "quantiles",
}
"""The CT diffusion recipe of quality-ct, the public prior and the presets that start from it
(a prior only fits runs of its own architecture)."""
CPU_DIFFUSION_SCHEDULE: dict[str, Scalar] = {
    k: v for k, v in CPU_DIFFUSION.items() if k.startswith("training.")
}
CPU_GAN: dict[str, Scalar] = {
    "model.channels": "16,32,32",
    "training.learning-rate": 2e-4,
    "training.discriminator-learning-rate": 2e-4,
    "training.ema-decay": 0.999,
}
CPU_GAN_SCHEDULE: dict[str, Scalar] = {
    k: v for k, v in CPU_GAN.items() if k.startswith("training.")
}
ONE_SITE_GAN: dict[str, Scalar] = {
    **CPU_GAN,
    # without DP the image generator may learn from real pairs, as pix2pix's does: L1 to the
    # real image for its label map (tumour voxels weighted, model.tumour-weight) and feature
    # matching (quality-ct validation split, 600 steps: bone Dice 0.79, paired MAE 48 HU;
    # adversarial losses alone, 2,400 steps on bench seed 0: speckle, 0.66 and 530 HU). The
    # label maps still learn only adversarially (README, "Presets and the quality benchmark")
    "model.l1-weight": 100.0,
    "model.feature-matching-weight": 10.0,
    # 0.97 s a step alone on 2 cores with both losses: 1,650 steps fit the 30 minutes
    "federation.num-rounds": 3,
    "training.local-epochs": 55,
    # the label maps' volumes calibrated as the diffusion model's are (one forward a sample:
    # seconds a try); quality-ct validation split, 1,650 steps, same model: unshifted bone
    # at 2.2x and tumour at 3.3x the held-out volume (bone Dice 0.78, tumour 0.05, real 0.87
    # and 0.56), calibrated 1.08x and 1.22x (bone Dice 0.80, tumour 0.02); chosen on CT,
    # kept for quality-mri (uncalibrated, its bench seed 1 drew enhancing tumour at 86x the
    # real volume; README)
    "model.tumour-calibration-cases": 48,
    "model.tumour-calibration-tries": 6,
    "model.label-calibration-tries": 4,
}
ONE_SITE: dict[str, Scalar] = {
    "phantoms.sites": 1,
    "phantoms.cases-per-site": 40,
    "phantoms.size": 64,
    "federation.min-sites": 1,
    "federation.reply-timeout-s": 3600.0,
    "simulation.cpus-per-site": 2.0,  # the one site may use both cores (Ray sets its threads)
    "privacy.enabled": False,
    "training.batch-size": 4,
    "federation.release-cases": 20,
}
PUBLIC_PRIOR_CT: dict[str, Scalar] = {
    # fedsynth prior --preset prior-ct: a phantom population unlike any site's (smaller
    # patients, a 30% stronger contrast protocol, noisier coarser scanners, smaller tumours)
    "seed": 20261201,
    "phantoms.sites": 1,
    "phantoms.cases-per-site": 120,
    "phantoms.size": 48,
    "phantoms.anatomy-scale": 0.9,
    "phantoms.contrast-scale": 1.3,
    "phantoms.noise-min": 0.035,
    "phantoms.noise-max": 0.05,
    "phantoms.tumour-radius-min-mm": 5.0,
    "phantoms.tumour-radius-max-mm": 13.0,
    "privacy.enabled": False,
    "training.batch-size": 4,
}


@dataclass(frozen=True)
class Preset:
    """Run settings, and each family's settings on top of them."""

    settings: dict[str, Scalar]
    families: dict[str, dict[str, Scalar]] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # The README's main job: three small hospitals of head-and-neck CT, CPU-sized volumes,
    # a few rounds with DP-SGD whose noise is set so the whole run spends epsilon 8 per site.
    "demo": Preset(
        {
            **CT_GRID,
            "phantoms.sites": 3,
            "phantoms.cases-per-site": 16,
            "phantoms.size": 64,
            "model.family": "diffusion",
            "training.batch-size": 4,
            "training.local-epochs": 2,
            "federation.num-rounds": 3,
            "federation.min-sites": 3,
            "federation.release-cases": 4,
            "privacy.target-epsilon": 8.0,
        },
        {
            "diffusion": {
                **CPU_DIFFUSION,
                **CT_DIFFUSION_RECIPE,
                "model.prior": "phantom-ct-32",
                "model.sampling-steps": 25,
                "training.learning-rate": 2e-4,
                "training.warmup-steps": 0,
            },
            "gan": CPU_GAN,
        },
    ),
    # The smallest run that still goes through every step, for tests.
    "smoke": Preset(
        {
            "data.modality": "ct",
            "phantoms.sites": 2,
            "phantoms.cases-per-site": 2,
            "phantoms.size": 16,
            "data.target-shape": "16,16,16",
            "data.target-spacing": "12.5,12.5,12.5",
            "model.channels": "8,16",
            "model.norm-groups": 4,
            "model.sampling-steps": 5,
            "training.batch-size": 1,
            "training.max-steps": 2,
            "federation.num-rounds": 2,
            "federation.release-cases": 2,
            "privacy.target-epsilon": 8.0,
        }
    ),
    # One hospital of 40 head-and-neck CT cases, no DP: how well each family learns.
    "quality-ct": Preset(
        {**CT_GRID, **ONE_SITE, "model.family": "diffusion"},
        {
            "diffusion": {
                **CPU_DIFFUSION,
                # 1,200 steps in bfloat16 (1.09 s a step alone on 2 cores, 1.43 s in float32):
                # the 30-minute budget with Ray's share
                "federation.num-rounds": 3,
                "training.local-epochs": 40,
                "training.amp": "bf16",
                **CT_DIFFUSION_RECIPE,
                "model.tumour-calibration-cases": 12,
                "model.tumour-calibration-tries": 5,
            },
            "gan": ONE_SITE_GAN,
        },
    ),
    # The same for brain glioma MRI (BraTS labels), 2 rounds: 800 steps took 22 minutes.
    # Gliomas of BraTS size (enhancing radius 10-20 mm: cores of 5-29 cm^3 around the 16 cm^3
    # of the shared real case pyradiomics-brain1, whole tumours of 20-110 cm^3): the default
    # 6-16 mm ones are some 100 voxels at 6 mm, compartments 1-3 voxels thick, which the model
    # cannot tell from noise while it places them (validation split: denoised from t = 300 a
    # real tumour survives, from t = 600 it becomes ~270 one-voxel specks per case).
    "quality-mri": Preset(
        {
            **MRI_GRID,
            **ONE_SITE,
            "model.family": "diffusion",
            "phantoms.tumour-radius-min-mm": 10.0,
            "phantoms.tumour-radius-max-mm": 20.0,
        },
        {
            "diffusion": {
                **CPU_DIFFUSION,
                "federation.num-rounds": 2,
                "training.local-epochs": 40,
                # no signal left at the last step (validation, 800 steps: tumour Dice 0.015
                # -> 0.030), so nothing of a layout can be read from the starting noise
                "model.zero-terminal-snr": True,
                # class logits with cross-entropy and self-conditioning: one coherent tumour
                # per case instead of specks; tumour voxels weighted 2x (validation split,
                # 800 steps: union tumour Dice 0.524 vs 0.636 real, volume 360 vs 415 voxels;
                # weighted 1x: 45 voxels, Dice 0.012; 3x: 1,455 voxels, Dice 0.141)
                "model.denoiser-output": "class-probabilities",
                "model.self-conditioning": True,
                "model.tumour-weight": 1.0,
                # yet bench seeds drew 4-6x the real tumour volume at 2x; the sampled volume
                # grows steeply with a logit shift (bench seed 1, its own training cases:
                # shift 0 -> 895 voxels, -0.7 -> 250, -1.4 -> 0, against 293), so the shift
                # is calibrated after training to the training cases' mean;
                # on 48 samples: bench seed 1's model, calibrated on 24 to 293 voxels (the
                # sites' mean), drew 164, 240 and 202 in three fresh batches of 24 (5-9 cases
                # of 24 with no tumour): one mean over 24 draws is off by a third
                "model.tumour-calibration-cases": 48,
                "model.tumour-calibration-tries": 5,
                # calibrated on the union alone, bench seed 1 drew enhancing tumour at 1.34x
                # the held-out volume and no necrotic core (7.5 voxels a case in real ones):
                # the tumour core's shift, then the necrotic core's, are searched too
                "model.label-calibration-tries": 3,
            },
            "gan": ONE_SITE_GAN,
        },
    ),
    # Three non-identical hospitals of head-and-neck CT, DP-SGD at epsilon 8 per site, from
    # the public prior (bench.quality also runs it without: model.prior = '').
    "quality-ct-dp": Preset(
        {
            **CT_GRID,
            "phantoms.sites": 3,
            "phantoms.cases-per-site": 80,
            "phantoms.size": 64,
            "model.family": "diffusion",
            "federation.min-sites": 3,
            "federation.num-rounds": 3,
            "federation.reply-timeout-s": 3600.0,
            "federation.release-cases": 20,
            "training.batch-size": 4,
            # 180 steps a site: 240 (4 epochs) trained 32 minutes on 2 cores, over the budget
            "training.local-epochs": 3,
            "privacy.target-epsilon": 8.0,
        },
        {
            "diffusion": {
                **CPU_DIFFUSION,
                **CT_DIFFUSION_RECIPE,
                "model.prior": "phantom-ct-32",
                "training.learning-rate": 2e-4,
                "training.warmup-steps": 0,
            },
            "gan": CPU_GAN,
        },
    ),
    # GPU scale: three hospitals of head-and-neck CT at 128^3 (1.5 mm, a 192 mm field of
    # view), wider networks, bfloat16 autocast on CUDA (bench.scale measures its memory).
    "gpu": Preset(
        {
            "data.modality": "ct",
            "data.target-shape": "128,128,128",
            "data.target-spacing": "1.5,1.5,1.5",
            "model.tissue-thresholds": CT_GRID["model.tissue-thresholds"],
            "phantoms.sites": 3,
            "phantoms.cases-per-site": 100,
            "phantoms.size": 128,
            "model.family": "diffusion",
            "model.channels": "32,64,128,256",
            "training.device": "cuda",
            "training.amp": "auto",
            "training.batch-size": 2,
            "training.local-epochs": 10,
            "federation.num-rounds": 20,
            "federation.min-sites": 3,
            "federation.reply-timeout-s": 7200.0,
            "federation.release-cases": 100,
            "privacy.target-epsilon": 8.0,
            "simulation.gpus-per-site": 1.0,
        },
        {"diffusion": CPU_DIFFUSION_SCHEDULE, "gan": CPU_GAN_SCHEDULE},
    ),
    # The public prior the DP presets start from (fedsynth prior --preset prior-ct).
    "prior-ct": Preset(
        {**CT_GRID, **PUBLIC_PRIOR_CT, "model.family": "diffusion"},
        {
            # 1,800 steps in bfloat16
            "diffusion": {
                **CPU_DIFFUSION,
                **CT_DIFFUSION_RECIPE,
                "training.local-epochs": 60,
                "training.amp": "bf16",
            },
            "gan": {**CPU_GAN, "training.local-epochs": 60},
        },
    ),
}


def preset(name: str, family: str | None = None) -> dict[str, Scalar]:
    """The run settings of preset ``name``, with ``family``'s own settings on top (the
    preset's family when ``family`` is None).

    Raises:
        ConfigError: no preset has that name (the known ones are listed).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(sorted(PRESETS))}")
    chosen = PRESETS[name]
    settings = dict(chosen.settings)
    settings.update(chosen.families.get(family or str(settings.get("model.family", "")), {}))
    if family is not None:
        settings["model.family"] = family
    return settings
