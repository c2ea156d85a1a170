"""The audit's two HTML reports, built from one :class:`~common.audit.run.Audit`.

- On-site (``report.html``, stays at the hospital): the summary, the distance histograms with
  each threshold marked, the flagged list, and every flagged case and the closest unflagged
  ones beside their nearest training cases (tri-planar views of real voxels).
- Central (``central.html``, may travel with the release): the same summary, histograms and
  flagged list, distances only: no image of a real case, no real case id or path (training
  cases appear by site-local pseudonym).
"""

from __future__ import annotations

from common.audit.figures import histograms, neighbour_gallery, shown_cases
from common.audit.membership import Membership
from common.audit.run import Audit
from common.audit.search import SPACES, CaseSet
from common.reports.html import Page, png

ONSITE_TITLE = "fedsynth memorization audit (on-site: holds real images, keep at the site)"
CENTRAL_TITLE = "fedsynth memorization audit (central: distances only)"
PSEUDONYM_NOTE = (
    "Training cases are named by position (train-001 is the first case of --train in the order "
    "`fedsynth data check` lists them); no case id or path is written."
)


def _summary(page: Page, audit: Audit, membership: Membership | None) -> None:
    result, calibration = audit.result, audit.calibration
    counts = result["counts"]
    page.heading("Summary")
    page.paragraph(
        f"{counts['flagged']} of {counts['synthetic']} synthetic cases are flagged: closer to a "
        "training case, in at least one space, than the threshold."
    )
    page.paragraph(
        "membership inference: not run (fedsynth audit --model RUN/server/model.pt --holdout "
        "DIR runs it)"
        if membership is None
        else membership.sentence()
    )
    page.table(
        ("synthetic", "train", "holdout", "flagged"),
        [(counts["synthetic"], counts["train"], counts["holdout"], counts["flagged"])],
    )
    page.heading("Calibration", 3)
    page.paragraph(f"method: {calibration.source} ({calibration.cases} cases)")
    page.paragraph(calibration.note, "note")
    figures = result["figures"]
    page.table(
        (
            "space",
            "threshold",
            "median DCR",
            "identifiability",
            "closer to training than held-out",
        ),
        [
            (
                space,
                calibration.thresholds[space],
                figures[space]["dcr"].get("q50"),
                figures[space]["identifiability"],
                figures[space]["closer_to_training"],
            )
            for space in SPACES
        ],
    )


def _histograms(page: Page, audit: Audit) -> None:
    page.heading("Nearest distances per space")
    for alt, figure in histograms(audit):
        page.image(png(figure), alt)


def _flagged(page: Page, audit: Audit) -> None:
    page.heading("Flagged cases")
    cases = [case for case in audit.result["cases"] if case["flagged"]]
    if not cases:
        page.paragraph("No synthetic case is flagged.")
        return
    page.table(
        ("case", *SPACES, "nearest training case (voxels)", "reason"),
        [
            (
                case["case"],
                *(case["nearest"][space] for space in SPACES),
                (case["neighbours"]["voxels"] or [{"id": "-"}])[0]["id"],
                case["reason"],
            )
            for case in cases
        ],
    )


def central_page(audit: Audit, membership: Membership | None = None) -> str:
    """The central report: summary (with ``membership``'s line when the attack ran),
    histograms and the flagged list, distances only."""
    page = Page(CENTRAL_TITLE)
    _summary(page, audit, membership)
    _histograms(page, audit)
    _flagged(page, audit)
    page.paragraph(PSEUDONYM_NOTE, "note")
    return page.render()


def onsite_page(
    audit: Audit,
    synthetic: CaseSet,
    train: CaseSet,
    spacing: tuple[float, float, float],
    closest: int,
    membership: Membership | None = None,
) -> str:
    """The on-site report: the central report's sections, then each flagged case and the
    ``closest`` nearest unflagged ones beside their nearest training cases."""
    page = Page(ONSITE_TITLE)
    _summary(page, audit, membership)
    _histograms(page, audit)
    _flagged(page, audit)
    page.heading("Synthetic cases beside their nearest training cases")
    page.paragraph(
        "Axial, coronal and sagittal middle slices in the site's preprocessed intensities, "
        "label maps outlined; every flagged case, then the unflagged ones nearest a threshold.",
        "note",
    )
    for index in shown_cases(audit, closest):
        name = audit.result["cases"][index]["case"]
        gallery = neighbour_gallery(audit, index, synthetic, train, spacing)
        page.image(gallery, f"tri-planar views of {name} and its nearest training cases")
    page.paragraph(PSEUDONYM_NOTE, "note")
    return page.render()
