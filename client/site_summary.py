"""What a site tells the server about its data before training: counts, never voxels or paths."""

from __future__ import annotations

from common.config import DataConfig, SiteConfig
from common.data.site import check_site


def summarise_site(site: SiteConfig, data: DataConfig) -> dict[str, int]:
    """Counts of a site's cases: listed, valid, with problems. Only integers leave the site."""
    if site.data_path is None:
        return {"cases": 0, "valid-cases": 0, "bad-cases": 0}
    report = check_site(site.data_path, data)
    return {
        "cases": len(report.cases),
        "valid-cases": len(report.good_cases),
        "bad-cases": report.bad_case_count,
    }
