"""The one typed configuration of fedsynth, built from Flower's flat run config.

Every run setting is a field of a frozen dataclass below. Its run-config key is
``<section>.<field-name-in-kebab-case>`` (``seed`` stands alone), exactly as Flower flattens the
``[tool.flwr.app.config]`` table of ``pyproject.toml``. The CLI takes the same keys through
``--run-config "k=v k2=v2"`` or a TOML file. Per-site values (data folder, site name, cache
folder) are Flower *node* config and live in :class:`SiteConfig`, never in the run config.

Settings that hold three numbers (spacing, shape) are written ``"x,y,z"`` because Flower's run
config holds scalars only; one number means the same value on every axis.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.data.schema import schema_for
from common.errors import ConfigError

Scalar = bool | int | float | str
Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]
IntList = tuple[int, ...]

LOGGER = logging.getLogger("fedsynth.config")

DEFAULT_MAX_VOXELS = 1 << 28
"""data.max-voxels: 268 million voxels (a 512 x 512 x 1024 CT), about 1 GiB as float32."""
MAX_MAX_VOXELS = 1 << 36
"""The largest data.max-voxels: 69 billion voxels, 256 GiB as float32."""


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare one run setting with its documentation and allowed values."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum}
    return field(default=default, metadata=meta)


def _check_fields(section: str, instance: Any) -> None:
    """Check every field of a config dataclass against its declared choices and range."""
    for spec in dataclasses.fields(instance):
        value = getattr(instance, spec.name)
        key = _key(section, spec.name)
        choices = spec.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(choices)}")
        values = value if isinstance(value, tuple) else (value,)
        low, high = spec.metadata.get("minimum"), spec.metadata.get("maximum")
        for item in values:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if low is not None and item < low:
                raise ConfigError(f"{key} = {_format(value)} is below its minimum {low}")
            if high is not None and item > high:
                raise ConfigError(f"{key} = {_format(value)} is above its maximum {high}")


def _numbers(key: str, text: str, advice: str) -> tuple[float, ...]:
    """A comma-separated setting as numbers (ConfigError naming ``key`` if one is not)."""
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"{key} = {text!r}: {advice}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """How a site's images are found, checked and prepared."""

    modality: str = setting(
        "ct",
        "ct (head-and-neck: tumour, bone) or mri (brain glioma, BraTS labels)",
        choices=("ct", "mri"),
    )
    layout: str = setting(
        "auto",
        "site folder layout: auto-detect, nnunet (dataset.json, imagesTr, labelsTr), "
        "brats (<case>/<case>-t1c.nii.gz) or pattern (image-pattern / label-pattern)",
        choices=("auto", "nnunet", "brats", "pattern"),
    )
    image_pattern: str = setting(
        "{case}_image.*", "file name of a case's image in the pattern layout; {case} is the id"
    )
    label_pattern: str = setting(
        "{case}_label.*", "file name of a case's label map in the pattern layout"
    )
    brats_sequence: str = setting(
        "t1c", "which BraTS sequence is the image", choices=("t1c", "t1n", "t2w", "t2f")
    )
    label_remap: str = setting(
        "",
        "map the site's label values onto the schema before checking, e.g. '4:3' for BraTS "
        "2021 enhancing tumour or '1:2' for a bone-only mask; empty for none",
    )
    max_voxels: int = setting(
        DEFAULT_MAX_VOXELS,
        "refuse an image whose header promises more voxels than this, before reading it",
        minimum=1,
        maximum=MAX_MAX_VOXELS,
    )
    require_tumour: bool = setting(True, "a case whose label map has no tumour is an error")
    skip_bad_cases: bool = setting(
        False, "leave out cases that fail the checks (and say how many) instead of stopping"
    )
    geometry_tolerance: float = setting(
        1e-3,
        "largest image/label difference in spacing and origin (relative to the spacing) and "
        "in direction cosines that still counts as the same grid",
        minimum=0.0,
        maximum=0.5,
    )
    hu_min: float = setting(-3024.0, "lowest value a CT in Hounsfield units may hold")
    hu_max: float = setting(30000.0, "highest value a CT in Hounsfield units may hold")
    ct_air_hu: float = setting(
        -500.0, "a CT in HU must have air: some voxels below this value", maximum=0.0
    )
    bone_threshold_hu: float = setting(
        226.0,
        "bone where the dataset has no bone mask: voxels at or above this HU (InVesalius' "
        "bone preset starts at 226 HU)",
        minimum=0.0,
    )
    bone_closing_radius: int = setting(
        1, "radius in voxels of the closing that fills gaps in thresholded bone", minimum=0
    )
    bone_min_volume_mm3: float = setting(
        20.0, "thresholded bone pieces smaller than this are dropped as noise", minimum=0.0
    )
    target_spacing: Triple = setting(
        (4.0, 4.0, 4.0), "voxel spacing in mm (x,y,z) after resampling", minimum=0.05
    )
    target_shape: IntTriple = setting(
        (64, 64, 64),
        "voxels (x,y,z) after crop/pad around the body (the default, a 256 mm field of view at "
        "the default spacing, trains in 24 GiB of memory: README, Memory)",
        minimum=8,
        maximum=1024,
    )
    ct_window_min: float = setting(-1024.0, "HU mapped to -1")
    ct_window_max: float = setting(2048.0, "HU mapped to +1")
    ct_body_threshold_hu: float = setting(-500.0, "CT body mask: voxels above this HU")
    mri_body_fraction: float = setting(
        0.1,
        "MRI body mask: voxels above this fraction of the 99th intensity percentile",
        minimum=0.0,
        maximum=1.0,
    )
    mri_percentile_low: float = setting(
        0.5, "MRI: this body percentile maps to -1", minimum=0.0, maximum=100.0
    )
    mri_percentile_high: float = setting(
        99.5, "MRI: this body percentile maps to +1", minimum=0.0, maximum=100.0
    )

    def __post_init__(self) -> None:
        _check_fields("data", self)
        _require(self.ct_window_min < self.ct_window_max, "data.ct-window-min must be < max")
        _require(self.hu_min < self.hu_max, "data.hu-min must be below data.hu-max")
        _require(
            self.mri_percentile_low < self.mri_percentile_high,
            "data.mri-percentile-low must be below data.mri-percentile-high",
        )
        _require("{case}" in self.image_pattern, "data.image-pattern must contain {case}")
        _require("{case}" in self.label_pattern, "data.label-pattern must contain {case}")
        parse_label_remap(self.label_remap)


