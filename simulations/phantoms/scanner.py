"""What a site's scanner adds to the anatomy: blur, calibration (gain and offset) and noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from simulations.phantoms.profiles import SiteProfile

PSF_SIGMA_VOXELS = 0.5
"""Standard deviation of the scanner's point-spread function, in voxels (reconstruction blur)."""


def blur(image: np.ndarray) -> np.ndarray:
    """The image seen through the scanner's point-spread function."""
    return ndimage.gaussian_filter(image, sigma=PSF_SIGMA_VOXELS, mode="nearest")


def calibrate(image: np.ndarray, profile: SiteProfile) -> np.ndarray:
    """The site's gain and offset applied to the image."""
    return profile.gain * image + profile.offset


def gaussian_noise(image: np.ndarray, profile: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """The image plus white Gaussian noise of the site's level (CT)."""
    return image + rng.normal(0.0, profile.noise_sd, size=image.shape)


def rician_noise(image: np.ndarray, profile: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """The magnitude of the image plus complex Gaussian noise (MRI): never negative."""
    real = image + rng.normal(0.0, profile.noise_sd, size=image.shape)
    imaginary = rng.normal(0.0, profile.noise_sd, size=image.shape)
    return np.hypot(real, imaginary)
