"""The README's main job on embedded phantoms: three hospitals train one generator together.

Phantom head-and-neck CT for each simulated hospital, a few rounds of federated training with
DP-SGD at every site (Flower's simulation engine), the release sampled from the global model, a
picture of real and synthetic cases side by side, and a short summary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from rich.table import Table

from common.cli.support import console, progress, warn
from common.config import FedsynthConfig
from common.data.cache import read_cache
from common.data.nnunet import case_ids, case_paths
from common.reports.figures import CT_SOFT_TISSUE_WINDOW, GalleryRow, write_triplanar
from common.run_state import RUN_STATE_FILE, refuse_if_in_use
from server.federation import RoundReport
from simulations.simulate import (
    SERVER_DIR,
    SITES_DIR,
    STATE_DIR,
    SimulationOutcome,
    simulate,
)

GALLERY_FILE = "real-vs-synthetic.png"
DEMO_PARTS = (SITES_DIR, STATE_DIR, SERVER_DIR, GALLERY_FILE, RUN_STATE_FILE)
"""What a demo writes in its folder (and replaces with --overwrite); nothing else is touched."""
GALLERY_CASES = 2
"""Synthetic cases shown beside one real case per site."""


def run_demo(config: FedsynthConfig, out: Path, *, overwrite: bool) -> SimulationOutcome:
    """Simulate the federation into ``out``, draw the gallery, print the summary."""
    if overwrite:
        refuse_if_in_use(out)  # never replace the folder of a demo still running
        for part in DEMO_PARTS:
            target = out / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    outcome = simulate_with_progress(config, out)
    gallery = out / GALLERY_FILE
    write_gallery(out / STATE_DIR / "cache", outcome.release, config, gallery)
    print_outcome(outcome)
    console.print(f"real (top) and synthetic (bottom) cases, three planes: {gallery}")
    return outcome


def simulate_with_progress(
    config: FedsynthConfig, out: Path, *, sites_dir: Path | None = None, resume: bool = False
) -> SimulationOutcome:
    """:func:`simulate` with a progress bar over the rounds."""
    with progress() as bar:
        task = bar.add_task("federated rounds", total=config.federation.num_rounds)

        def advance(report: RoundReport) -> None:
            bar.update(task, completed=report.round)

        return simulate(
            config, out, sites_dir=sites_dir, resume=resume, on_round=advance, on_notice=warn
        )


def write_gallery(caches: Path, release: Path, config: FedsynthConfig, path: Path) -> None:
    """Tri-planar views of one real case per site, then the first synthetic cases."""
    rows = []
    for cache in sorted(p for p in caches.iterdir() if p.is_dir()):
        _, cases = read_cache(cache)
        case = cases[0]
        image = case.intensity.inverse(case.image) if config.data.modality == "ct" else case.image
        rows.append(GalleryRow(f"real: {cache.name}", image, case.label, case_spacing(config)))
    for case_id in case_ids(release)[:GALLERY_CASES]:
        image_path, label_path = case_paths(release, case_id)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path))).astype(np.float32)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
        rows.append(GalleryRow(f"synthetic: {case_id}", image, label, case_spacing(config)))
    window = CT_SOFT_TISSUE_WINDOW if config.data.modality == "ct" else (0.0, 1000.0)
    write_triplanar(rows, window, path)


def case_spacing(config: FedsynthConfig) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z) of prepared and released cases."""
    x, y, z = config.data.target_spacing
    return (x, y, z)


def print_outcome(outcome: SimulationOutcome) -> None:
    """Where the release is, each site's epsilon, and the time it took."""
    summary = outcome.summary
    table = Table(title=f"fedsynth: {summary.family}, {summary.rounds} rounds")
    for column in ("site (pseudonym)", "epsilon", "delta"):
        table.add_column(column)
    for site in summary.sites:
        epsilon = "no DP-SGD" if site.epsilon is None else f"{site.epsilon:.3g}"
        delta = "" if site.delta is None else f"{site.delta:g}"
        table.add_row(site.name, epsilon, delta)
    console.print(table)
    console.print(
        f"{outcome.sites} sites, {summary.steps} local steps in all; model hash "
        f"{summary.model_hash[:12]} (kept by the operator in {outcome.server_dir})"
    )
    console.print(f"release (synthetic cases only): {outcome.release}")
    console.print(f"done in {outcome.seconds:.1f} s")