@dataclass(frozen=True)
class PhantomConfig:
    """The embedded phantom cohorts: how many sites and cases, and how sites differ."""

    sites: int = setting(3, "number of simulated hospitals", minimum=1, maximum=1000)
    cases_per_site: int = setting(6, "cases each site holds", minimum=1, maximum=100000)
    first_case: int = setting(
        0,
        "index of each site's first case: with the same seed and sites, cases from here on "
        "are other patients of the same hospitals (a held-out cohort of the training sites)",
        minimum=0,
        maximum=100000,
    )
    size: int = setting(32, "voxels per side of a site's reference grid", minimum=8, maximum=512)
    layout: str = setting("nnunet", "layout written to disk", choices=("nnunet", "brats"))
    supersample: int = setting(
        2,
        "partial-volume effect: tissues are drawn at this many sub-voxels per axis",
        minimum=1,
        maximum=4,
    )
    site_intensity_scale: float = setting(
        0.05, "largest relative gain difference between sites", minimum=0.0, maximum=0.5
    )
    site_intensity_offset: float = setting(
        0.02,
        "largest intensity offset between sites, as a fraction of the modality's contrast "
        "range (1000 HU for CT, white matter for MRI)",
        minimum=0.0,
        maximum=0.5,
    )
    noise_min: float = setting(
        0.01, "smallest site noise level, same units as the offset", minimum=0.0, maximum=1.0
    )
    noise_max: float = setting(
        0.03, "largest site noise level, same units as the offset", minimum=0.0, maximum=1.0
    )
    site_spacing_jitter: float = setting(
        0.2, "largest relative change of a site's voxel spacing", minimum=0.0, maximum=1.0
    )
    site_fov_jitter: float = setting(
        0.1, "largest relative change of a site's field of view", minimum=0.0, maximum=0.5
    )
    tumour_radius_min_mm: float = setting(6.0, "smallest tumour radius", minimum=1.0)
    tumour_radius_max_mm: float = setting(16.0, "largest tumour radius", minimum=1.0)
    site_tumour_scale: float = setting(
        0.3,
        "sites' typical tumour sizes differ by up to this fraction",
        minimum=0.0,
        maximum=0.9,
    )
    anatomy_scale: float = setting(
        1.0,
        "size of the whole anatomy (body, bones, airway, tumour) relative to the reference "
        "patient: another population, e.g. for a public prior's cohort",
        minimum=0.5,
        maximum=2.0,
    )
    contrast_scale: float = setting(
        1.0,
        "tissue contrasts relative to the reference: every tissue's difference from soft "
        "tissue (CT) or white matter (MRI) is multiplied by this, as another protocol would",
        minimum=0.25,
        maximum=4.0,
    )

    def __post_init__(self) -> None:
        _check_fields("phantoms", self)
        _require(self.noise_min <= self.noise_max, "phantoms.noise-min must be <= noise-max")
        _require(
            self.tumour_radius_min_mm <= self.tumour_radius_max_mm,
            "phantoms.tumour-radius-min-mm must be <= tumour-radius-max-mm",
        )


