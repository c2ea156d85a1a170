"""A whole phantom cohort on disk: every site's cases, written atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_directory
from common.config import FedsynthConfig
from simulations.phantoms.case import make_case
from simulations.phantoms.profiles import check_modality, site_profiles
from simulations.phantoms.writers import check_layout, write_case, write_dataset_json

LOGGER = logging.getLogger("fedsynth.phantoms")


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`write_cohort` wrote: one folder per site, and each site's case count."""

    out: Path
    modality: str
    layout: str
    sites: tuple[Path, ...]
    cases: tuple[int, ...]

    @property
    def total_cases(self) -> int:
        """Cases over all sites."""
        return sum(self.cases)


def write_cohort(
    config: FedsynthConfig,
    out: Path,
    *,
    overwrite: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> CohortSummary:
    """Write ``config.phantoms.sites`` sites of ``cases-per-site`` cases each under ``out``,
    each site's cases ``first-case`` onwards (a case's voxels depend on the seed, the number of
    sites, its site and its index only, so cases past a cohort's are new patients of the same
    hospitals).

    The modality is ``config.data.modality``, the layout ``config.phantoms.layout``. The
    folder appears whole or not at all. ``on_case`` is called with each case's id once it is
    written (for progress bars).

    Raises:
        ConfigError: the layout cannot hold the modality (BraTS holds MRI only).
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    modality, layout = config.data.modality, config.phantoms.layout
    check_modality(modality)
    check_layout(modality, layout)
    profiles = site_profiles(modality, config)
    cases = config.phantoms.cases_per_site
    first = config.phantoms.first_case
    with atomic_directory(out, overwrite=overwrite) as staging:
        for profile in profiles:
            site_dir = staging / profile.name
            site_dir.mkdir()
            LOGGER.info("%s", profile.describe())
            for index in range(first, first + cases):
                case = make_case(modality, profile, index, config)
                write_case(case, site_dir, layout)
                if on_case is not None:
                    on_case(case.case_id)
            if layout == "nnunet":
                write_dataset_json(site_dir, modality, profile.name, cases)
    final = out.resolve()
    return CohortSummary(
        out=final,
        modality=modality,
        layout=layout,
        sites=tuple(final / p.name for p in profiles),
        cases=(cases,) * len(profiles),
    )
