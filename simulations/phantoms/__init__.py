"""Embedded phantom cohorts: realistic 3D cases from a seed, so fedsynth runs with no patient data.

Two tasks: head-and-neck CT in Hounsfield units (labels 1 = tumour, 2 = bone) and brain glioma
T1c MRI (BraTS labels 1 = necrotic core, 2 = oedema, 3 = enhancing tumour). Anatomy is defined in
millimetres in the LPS world frame, then drawn on each simulated site's grid with the
partial-volume effect; sites differ in calibration, noise, spacing, field of view, stored
direction and typical tumour size (:class:`SiteProfile`).

    profiles = site_profiles("ct", config)
    case = make_case("ct", profiles[0], 0, config)      # PhantomCase(case_id, image, label)
    summary = write_cohort(config, Path("phantoms"))    # nnU-Net raw (or BraTS for MRI)
"""

from simulations.phantoms.case import PhantomCase, make_case
from simulations.phantoms.cohort import CohortSummary, write_cohort
from simulations.phantoms.profiles import SiteProfile, site_profiles

__all__ = [
    "CohortSummary",
    "PhantomCase",
    "SiteProfile",
    "make_case",
    "site_profiles",
    "write_cohort",
]