@dataclass(frozen=True)
class FederationConfig:
    """Rounds, aggregation, the update gate, central DP and what the server writes."""

    num_rounds: int = setting(1, "federated rounds", minimum=1, maximum=100000)
    min_sites: int = setting(
        2,
        "sites that must be connected before a round starts, and accepted updates a round "
        "needs to change the global model",
        minimum=1,
        maximum=100000,
    )
    fraction_train: float = setting(
        1.0, "fraction of connected sites asked to train each round", minimum=0.01, maximum=1.0
    )
    reply_timeout_s: float = setting(
        300.0,
        "seconds the server waits for sites' replies; late sites are left out",
        minimum=1.0,
    )
    strategy: str = setting(
        "fedavg",
        "aggregation: fedavg, fedprox (fedavg + a proximal pull at the sites), fedmedian or "
        "fedtrimmedavg (robust to outlying sites)",
        choices=("fedavg", "fedprox", "fedmedian", "fedtrimmedavg"),
    )
    proximal_mu: float = setting(
        0.01, "fedprox: strength of the pull towards the global weights", minimum=0.0
    )
    trim_beta: float = setting(
        0.2, "fedtrimmedavg: fraction cut from each end per value", minimum=0.0, maximum=0.49
    )
    max_update_norm_ratio: float = setting(
        10.0,
        "update gate: reject a site whose update norm exceeds this times the median of the "
        "other sites' (0 turns the norm check off)",
        minimum=0.0,
    )
    central_dp: str = setting(
        "off",
        "site-level central DP by Flower's server-side clipping: off, fixed or adaptive",
        choices=("off", "fixed", "adaptive"),
    )
    central_noise_multiplier: float = setting(
        1.0, "central DP: noise std relative to the clipping norm", minimum=0.0
    )
    central_clipping_norm: float = setting(
        10.0,
        "central DP: L2 norm each site's update is clipped to (adaptive: start)",
        minimum=1e-6,
    )
    release_cases: int = setting(
        4, "synthetic cases the server samples into the release after the last round", minimum=1
    )
    run_dir: str = setting(
        "",
        "where the server writes checkpoints, the model and the release "
        "('' = ~/.fedsynth/runs/<flower run id>)",
    )
    resume: bool = setting(False, "continue the run in run-dir from its last checkpoint")

    def __post_init__(self) -> None:
        _check_fields("federation", self)


@dataclass(frozen=True)
class SimulationConfig:
    """Virtual sites on one machine (Flower's simulation engine): where their data and state
    live, and what each may use. Deployed sites take theirs from node config instead."""

    sites_dir: str = setting(
        "",
        "a folder with one sub-folder per virtual site (sorted; site k is partition k); used "
        "by a ClientApp whose node config has no data-path",
    )
    state_dir: str = setting(
        "",
        "where virtual sites keep their caches and privacy ledgers ('' = <sites-dir>-state)",
    )
    cpus_per_site: float = setting(1.0, "CPU cores Ray reserves per virtual site", minimum=0.1)
    gpus_per_site: float = setting(0.0, "GPUs Ray reserves per virtual site", minimum=0.0)

    def __post_init__(self) -> None:
        _check_fields("simulation", self)


@dataclass(frozen=True)
class EvaluationConfig:
    """The central evaluator: which parts run, and their sizes."""

    parts: str = setting(
        "realism,radiomics,utility",
        "what `fedsynth evaluate` computes: any of realism, radiomics, utility (comma-separated)",
    )
    real_test_fraction: float = setting(
        0.5,
        "share of the real cases held out to test segmentation (the rest train the real arm)",
        minimum=0.1,
        maximum=0.9,
    )
    utility_arms: str = setting(
        "real,synthetic,real+synthetic",
        "which training sets the utility study trains on (comma-separated)",
    )
    utility_seeds: int = setting(3, "segmentation trainings per arm (mean and spread)", minimum=1)
    utility_iterations: int = setting(
        0, "segmentation training iterations per arm (0: the recipe's default)", minimum=0
    )
    min_real_dice: float = setting(
        0.1,
        "the synthetic/real Dice ratio is undefined when the real-data arm's Dice is below "
        "this: a recipe that did not learn from real cases cannot measure synthetic ones",
        minimum=0.0,
        maximum=1.0,
    )
    radiomics_workers: int = setting(2, "processes extracting radiomics in parallel", minimum=1)
    radiomics_bin_width: float = setting(
        25.0, "pyradiomics binWidth (HU for CT, release units for MRI)", minimum=1e-6
    )
    msssim_max_pairs: int = setting(
        45, "pairs drawn per set for MS-SSIM diversity (0: all pairs)", minimum=0
    )
    classifier_folds: int = setting(
        5, "folds of the real-vs-synthetic radiomics classifier", minimum=2, maximum=20
    )

    def __post_init__(self) -> None:
        _check_fields("evaluation", self)
        known = {"realism", "radiomics", "utility"}
        unknown = sorted(set(self.part_names()) - known)
        _require(
            not unknown,
            f"evaluation.parts = {self.parts!r} names {', '.join(unknown)}: choose among "
            f"{', '.join(sorted(known))}",
        )

        arms = {"real", "synthetic", "real+synthetic"}
        unknown_arms = sorted(set(self.arm_names()) - arms)
        _require(
            bool(self.arm_names()) and not unknown_arms,
            f"evaluation.utility-arms = {self.utility_arms!r}: choose one or more of "
            f"{', '.join(sorted(arms))}",
        )

    def part_names(self) -> tuple[str, ...]:
        """The parts to compute, in the order given."""
        return tuple(part.strip() for part in self.parts.split(",") if part.strip())

    def arm_names(self) -> tuple[str, ...]:
        """The utility arms to train, in the order given."""
        return tuple(arm.strip() for arm in self.utility_arms.split(",") if arm.strip())


