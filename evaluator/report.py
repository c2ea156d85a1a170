"""``report.html``: what an evaluation found, for people. ``evaluation.json`` has every number.

One self-contained page (figures embedded): a plain-words summary, the release's provenance and
privacy figures, realism tables and distributions, tri-planar galleries of real and synthetic
cases side by side (CT in a soft-tissue and a bone window), radiomics and segmentation utility
beside the study's figures. A part that was not computed says so, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.figure import Figure

from common.reports.figures import CT_BONE_WINDOW, CT_SOFT_TISSUE_WINDOW, GalleryRow, triplanar_png
from common.reports.html import Page, png
from evaluator.cases import EvalCase

HEATMAP_FEATURES = 25
"""Features shown in the radiomics distance heat map (the largest distances)."""
GALLERY_CASES = 2
"""Real and synthetic cases shown in each gallery."""
MRI_WINDOW = (0.0, 1000.0)
"""MRI galleries show the release range."""

SectionWriter = Callable[[Page, dict[str, Any]], None]


def render_report(
    results: dict[str, Any],
    real: Sequence[EvalCase],
    synthetic: Sequence[EvalCase],
    extra_sections: Sequence[SectionWriter] = (),
) -> str:
    """The report page for ``results`` (the content of ``evaluation.json``)."""
    page = Page("fedsynth evaluation")
    page.heading("In plain words")
    for line in plain_summary(results):
        page.paragraph(line)
    _release_section(page, results)
    _realism_section(page, results)
    _gallery_section(page, results, real, synthetic)
    for write in extra_sections:
        write(page, results)
    return page.render()


def plain_summary(results: dict[str, Any]) -> list[str]:
    """A few sentences a non-specialist can read."""
    release = results["release"]
    lines = [
        f"{release['cases']} synthetic {results['modality'].upper()} cases made by a "
        f"{release['family']} model trained over {release['rounds']} federated round(s) at "
        f"{len(release['sites'])} site(s), compared with {results['real']['cases']} real cases."
    ]
    spent = [s["epsilon"] for s in release["sites"] if s.get("epsilon") is not None]
    if spent:
        lines.append(
            f"Each site's training was differentially private: the largest privacy loss is "
            f"epsilon {max(spent):.3g} (smaller is more private; under about 10 is usual)."
        )
    else:
        lines.append("The sites trained without differential privacy.")
    realism = results.get("realism", {})
    diversity = realism.get("diversity", {})
    real_div, synth_div = diversity.get("real", {}), diversity.get("synthetic", {})
    if real_div.get("computed") and synth_div.get("computed"):
        r, s = real_div["mean_pairwise_msssim"], synth_div["mean_pairwise_msssim"]
        verdict = (
            "more alike than real patients are: a sign the generator repeats itself"
            if s > r + 0.05
            else "about as varied as the real cases, or more"
        )
        lines.append(
            f"Synthetic cases resemble each other with MS-SSIM {s:.3f} against {r:.3f} "
            f"among real cases: they are {verdict}."
        )
    return lines


def _release_section(page: Page, results: dict[str, Any]) -> None:
    release = results["release"]
    page.heading("The release and its privacy")
    page.table(
        ["family", "model hash", "rounds", "cases", "sampler", "seed"],
        [
            [
                release["family"],
                release["model_hash"][:12],
                release["rounds"],
                release["cases"],
                f"{release['sampler']} ({release['sampling_steps']} steps)",
                release["seed"],
            ]
        ],
    )
    page.table(
        ["site", "epsilon", "delta"],
        [[s["name"], s.get("epsilon"), s.get("delta")] for s in release["sites"]],
    )


def _realism_section(page: Page, results: dict[str, Any]) -> None:
    realism = results.get("realism")
    page.heading("Realism")
    if realism is None or realism.get("computed") is False:
        page.missing("realism", (realism or {}).get("reason", "not asked for (evaluation.parts)"))
        return
    units = realism["mae_units"]
    for key, title in (
        ("paired_mae", f"paired MAE in the body ({units})"),
        ("paired_msssim", "paired MS-SSIM"),
    ):
        figure = realism[key]
        if not figure["computed"]:
            page.missing(title, figure["reason"])
            continue
        page.table(
            [title, "mean", "std", "min", "max"],
            [["all cases", figure["mean"], figure["std"], figure["min"], figure["max"]]],
        )
    diversity = realism["diversity"]
    page.table(
        ["set", "mean pairwise MS-SSIM (diversity: lower is more varied)"],
        [
            [name, d["mean_pairwise_msssim"] if d["computed"] else d["reason"]]
            for name, d in (("real", diversity["real"]), ("synthetic", diversity["synthetic"]))
        ],
    )
    settings = realism["msssim_settings"]
    page.paragraph(f"MS-SSIM settings for this volume size: {settings}", "note")
    if realism["paired_msssim"]["computed"]:
        figure = Figure(figsize=(5, 3))
        axes = figure.add_subplot()
        axes.hist(realism["paired_msssim"]["values"], bins=10, color="#377eb8")
        axes.set_xlabel("paired MS-SSIM (generated vs real, same label map)")
        axes.set_ylabel("cases")
        page.image(png(figure), "distribution of paired MS-SSIM")


def _gallery_section(
    page: Page, results: dict[str, Any], real: Sequence[EvalCase], synthetic: Sequence[EvalCase]
) -> None:
    page.heading("Real and synthetic cases side by side")
    rows = [
        GalleryRow(f"real {index + 1}", case.image, case.label, case.spacing)
        for index, case in enumerate(real[:GALLERY_CASES])
    ] + [
        GalleryRow(f"synthetic {case.case_id}", case.image, case.label, case.spacing)
        for case in synthetic[:GALLERY_CASES]
    ]
    windows: tuple[tuple[str, tuple[float, float]], ...]
    if results["modality"] == "ct":
        windows = (("soft-tissue window", CT_SOFT_TISSUE_WINDOW), ("bone window", CT_BONE_WINDOW))
    else:
        windows = (("release range", MRI_WINDOW),)
    for name, window in windows:
        page.heading(name, 3)
        page.image(triplanar_png(rows, window), f"real and synthetic cases, {name}")


def radiomics_report(page: Page, results: dict[str, Any]) -> None:
    """Radiomics: the four figures per structure beside the study's correlation, a scatter of
    feature means and a heat map of the per-feature distances."""
    section = results.get("radiomics", {})
    page.heading("Radiomics")
    if not section.get("structures"):
        page.missing("radiomics", section.get("reason", "not asked for (evaluation.parts)"))
        return
    study = section["study_means_correlation"]
    rows = []
    for name, entry in section["structures"].items():
        if not entry.get("computed"):
            rows.append([name, entry.get("reason", ""), None, None, None, study])
            continue
        rows.append(
            [
                name,
                entry["means_correlation"],
                entry["mean_wasserstein"],
                entry["frechet_radiomics_distance"],
                entry["classifier_auc"],
                study,
            ]
        )
    page.table(
        [
            "structure",
            "correlation of feature means",
            "mean Wasserstein (real SD units)",
            "Frechet radiomics distance",
            "classifier AUC (0.5 = indistinguishable)",
            "study's tumour correlation",
        ],
        rows,
    )
    for name, entry in section["structures"].items():
        failed = entry["failures"]["real"] + entry["failures"]["synthetic"]
        if failed:
            page.paragraph(
                f"{name}: {len(failed)} case(s) without features: "
                + "; ".join(f"{f['case']} ({f['kind']})" for f in failed),
                "missing",
            )
        if entry.get("computed"):
            page.image(_means_scatter(name, entry), f"feature means, {name}")


def _means_scatter(name: str, entry: dict[str, Any]) -> bytes:
    import numpy as np

    real, synthetic = entry["real_means"], entry["synthetic_means"]
    names = sorted(real)
    xs = np.array([real[n] for n in names])
    ys = np.array([synthetic[n] for n in names])
    figure = Figure(figsize=(9, 3.6))
    scatter, heat = figure.subplots(1, 2)
    signed_log = lambda v: np.sign(v) * np.log10(1 + np.abs(v))  # noqa: E731
    scatter.scatter(signed_log(xs), signed_log(ys), s=8, color="#377eb8")
    scatter.set_xlabel("real mean (signed log10)")
    scatter.set_ylabel("synthetic mean (signed log10)")
    scatter.set_title(f"{name}: feature means")
    distances = entry["wasserstein"]
    ordered = sorted(distances, key=distances.get, reverse=True)[:HEATMAP_FEATURES]
    heat.imshow(np.array([[distances[n]] for n in ordered]), aspect="auto", cmap="magma")
    heat.set_yticks(range(len(ordered)), [n.removeprefix("original_") for n in ordered], fontsize=6)
    heat.set_xticks([])
    heat.set_title("largest per-feature distances")
    return png(figure)


def utility_report(page: Page, results: dict[str, Any]) -> None:
    """Segmentation utility: the study's table and Dice box plots per arm."""
    section = results.get("utility", {})
    page.heading("Segmentation utility (trained on ..., tested on held-out real cases)")
    if not section.get("computed"):
        page.missing("segmentation utility", section.get("reason", "not asked for"))
        return
    page.paragraph(
        f"{section['real_training_cases']} real training and {section['real_test_cases']} real "
        f"test cases; {len(section['seeds'])} seed(s) per arm; the same recipe for every arm.",
        "note",
    )
    columns = list(section["study_table"][0])
    page.table(columns, [[row[c] for c in columns] for row in section["study_table"]])
    arms = {n: a for n, a in section["arms"].items() if a["computed"]}
    structures = list(section["structures"])
    figure = Figure(figsize=(3 + 2.5 * len(structures), 3.2))
    axes = figure.subplots(1, len(structures), squeeze=False)[0]
    for ax, structure in zip(axes, structures, strict=True):
        values = [arms[a]["structures"][structure]["dice_per_seed"] for a in arms]
        ax.boxplot(values, tick_labels=list(arms))
        ax.set_title(structure)
        ax.set_ylabel("Dice")
        ax.set_ylim(0, 1)
    page.image(png(figure), "Dice per arm and structure")
