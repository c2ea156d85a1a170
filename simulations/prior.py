"""``fedsynth prior``: train a public prior on phantoms alone, for DP training to start from.

The prior's cohort is drawn by fedsynth's public phantom generator with ``config.phantoms``
(presets give it a profile unlike any site's: another population size, tissue contrasts,
scanner noise and resolution, tumour sizes). No site's data is read, so the prior costs no
privacy and may be shipped with fedsynth and sent to every site. The file is a model file with
a ``prior`` record of exactly what it was trained on.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from client.training import StepCallback, train_site
from common.config import FedsynthConfig, to_run_config
from common.data.site import prepare_site
from common.errors import ConfigError, OutputExistsError
from common.models.checkpoint import load_model
from common.models.prior import save_prior
from common.runs import MODEL_FILE
from simulations.phantoms import write_cohort

PRIOR_SITE = "public-prior"
TRAINED_ON = "public phantoms drawn by fedsynth's phantom generator; no site data"


def prior_provenance(config: FedsynthConfig, steps: int) -> dict[str, Any]:
    """What a prior file records of its training: the phantom cohort's settings and the steps."""
    settings = to_run_config(config)
    return {
        "trained_on": TRAINED_ON,
        "modality": config.data.modality,
        "cases": config.phantoms.sites * config.phantoms.cases_per_site,
        "phantoms": {k: v for k, v in settings.items() if k.startswith("phantoms.")},
        "seed": config.seed,
        "steps": steps,
    }


def make_prior(
    config: FedsynthConfig,
    out: Path,
    *,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train a prior on a fresh phantom cohort of ``config.phantoms`` and write it to ``out``
    (a single file); returns its provenance record.

    Raises:
        ConfigError: ``model.prior`` is set (a prior starts from random weights).
        OutputExistsError: ``out`` exists and ``overwrite`` is off.
    """
    if config.model.prior:
        raise ConfigError(
            f"model.prior = {config.model.prior!r}: a prior is trained from random weights; "
            "set model.prior = ''"
        )
    if config.phantoms.sites != 1:
        raise ConfigError(
            f"phantoms.sites = {config.phantoms.sites}: a prior trains on one phantom cohort; "
            "set phantoms.sites = 1 (and phantoms.cases-per-site to the cases wanted)"
        )
    if out.exists() and not overwrite:
        raise OutputExistsError(out, "choose another --out or pass --overwrite")
    public = replace(config, privacy=replace(config.privacy, enabled=False))
    with tempfile.TemporaryDirectory(prefix="fedsynth-prior-") as scratch:
        work = Path(scratch)
        cohort = write_cohort(public, work / "phantoms")
        cache = work / "cache"
        prepare_site(cohort.sites[0], cache, public.data)
        summary = train_site(
            public,
            cache,
            work / "run",
            site_name=PRIOR_SITE,
            ledger_dir=work / "ledger",
            on_step=on_step,
        )
        model, _ = load_model(work / "run" / MODEL_FILE)
    provenance = prior_provenance(public, summary.steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_prior(out, model, public, provenance)
    return provenance