@dataclass(frozen=True)
class ModelConfig:
    """Which generator family, and the size of its networks."""

    family: str = setting(
        "diffusion", "generator family: gan or diffusion", choices=("gan", "diffusion")
    )
    spatial_dims: int = setting(
        3,
        "3 for volumes; 2 trains on the middle axial slice (fast experiments)",
        minimum=2,
        maximum=3,
    )
    channels: IntList = setting(
        (16, 32, 32),
        "feature widths of the networks' resolution levels, e.g. '32,64,128'",
        minimum=4,
        maximum=1024,
    )
    norm_groups: int = setting(
        8, "GroupNorm groups (BatchNorm is never used: it breaks DP-SGD)", minimum=1
    )
    num_res_blocks: int = setting(1, "diffusion: residual blocks per level", minimum=1)
    diffusion_steps: int = setting(
        1000, "diffusion: DDPM training timesteps", minimum=10, maximum=10000
    )
    beta_schedule: str = setting(
        "scaled_linear_beta",
        "diffusion: noise schedule (MONAI's names)",
        choices=("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"),
    )
    zero_terminal_snr: bool = setting(
        False,
        "diffusion: rescale the noise schedule so that its last timestep is pure noise (Lin et "
        "al. 2024); otherwise the model learns to read the layout from the signal left at the "
        "last timestep, which sampling from pure noise does not have",
    )
    denoiser_output: str = setting(
        "velocity",
        "diffusion: what the denoiser outputs: 'velocity' (v-prediction, MSE loss) or "
        "'class-probabilities' (logits of each voxel's tissue class; the clean-map estimate is "
        "their softmax, trained with cross-entropy), which keeps every estimate a mixture of "
        "classes",
        choices=("velocity", "class-probabilities"),
    )
    self_conditioning: bool = setting(
        False,
        "diffusion: the denoiser also sees its own previous estimate of the clean map (Chen et "
        "al. 2023); half the training steps first make that estimate without gradients",
    )
    sampler: str = setting(
        "ddim", "diffusion: sampler for synthetic cases", choices=("ddim", "ddpm")
    )
    sampling_steps: int = setting(50, "diffusion: DDIM steps", minimum=1, maximum=10000)
    tumour_logit_shift: float = setting(
        0.0,
        "the GAN, or diffusion with class-probabilities: added at sampling to the tumour "
        "classes' logits, which scales the sampled tumour volume (negative: smaller); a "
        "sampling setting",
        minimum=-20.0,
        maximum=20.0,
    )
    tumour_calibration_cases: int = setting(
        0,
        "the GAN, or diffusion with class-probabilities, without DP-SGD: after training, "
        "choose model.tumour-logit-shift so that the mean tumour volume of this many samples "
        "matches the training cases' (each site sends its mean); 0 leaves the shift as set",
        minimum=0,
        maximum=1000,
    )
    tumour_calibration_tries: int = setting(
        6, "shifts the tumour-volume calibration samples at most", minimum=1, maximum=50
    )
    tumour_calibration_tolerance: float = setting(
        0.1,
        "the calibration stops at a sampled mean tumour volume this close (relative) to the "
        "training cases'",
        minimum=0.0,
        maximum=1.0,
    )
    label_logit_shifts: str = setting(
        "",
        "the GAN, or diffusion with class-probabilities: one number per label, in label "
        "order (ct: tumour, bone; mri: necrotic core, oedema, enhancing), added at sampling "
        "to that label's logits (on top of model.tumour-logit-shift for tumour labels), as "
        "'0.8,0,-0.3'; empty adds none; a sampling setting",
    )
    label_calibration_tries: int = setting(
        0,
        "with model.tumour-calibration-cases: after the tumour-volume search, searches "
        "model.label-logit-shifts group by group (mri: the tumour core, then the necrotic "
        "core; ct: bone), at most this many more samples a group and pass (a second pass "
        "when a group is still off), so that each group's mean volume matches the training "
        "cases' (each site then sends one mean per label); 0 calibrates the tumour's union "
        "only",
        minimum=0,
        maximum=50,
    )
    tumour_presence_redraws: int = setting(
        0,
        "each sampled case first draws whether it has a tumour (model.tumour-presence), "
        "and one whose label map disagrees is drawn again, at most this many times; 0 keeps "
        "cases as drawn; a sampling setting",
        minimum=0,
        maximum=20,
    )
    tumour_presence: float = setting(
        1.0,
        "with model.tumour-presence-redraws: the fraction of sampled cases drawn with a "
        "tumour; with model.tumour-calibration-cases the calibration sets it to the sites' "
        "training cases' fraction (each site sends its own); a sampling setting",
        minimum=0.0,
        maximum=1.0,
    )
    latent_channels: int = setting(
        8, "GAN: channels of the noise the label-map generator starts from", minimum=1
    )
    gan_loss: str = setting("lsgan", "GAN: adversarial loss", choices=("lsgan", "hinge", "bce"))
    l1_weight: float = setting(
        0.0,
        "GAN: weight of the L1 loss between images generated for real label maps and the real "
        "images (must be 0 with DP-SGD: it would give the generator real voxels)",
        minimum=0.0,
    )
    tumour_weight: float = setting(
        5.0,
        "extra loss weight inside the tumour: the GAN's L1 (as in the study), the diffusion "
        "model's denoising and decoding losses",
        minimum=0.0,
    )
    feature_matching_weight: float = setting(
        0.0,
        "GAN: weight of discriminator feature matching (must be 0 with DP-SGD)",
        minimum=0.0,
    )
    label_temperature: float = setting(
        1.0, "GAN: Gumbel-softmax temperature of the label-map generator", minimum=0.01
    )
    prior: str = setting(
        "",
        "a public prior to start training from: the name of one shipped with fedsynth "
        "(phantom-ct-32) or the path of one made by `fedsynth prior`; '' for random weights",
    )
    label_sampling: str = setting(
        "argmax",
        "GAN: label map from the generator's logits by argmax (one map per noise draw) or by "
        "per-voxel Gumbel sampling",
        choices=("argmax", "gumbel"),
    )
    tissue_thresholds: str = setting(
        "",
        "diffusion: normalised intensities (in the [-1, 1] units of a prepared cache, rising) "
        "that split unlabelled voxels into intensity classes of the tissue map the model draws, "
        "e.g. '-0.659,-0.353' for air | fat | soft tissue at -500 and -30 HU in CT's default "
        "window; '' for one background class",
    )
    tissue_smoothing: float = setting(
        0.0,
        "diffusion: standard deviation, in voxels, of the Gaussian that smooths the image "
        "before the tissue thresholds split it, so that scanner noise around a threshold does "
        "not scatter a tissue into hundreds of specks; 0 thresholds the image itself",
        minimum=0.0,
        maximum=4.0,
    )
    decoder_weight: float = setting(
        1.0,
        "diffusion: weight of the image decoder's loss beside the tissue-map denoiser's",
        minimum=0.0,
    )
    image_decoder: str = setting(
        "median",
        "diffusion: how the decoder paints an image from the tissue map: 'median' (each "
        "voxel's median plus white noise of one learned level) or 'quantiles' (each voxel's "
        "distribution as quantiles, drawn through a Gaussian copula with a learned texture "
        "kernel)",
        choices=("median", "quantiles"),
    )
    decoder_quantiles: int = setting(
        9,
        "diffusion with quantiles: quantiles per voxel (odd), at normal scores evenly spaced "
        "in [-2, 2]",
        minimum=3,
        maximum=33,
    )
    texture_kernel: int = setting(
        3,
        "diffusion with quantiles: voxels a side (odd) of the kernel that colours the "
        "copula's noise; 1 draws every voxel independently",
        minimum=1,
        maximum=7,
    )
    min_snr_gamma: float = setting(
        0.0,
        "diffusion: Min-SNR loss weighting, min(SNR, gamma) / (SNR + 1) per timestep (Hang et "
        "al. 2023); 0 weights every timestep equally",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        _check_fields("model", self)
        for key, value in (
            ("decoder-quantiles", self.decoder_quantiles),
            ("texture-kernel", self.texture_kernel),
        ):
            _require(value % 2 == 1, f"model.{key} = {value}: give an odd number")
        thresholds = self.thresholds()
        _require(
            list(thresholds) == sorted(set(thresholds)) and all(-1 < t < 1 for t in thresholds),
            f"model.tissue-thresholds = {self.tissue_thresholds!r}: give rising numbers "
            "between -1 and 1, comma-separated, as '-0.659,-0.353'",
        )
        _require(
            self.tumour_logit_shift == 0 or self.has_class_logits(),
            f"model.tumour-logit-shift = {self.tumour_logit_shift:g} shifts class logits: it "
            "needs model.family = gan or model.denoiser-output = class-probabilities (or set "
            "it to 0)",
        )
        shifts = self.label_shifts()
        _require(
            all(-20.0 <= shift <= 20.0 for shift in shifts),
            f"model.label-logit-shifts = {self.label_logit_shifts!r}: give numbers "
            "between -20 and 20",
        )
        _require(
            not any(shifts) or self.has_class_logits(),
            f"model.label-logit-shifts = {self.label_logit_shifts!r} shifts class "
            "logits: it needs model.family = gan or model.denoiser-output = "
            "class-probabilities (or leave it empty)",
        )
        _require(
            self.label_calibration_tries == 0 or self.tumour_calibration_cases > 0,
            f"model.label-calibration-tries = {self.label_calibration_tries} refines "
            "the tumour-volume calibration: it needs model.tumour-calibration-cases > 0 (or "
            "set it to 0)",
        )
        _require(
            self.tumour_calibration_cases == 0 or self.has_class_logits(),
            f"model.tumour-calibration-cases = {self.tumour_calibration_cases} searches "
            "model.tumour-logit-shift: it needs model.family = gan or "
            "model.denoiser-output = class-probabilities (or set it to 0)",
        )

    def has_class_logits(self) -> bool:
        """Whether sampling draws label maps from class logits, which the logit shifts move:
        the GAN's label generator, or the diffusion denoiser's class-probabilities output."""
        return self.family == "gan" or self.denoiser_output == "class-probabilities"

    def label_shifts(self) -> tuple[float, ...]:
        """``label_logit_shifts`` as numbers, () when empty (ConfigError if one is not a
        number)."""
        return _numbers(
            "model.label-logit-shifts",
            self.label_logit_shifts,
            "give comma-separated numbers, one per label, as '0.8,0,-0.3'",
        )

    def thresholds(self) -> tuple[float, ...]:
        """``tissue_thresholds`` as numbers (ConfigError if one is not a number)."""
        return _numbers(
            "model.tissue-thresholds",
            self.tissue_thresholds,
            "give numbers, comma-separated, as '-0.659,-0.353'",
        )


@dataclass(frozen=True)
class TrainingConfig:
    """Local training at a site: batches, epochs, optimiser, checkpoints, device."""

    batch_size: int = setting(
        4, "expected cases per step (Poisson-sampled with DP-SGD)", minimum=1, maximum=4096
    )
    local_epochs: int = setting(
        1, "passes over the site's cases per run or federated round", minimum=1
    )
    max_steps: int = setting(
        0,
        "cap on a run's or round's steps, which are min(local-epochs x ceil(cases / "
        "batch-size), max-steps): raise local-epochs to train longer (0: no cap)",
        minimum=0,
    )
    learning_rate: float = setting(2e-4, "Adam learning rate of generators", minimum=0.0)
    discriminator_learning_rate: float = setting(
        2e-4, "Adam learning rate of the GAN discriminator", minimum=0.0
    )
    adam_beta1: float = setting(0.5, "Adam beta1", minimum=0.0, maximum=1.0)
    adam_beta2: float = setting(0.999, "Adam beta2", minimum=0.0, maximum=1.0)
    lr_schedule: str = setting(
        "constant",
        "learning rate after the warm-up: constant, or cosine decay to min-lr-ratio times the "
        "rate over the whole training (every round of a federation)",
        choices=("constant", "cosine"),
    )
    warmup_steps: int = setting(
        0, "steps over which the learning rate rises linearly from 0 to its value", minimum=0
    )
    min_lr_ratio: float = setting(
        0.1,
        "cosine schedule: the final learning rate as a fraction of the rate",
        minimum=0.0,
        maximum=1.0,
    )
    ema_decay: float = setting(
        0.0,
        "decay of the exponential moving average of the generators' weights that sampling "
        "uses (0: sample with the trained weights themselves); post-processing, no privacy cost",
        minimum=0.0,
        maximum=0.99999,
    )
    checkpoint_every: int = setting(
        50, "save a resumable checkpoint every this many steps", minimum=1
    )
    memory_limit_gib: float = setting(
        0.0,
        "refuse, before any privacy is charged, a run whose estimated peak memory exceeds this "
        "(GiB); 0: the memory the machine (or its container) has free",
        minimum=0.0,
    )
    device: str = setting(
        "auto", "auto (a GPU when present), cpu or cuda", choices=("auto", "cpu", "cuda")
    )
    amp: str = setting(
        "auto",
        "bfloat16 autocast: auto (on a GPU, not on the CPU, where it is slower), bf16 "
        "(everywhere: the GPU code path on a CPU, for tests) or off",
        choices=("auto", "bf16", "off"),
    )

    def __post_init__(self) -> None:
        _check_fields("training", self)


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD with Opacus on the networks that see real data, and the site's budget."""

    enabled: bool = setting(True, "train the networks that see real data with DP-SGD")
    noise_multiplier: float = setting(
        1.0,
        "Gaussian noise std relative to the clipping norm (ignored with target-epsilon)",
        minimum=0.0,
    )
    target_epsilon: float = setting(
        0.0,
        "if > 0, choose the noise multiplier so the planned steps spend this epsilon",
        minimum=0.0,
    )
    max_grad_norm: float = setting(1.0, "per-sample gradient clipping norm", minimum=1e-6)
    delta: float = setting(1e-5, "the delta of (epsilon, delta)-DP", minimum=0.0, maximum=0.1)
    budget_epsilon: float = setting(
        10.0, "a site's total epsilon; training that would exceed it is refused", minimum=0.0
    )
    accountant: str = setting("rdp", "privacy accountant", choices=("rdp", "prv"))
    grad_sample_mode: str = setting(
        "auto",
        "Opacus per-sample gradient mode; auto takes the family's fastest measured mode",
        choices=("auto", "hooks", "functorch", "ew"),
    )
    secure_rng: bool = setting(
        False, "cryptographically secure noise (slower; for production releases)"
    )

    def __post_init__(self) -> None:
        _check_fields("privacy", self)


@dataclass(frozen=True)
class AuditConfig:
    """The nearest-neighbour memorization audit at a site (``common.audit``)."""

    percentile: float = setting(
        1.0,
        "a space's threshold: this percentile of the held-out cases' nearest distances to the "
        "training cases (how close two different patients of the site normally are)",
        minimum=0.0,
        maximum=50.0,
    )
    threshold_factor: float = setting(
        0.5,
        "a space's threshold is this fraction of that percentile: a case is flagged when it is "
        "clearly closer to a training case than two different patients are",
        minimum=0.0,
        maximum=1.0,
    )
    min_holdout: int = setting(
        10,
        "fewer held-out cases than this: calibrate on the training cases' nearest other "
        "training case instead (leave-one-out), and say so in the audit",
        minimum=1,
    )
    shift_voxels: int = setting(
        2,
        "voxel and label distances are the best over shifts of up to this many voxels",
        minimum=0,
    )
    slab_voxels: int = setting(
        4,
        "voxel distances are the best over slabs this thick along z (stride half of it), so "
        "that a copied part of a volume is caught",
        minimum=1,
    )
    top_k: int = setting(
        3,
        "neighbours kept per case and space (voxels and labels: among the shortlist)",
        minimum=2,
    )
    shortlist: int = setting(
        4,
        "reference cases per query whose exact shifted voxel and label distances are computed: "
        "the best of each of the four coarse rankings (image, slab, labels, features), then the "
        "second best of each, ...; as many as there are reference cases makes it exhaustive",
        minimum=1,
        maximum=100000,
    )
    chunk_cases: int = setting(
        64,
        "query cases per chunk of the search, and case pairs per block of exact distances "
        "(bounds memory)",
        minimum=1,
        maximum=100000,
    )
    spectra_cache_mib: int = setting(
        1024,
        "keep every reference case's in-plane and label spectra for the whole search when they "
        "fit in this many MiB (about 0.4 MiB a case at 32^3 with two structures); otherwise "
        "each chunk takes them again for its shortlisted cases (slower, less memory)",
        minimum=0,
    )
    report_closest: int = setting(
        3,
        "the on-site report shows every flagged case and this many of the closest unflagged "
        "ones beside their nearest training cases",
        minimum=0,
    )
    max_candidate_factor: float = setting(
        3.0,
        "release gate: the server samples at most this many times federation.release-cases "
        "candidates in all (flagged candidates are withheld and replaced until release-cases "
        "pass every site's audit or this limit is reached)",
        minimum=1.0,
        maximum=100.0,
    )
    membership_timesteps: IntList = setting(
        (50, 200, 500),
        "membership inference on a diffusion model (fedsynth audit --model): a case's score is "
        "minus its denoising loss averaged over these timesteps (each below the model's "
        "model.diffusion-steps), with the same noise for every case",
        minimum=0,
    )
    membership_bootstrap: int = setting(
        1000,
        "membership inference: bootstrap resamples (members and non-members resampled "
        "separately) behind the ROC AUC's interval",
        minimum=10,
        maximum=1000000,
    )
    membership_bootstrap_level: float = setting(
        0.95,
        "membership inference: the coverage of the AUC's bootstrap percentile interval",
        minimum=0.5,
        maximum=0.999,
    )

    def __post_init__(self) -> None:
        _check_fields("audit", self)
        timesteps = self.membership_timesteps
        _require(
            len(set(timesteps)) == len(timesteps),
            f"audit.membership-timesteps = {_format(timesteps)}: list each timestep once",
        )


@dataclass(frozen=True)
class FedsynthConfig:
    """Every run setting of fedsynth, one section per concern."""

    seed: int = setting(42, "the one seed every other seed derives from", minimum=0)
    data: DataConfig = field(default_factory=DataConfig)
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def __post_init__(self) -> None:
        _check_fields("", self)
        if (
            self.privacy.enabled
            and (self.model.l1_weight > 0 or self.model.feature_matching_weight > 0)
            and self.model.family == "gan"
        ):
            raise ConfigError(
                "model.l1-weight and model.feature-matching-weight must be 0 with DP-SGD "
                "(privacy.enabled=true): both feed real voxels to the GAN generator, which "
                "DP-SGD does not protect. Set them to 0, or privacy.enabled=false"
            )
        if self.privacy.enabled and self.model.tumour_calibration_cases > 0:
            raise ConfigError(
                "model.tumour-calibration-cases must be 0 with DP-SGD (privacy.enabled=true): "
                "each site would send its mean tumour volume, which DP-SGD does not protect. "
                "Set it to 0 (and model.tumour-logit-shift by hand), or privacy.enabled=false"
            )
        labels = schema_for(self.data.modality).labels
        shifts = self.model.label_shifts()
        if shifts and len(shifts) != len(labels):
            raise ConfigError(
                f"model.label-logit-shifts = {self.model.label_logit_shifts!r} gives "
                f"{len(shifts)} numbers: data.modality = {self.data.modality} has "
                f"{len(labels)} labels ({', '.join(labels)}), one number each"
            )


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "phantoms": PhantomConfig,
    "federation": FederationConfig,
    "simulation": SimulationConfig,
    "evaluation": EvaluationConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "privacy": PrivacyConfig,
    "audit": AuditConfig,
}
TOP_LEVEL = ("seed",)


