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
STUDY_CORRELATION_STRUCTURE = "tumour"
"""The structure the study's correlation of feature means was reported for."""
SET_COLOURS = {"real": "#4daf4a", "synthetic": "#e41a1c"}
"""Each set's colour in the report's distributions."""
DIVERSITY_MARGIN = 0.05
"""Synthetic mean pairwise MS-SSIM this far above the real one reads as a repeating generator."""
UNSTRUCTURED_FRACTION = 0.5
"""Synthetic mean pairwise MS-SSIM under this fraction of the real one reads as no shared
anatomy (noise-like cases)."""

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


def _trained_where(release: dict[str, Any]) -> str:
    """'trained at one site' for a local run, 'trained over 3 federated rounds at 2 sites'."""
    sites, rounds = len(release["sites"]), int(release["rounds"])
    if sites == 1 and rounds == 1:
        return "trained at one site"
    return (
        f"trained over {rounds} federated round{'s' * (rounds != 1)} at "
        f"{sites} site{'s' * (sites != 1)}"
    )


def plain_summary(results: dict[str, Any]) -> list[str]:
    """A few sentences a non-specialist can read."""
    release = results["release"]
    lines = [
        f"{release['cases']} synthetic {results['modality'].upper()} cases made by a "
        f"{release['family']} model {_trained_where(release)}, compared with "
        f"{results['real']['cases']} real cases."
    ]
    spent = [s["epsilon"] for s in release["sites"] if s.get("epsilon") is not None]
    if spent:
        lines.append(
            f"Each site's training was differentially private: the largest privacy loss is "
            f"epsilon {max(spent):.3g} (smaller is more private; under about 10 is usual)."
        )
    else:
        lines.append("The sites trained without differential privacy.")
    lines.extend(_diversity_words(results))
    lines.extend(_paired_words(results))
    lines.extend(_radiomics_words(results))
    lines.extend(_utility_words(results))
    return lines


def _diversity_words(results: dict[str, Any]) -> list[str]:
    diversity = results.get("realism", {}).get("diversity", {})
    real, synthetic = diversity.get("real", {}), diversity.get("synthetic", {})
    if not (real.get("computed") and synthetic.get("computed")):
        return []
    r, s = real["mean_pairwise_msssim"], synthetic["mean_pairwise_msssim"]
    if s > r + DIVERSITY_MARGIN:
        verdict = "more alike than real patients are: a sign the generator repeats itself"
    elif s < r * UNSTRUCTURED_FRACTION:
        verdict = (
            "far less alike than real patients are, who share their anatomy: the synthetic "
            "cases lack common structure, as noise would (look at the gallery)"
        )
    else:
        verdict = "about as varied as the real cases"
    return [
        f"Synthetic cases resemble each other with MS-SSIM {s:.3f} against {r:.3f} among real "
        f"cases: they are {verdict}."
    ]


def _paired_words(results: dict[str, Any]) -> list[str]:
    realism = results.get("realism", {})
    mae = realism.get("paired_mae", {})
    if not mae.get("computed"):
        return []
    return [
        f"Images generated for the real cases' label maps differ from the real images by "
        f"{mae['mean']:.3g} {realism['mae_units']} on average inside the body (0 would be "
        "identical)."
    ]


def _radiomics_words(results: dict[str, Any]) -> list[str]:
    structures = results.get("radiomics", {}).get("structures", {})
    computed = {name: entry for name, entry in structures.items() if entry.get("computed")}
    if not computed:
        return []
    aucs = ", ".join(f"{name} {entry['classifier_auc']:.2f}" for name, entry in computed.items())
    correlations = ", ".join(
        f"{name} {entry['means_correlation']:.2f}" for name, entry in computed.items()
    )
    study = results["radiomics"]["study_means_correlation"]
    return [
        f"A classifier tells synthetic from real structures by their radiomics features with "
        f"AUC {aucs} (0.5: it cannot tell them apart; 1: it always can).",
        f"The correlation of feature means between real and synthetic cases, the study's figure "
        f"({study} for its tumours), is {correlations} here. Read it with care: features span "
        "many orders of magnitude (volumes, energies beside ratios), so even very different "
        "cases correlate highly; the per-feature distances and the classifier say more.",
    ]


