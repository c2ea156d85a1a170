"""A whole site folder: check every case, and prepare the good ones into the site's cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from common.config import DataConfig
from common.data.cache import CacheIndex, SourceFingerprint, write_cache
from common.data.imageio import to_array
from common.data.layouts import SiteListing, list_cases
from common.data.loading import CaseReport, check_case, load_case
from common.data.preprocess import prepare_case
from common.data.problems import Problem, SiteDataError
from common.errors import DataError

CaseCallback = Callable[[str], None]


@dataclass(frozen=True)
class SiteReport:
    """Every case of a site folder with what its check found."""

    listing: SiteListing
    cases: tuple[CaseReport, ...]

    @property
    def problems(self) -> list[Problem]:
        """Pairing problems and every case's problems, in order."""
        return [*self.listing.problems, *(p for case in self.cases for p in case.problems)]

    @property
    def ok(self) -> bool:
        """True when the site has at least one case and no problem at all."""
        return bool(self.cases) and not self.problems

    @property
    def good_cases(self) -> list[CaseReport]:
        """The cases without problems."""
        return [case for case in self.cases if case.ok]

    @property
    def bad_case_count(self) -> int:
        """Cases with a problem, counting files left without a partner."""
        bad_ids = {p.case_id for p in self.problems}
        return len(bad_ids)


def check_site(root: Path, data: DataConfig, on_case: CaseCallback | None = None) -> SiteReport:
    """Check every case of a site (or case) folder; images are not kept in memory."""
    listing = list_cases(root, data)
    reports = []
    for files in listing.cases:
        report = check_case(files, data, listing.label_remap)
        reports.append(replace(report, image=None, label=None))
        if on_case is not None:
            on_case(files.case_id)
    return SiteReport(listing, tuple(reports))


def usable_cases(report: SiteReport, data: DataConfig) -> list[CaseReport]:
    """The cases to use: all of them when the site is clean; the good ones with skip-bad-cases.

    Raises:
        SiteDataError: the site has problems and ``data.skip_bad_cases`` is false, or no case
            is usable at all.
    """
    root = report.listing.root
    if report.problems and not data.skip_bad_cases:
        hint = "fix them, or leave the bad cases out with --skip-bad (data.skip-bad-cases=true)"
        raise SiteDataError(root, report.problems, hint)
    good = report.good_cases
    if not good:
        raise SiteDataError(root, report.problems, "no usable case is left in this folder")
    return good


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare_site`` wrote and what it left out."""

    index: CacheIndex
    report: SiteReport
    prepared: int
    skipped: int


def prepare_site(
    root: Path,
    out: Path,
    data: DataConfig,
    *,
    overwrite: bool = False,
    on_case: CaseCallback | None = None,
) -> PrepareSummary:
    """Check a site, preprocess its usable cases and write the site's cache atomically."""
    report = check_site(root, data)
    good = usable_cases(report, data)
    prepared = []
    source = SourceFingerprint()
    for case in good:
        loaded = load_case(case.files, data, report.listing.label_remap)
        if loaded.image is None or loaded.label is None:  # pragma: no cover - load_case ensures
            raise DataError(case.files.image, "unreadable", "case vanished while preparing")
        source.add(case.case_id, to_array(loaded.image), to_array(loaded.label))
        try:
            prepared.append(prepare_case(case.case_id, loaded.image, loaded.label, data))
        except DataError as err:
            raise DataError(case.files.image, err.kind, err.message, err.hint) from None
        if on_case is not None:
            on_case(case.case_id)
    index = write_cache(
        prepared,
        out,
        data=data,
        overwrite=overwrite,
        source_fingerprint=source.hexdigest(),
        case_fingerprints=source.cases,
    )
    return PrepareSummary(index, report, len(prepared), report.bad_case_count)