@dataclass(frozen=True)
class SiteConfig:
    """Per-site values from Flower's node config (``--node-config`` of a SuperNode)."""

    data_path: Path | None
    site_name: str
    cache_dir: Path | None
    ledger_dir: Path | None = None
    holdout_path: Path | None = None
    """Real cases of the site not trained on, which calibrate the federated audit."""

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Scalar]) -> SiteConfig:
        """Read ``data-path``, ``site-name``, ``cache-dir``, ``ledger-dir`` and
        ``holdout-path`` from node config."""

        def path(key: str) -> Path | None:
            value = node_config.get(key)
            return Path(str(value)) if value else None

        name = node_config.get("site-name", node_config.get("partition-id", "site"))
        return cls(
            data_path=path("data-path"),
            site_name=str(name),
            cache_dir=path("cache-dir"),
            ledger_dir=path("ledger-dir"),
            holdout_path=path("holdout-path"),
        )


def _key(section: str, name: str) -> str:
    kebab = name.replace("_", "-")
    return kebab if section == "" else f"{section}.{kebab}"


def _format(value: Any) -> Scalar:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return typing.cast(Scalar, value)


def _fields(section_type: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(section_type)}


def _hints(section_type: type) -> dict[str, Any]:
    return typing.get_type_hints(section_type)