def _utility_words(results: dict[str, Any]) -> list[str]:
    utility = results.get("utility", {})
    if not utility.get("computed"):
        return []
    lines = []
    for row in utility["study_table"]:
        synthetic, ratio = row["synthetic_dice"], row["synthetic_over_real_dice"]
        if not isinstance(synthetic, float):
            continue
        real = row.get("real_dice")
        versus = "" if not isinstance(ratio, float) else f", {ratio:.0%} of real-data training"
        if ratio is None and isinstance(real, float):
            versus = (
                f"; real-data training reached only Dice {real:.3f}, so it did not learn "
                f"{row['structure']} and the synthetic/real ratio is undefined"
            )
        study = row["study_synthetic_dice"]
        beside = "" if study is None else f" (the study: {study})"
        lines.append(
            f"A segmentation model trained on synthetic cases only finds {row['structure']} in "
            f"held-out real cases with Dice {synthetic:.3f}{versus}{beside}."
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
    page.paragraph(msssim_settings_words(realism["msssim_settings"]), "note")
    if realism["paired_msssim"]["computed"]:
        figure = Figure(figsize=(5, 3))
        axes = figure.add_subplot()
        axes.hist(realism["paired_msssim"]["values"], bins=10, color="#377eb8")
        axes.set_xlabel("paired MS-SSIM (generated vs real, same label map)")
        axes.set_ylabel("cases")
        page.image(png(figure), "distribution of paired MS-SSIM")
    within = {name: d["pairwise_msssim"] for name, d in diversity.items() if d["computed"]}
    if within:
        figure = Figure(figsize=(5, 3))
        axes = figure.add_subplot()
        for name, values in within.items():
            colour = SET_COLOURS[name]
            axes.hist(values, bins=20, range=(0.0, 1.0), alpha=0.6, color=colour, label=name)
        axes.set_xlabel("MS-SSIM of a pair of cases within one set")
        axes.set_ylabel("pairs")
        axes.legend()
        page.image(png(figure), "distribution of within-set MS-SSIM (diversity)")


def msssim_settings_words(settings: dict[str, Any]) -> str:
    """The recorded MS-SSIM settings as a sentence (evaluation.json has them all)."""
    weights = ", ".join(f"{w:.3f}" for w in settings["weights"])
    low, high = settings["window"]
    return (
        f"MS-SSIM settings for this volume size: {settings['scales']} scales weighted {weights}; "
        f"{settings['kernel']} kernel of {settings['kernel_size']} voxels (sigma "
        f"{settings['kernel_sigma']:.2f}); intensities clipped to {low:g}..{high:g} (data range "
        f"{settings['data_range']:g}); K1 {settings['k1']}, K2 {settings['k2']}."
    )


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

    def study_of(structure: str) -> float | None:
        return study if structure == STUDY_CORRELATION_STRUCTURE else None

    rows = []
    for name, entry in section["structures"].items():
        if not entry.get("computed"):
            rows.append([name, entry.get("reason", ""), None, None, None, study_of(name)])
            continue
        rows.append(
            [
                name,
                entry["means_correlation"],
                entry["mean_wasserstein"],
                entry["frechet_radiomics_distance"],
                entry["classifier_auc"],
                study_of(name),
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
    page.table(
        [column_title(c) for c in columns],
        [[row[c] for c in columns] for row in section["study_table"]],
    )
    page.paragraph(_unmatched_note(section), "note")
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


def column_title(key: str) -> str:
    """A study-table key as a column title: ``real+synthetic_hd95_mm`` -> ``real+synthetic
    HD95 (mm)``."""
    words = key.replace("hd95_mm", "HD95 (mm)").replace("dice", "Dice").replace("_std", " SD")
    return words.replace("_", " ")


def _unmatched_note(section: dict[str, Any]) -> str:
    """What HD95 covers, and how many test cases it could not cover per arm and structure."""
    counts = [
        f"{arm} {structure} {sum(stats['unmatched_cases_per_seed'])}"
        for arm, entry in section["arms"].items()
        if entry["computed"]
        for structure, stats in entry["structures"].items()
    ]
    return (
        "HD95 (mm) is averaged over the test cases where both the prediction and the truth "
        "hold the structure. Cases where exactly one holds it (missed, or found where there is "
        "none; Dice 0, no HD95), summed over seeds: " + ", ".join(counts) + "."
    )