def valid_keys() -> list[str]:
    """Every run-config key fedsynth understands, sorted."""
    keys = list(TOP_LEVEL)
    for section, section_type in SECTIONS.items():
        keys.extend(_key(section, name) for name in _fields(section_type))
    return sorted(keys)


def default_run_config() -> dict[str, Scalar]:
    """The defaults as Flower's flat run config (what ``pyproject.toml`` must hold)."""
    return to_run_config(FedsynthConfig())


RESUME_IGNORED_KEYS = (
    "federation.resume",
    "federation.run-dir",
    "federation.reply-timeout-s",
    "training.memory-limit-gib",
)
"""Settings a resumed run may change (none changes what is trained); every other setting must
equal the checkpoint's."""


def changed_settings(started: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The run-config keys (sorted) whose values differ between a run's start and its resume."""
    keys = (set(started) | set(now)) - set(RESUME_IGNORED_KEYS)
    return sorted(k for k in keys if started.get(k) != now.get(k))


def to_run_config(config: FedsynthConfig) -> dict[str, Scalar]:
    """Flatten a config back to run-config keys and scalar values (for logs and manifests)."""
    flat: dict[str, Scalar] = {"seed": config.seed}
    for section in SECTIONS:
        instance = getattr(config, section)
        for spec in dataclasses.fields(instance):
            flat[_key(section, spec.name)] = _format(getattr(instance, spec.name))
    return flat


def _coerce(key: str, value: Scalar, target: Any) -> Any:
    """Turn one run-config scalar into the field's Python type, or say why it cannot."""
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} = {value!r} must be true or false")
    if target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{key} = {value!r} must be a whole number")
    if target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(f"{key} = {value!r} must be a number") from None
    if target is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} = {value!r} must be a string (quote it)")
    if typing.get_origin(target) is tuple and typing.get_args(target)[1:] == (Ellipsis,):
        items = str(value).split(",") if isinstance(value, str) else [value]
        parsed = tuple(
            _coerce(key, item.strip() if isinstance(item, str) else item, int)
            for item in items
            if not isinstance(item, str) or item.strip()
        )
        if not parsed:
            raise ConfigError(f"{key} = {value!r} must list whole numbers, as '16,32,64'")
        return parsed
    if typing.get_origin(target) is tuple:
        item_type = typing.get_args(target)[0]
        parts: list[Scalar] = (
            [p for p in value.replace("x", ",").split(",") if p.strip()]
            if isinstance(value, str)
            else [value]
        )
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise ConfigError(f"{key} = {value!r} must be one number or three, as 'x,y,z'")
        return tuple(_coerce(key, p, item_type) for p in parts)
    raise ConfigError(f"{key}: unsupported setting type {target!r}")  # pragma: no cover


def _unknown_key_error(key: str) -> ConfigError:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"unknown setting '{key}'.{hint} Valid settings: {', '.join(keys)}")


def load_config(run_config: Mapping[str, Scalar]) -> FedsynthConfig:
    """Build the typed config from Flower's flat run config; missing keys take defaults.

    Raises:
        ConfigError: a key is unknown (the valid ones are listed), a value has the wrong type,
            or a value is out of range.
    """
    per_section: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in run_config.items():
        section, _, name = key.rpartition(".")
        attr = name.replace("-", "_")
        if section == "" and key in TOP_LEVEL:
            top[attr] = _coerce(key, value, _hints(FedsynthConfig)[attr])
            continue
        if section not in SECTIONS or attr not in _fields(SECTIONS[section]) or "_" in name:
            raise _unknown_key_error(key)
        per_section[section][attr] = _coerce(key, value, _hints(SECTIONS[section])[attr])
    sections = {name: SECTIONS[name](**values) for name, values in per_section.items()}
    return FedsynthConfig(**top, **sections)


def parse_run_config_args(run_config: str | None, config_file: Path | None) -> dict[str, Scalar]:
    """Parse the CLI's ``--config FILE.toml`` then ``--run-config "k=v k2=v2"`` overrides.

    Values are TOML (strings quoted, ``true``/``false``), as in ``flwr run --run-config``.
    """
    import tomllib

    from flwr.common.config import flatten_dict, parse_config_args

    merged: dict[str, Scalar] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as handle:
                raw = tomllib.load(handle)
        except OSError as err:
            raise ConfigError(f"{config_file}: cannot read the config file ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{config_file}: not valid TOML ({err})") from None
        table = raw.get("tool", {}).get("flwr", {}).get("app", {}).get("config", raw)
        merged.update(flatten_dict(table))
    if run_config:
        try:
            merged.update(parse_config_args([run_config]))
        except Exception as err:  # flwr raises click.ClickException for bad syntax
            raise ConfigError(
                f"--run-config {run_config!r} is not 'key=value key2=value2' with TOML values "
                f'(quote strings: data.modality="mri"): {err}'
            ) from None
    return merged


def parse_label_remap(text: str) -> dict[int, int]:
    """Parse ``"4:3,7:0"`` into ``{4: 3, 7: 0}``.

    Raises:
        ConfigError: the text is not comma-separated ``from:to`` pairs of whole numbers.
    """
    mapping: dict[int, int] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        source, sep, target = pair.partition(":")
        if not sep or not source.strip().isdigit() or not target.strip().isdigit():
            raise ConfigError(
                f"data.label-remap = {text!r}: write pairs of whole numbers as 'from:to,from:to'"
            )
        mapping[int(source)] = int(target)
    return mapping


def log_config(config: FedsynthConfig, logger: logging.Logger = LOGGER) -> None:
    """Log every resolved setting, one per line, so a run's log says how it was configured."""
    for key, value in sorted(to_run_config(config).items()):
        logger.info("config %s = %r", key, value)
