"""Public priors: made from phantoms alone, recorded, loaded as the starting weights, refused
when they do not fit or were not trained on public data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_support import stacked, tiny_config

from client.training import train_site
from common.config import FedsynthConfig, Scalar, load_config, to_run_config
from common.data.dataset import CachedCases
from common.data.site import prepare_site
from common.errors import ConfigError, OutputExistsError
from common.models.checkpoint import (
    MODEL_FORMAT,
    CheckpointError,
    load_payload,
    save_model,
    weights_hash,
)
from common.models.prior import (
    SHIPPED_PRIORS,
    initial_model,
    prior_networks,
    prior_path,
    prior_record,
)
from common.models.registry import build_model
from common.release import release_settings
from simulations.phantoms import write_cohort
from simulations.presets import preset
from simulations.prior import TRAINED_ON, make_prior

PRIOR: dict[str, Scalar] = {
    "model.family": "diffusion",
    "model.sampling-steps": 2,
    "model.diffusion-steps": 20,
    "training.ema-decay": 0.9,
    "training.max-steps": 3,
    "training.local-epochs": 2,  # 2 x 2 batches of 3 cases, capped at 3 steps
    "training.batch-size": 2,
    "phantoms.cases-per-site": 3,
    "phantoms.anatomy-scale": 0.9,
    "phantoms.contrast-scale": 1.3,
}


def config_with(**overrides: Scalar) -> FedsynthConfig:
    return tiny_config(**{**PRIOR, **overrides})


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prior") / "tiny-prior.pt"
    make_prior(config_with(), out)
    return out


def test_a_prior_records_what_it_was_trained_on(prior_file: Path) -> None:
    payload = load_payload(prior_file, MODEL_FORMAT, "prior")
    record = payload["prior"]
    assert record["trained_on"] == TRAINED_ON
    assert record["steps"] == 3
    assert record["cases"] == 3
    assert record["phantoms"]["phantoms.anatomy-scale"] == 0.9
    assert record["phantoms"]["phantoms.contrast-scale"] == 1.3
    assert payload["run_config"]["privacy.enabled"] is False  # public data: no DP needed
    assert set(payload["networks"]) == {"generator"}  # one copy: the weight average
    assert payload["hash"] == weights_hash(payload["networks"])


def test_a_prior_keeps_the_weight_average_not_the_last_step() -> None:
    model = build_model(config_with())
    with torch.no_grad():
        for parameter in model.nets["generator"].parameters():
            parameter.add_(1.0)  # the trained network moved; its average did not
    kept = prior_networks(model)["generator"]
    averaged = model.averages["generator"].network.state_dict()
    assert set(kept) == set(model.nets["generator"].state_dict())
    for name, tensor in kept.items():
        torch.testing.assert_close(tensor, averaged[name])
    without_average = build_model(config_with(**{"training.ema-decay": 0.0}))
    for name, tensor in prior_networks(without_average)["generator"].items():
        torch.testing.assert_close(tensor, without_average.nets["generator"].state_dict()[name])


def test_making_a_prior_is_deterministic(prior_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.pt"
    make_prior(config_with(), again)
    first = load_payload(prior_file, MODEL_FORMAT, "prior")
    second = load_payload(again, MODEL_FORMAT, "prior")
    assert first["hash"] == second["hash"]


def test_training_starts_from_the_prior_average(prior_file: Path) -> None:
    config = config_with(**{"model.prior": str(prior_file)})
    model = initial_model(config)
    averaged = load_payload(prior_file, MODEL_FORMAT, "prior")["networks"]["generator"]
    for name, tensor in model.nets["generator"].state_dict().items():
        torch.testing.assert_close(tensor, averaged[name])
    for name, tensor in model.averages["generator"].network.state_dict().items():
        torch.testing.assert_close(tensor, averaged[name])
    assert float(model.averages["generator"].updates) == 0.0  # the average warms up again
    fresh = initial_model(config_with())  # no prior: the seeded random initialisation
    for name, tensor in build_model(config_with()).nets["generator"].state_dict().items():
        torch.testing.assert_close(fresh.nets["generator"].state_dict()[name], tensor)


def test_the_manifest_names_the_prior_without_its_folder(prior_file: Path) -> None:
    config = config_with(**{"model.prior": str(prior_file)})
    record = prior_record(config)
    assert record["name"] == "tiny-prior.pt"
    assert record["model_hash"] == load_payload(prior_file, MODEL_FORMAT, "prior")["hash"]
    assert record["trained_on"] == TRAINED_ON
    assert release_settings(config)["model.prior"] == "tiny-prior.pt"
    assert str(prior_file.parent) not in json.dumps(record)
    assert prior_record(config_with()) == {}


def test_a_run_started_from_the_prior_records_it_in_its_release(
    prior_file: Path, tmp_path: Path
) -> None:
    from server.sampling import release_from_run

    config = config_with(**{"model.prior": str(prior_file), "privacy.enabled": False})
    cohort = write_cohort(config, tmp_path / "sites")
    prepare_site(cohort.sites[0], tmp_path / "cache", config.data)
    train_site(config, tmp_path / "cache", tmp_path / "run", site_name="a", ledger_dir=tmp_path)
    release_from_run(tmp_path / "run", 1, tmp_path / "release")
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["prior"]["name"] == "tiny-prior.pt"
    assert manifest["prior"]["trained_on"] == TRAINED_ON
    assert manifest["run_config"]["model.prior"] == "tiny-prior.pt"
    assert str(tmp_path) not in json.dumps(manifest)


def test_prior_errors_say_what_to_do(prior_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.prior = 'nowhere\.pt': no such file"):
        initial_model(config_with(**{"model.prior": "nowhere.pt"}))
    with pytest.raises(ConfigError, match=r"is a diffusion model, but model\.family = 'gan'"):
        initial_model(config_with(**{"model.prior": str(prior_file), "model.family": "gan"}))
    with pytest.raises(ConfigError, match="was made for other network sizes"):
        initial_model(config_with(**{"model.prior": str(prior_file), "model.channels": "8,8"}))
    site_model = tmp_path / "site-model.pt"  # a model file without a prior record
    save_model(site_model, build_model(config_with()), config_with())
    with pytest.raises(CheckpointError, match="not a public prior"):
        initial_model(config_with(**{"model.prior": str(site_model)}))


def test_make_prior_refusals(prior_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"phantoms\.sites = 2"):
        make_prior(config_with(**{"phantoms.sites": 2}), tmp_path / "p.pt")
    with pytest.raises(ConfigError, match="trained from random weights"):
        make_prior(config_with(**{"model.prior": str(prior_file)}), tmp_path / "p.pt")
    with pytest.raises(OutputExistsError):
        make_prior(config_with(), prior_file)
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("name", sorted(SHIPPED_PRIORS))
def test_shipped_priors_fit_their_presets_and_were_made_by_the_prior_preset(name: str) -> None:
    """Each shipped prior loads into the presets that name it and records the public phantom
    profile of ``fedsynth prior --preset prior-ct``."""
    made_with = load_config(preset("prior-ct"))
    record = load_payload(prior_path(name), MODEL_FORMAT, "prior")["prior"]
    assert record["trained_on"] == TRAINED_ON
    recorded = load_config(record["phantoms"])  # settings added since: at their defaults

    def phantom_settings(config: FedsynthConfig) -> dict[str, object]:
        return {k: v for k, v in to_run_config(config).items() if k.startswith("phantoms.")}

    assert phantom_settings(recorded) == phantom_settings(made_with)
    users = [p for p in ("demo", "quality-ct-dp") if preset(p).get("model.prior") == name]
    assert users, f"no preset uses the shipped prior {name}"
    for user in users:
        initial_model(load_config(preset(user)))  # fits: same family and sizes


# -- the shipped prior has learned the anatomy, at the demo's size ---------------------------
BODY = -0.9  # prepared CT voxels above this are inside the body (air is -1)
TUMOUR, BONE = 1, 2


def anatomy(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean bone and tumour voxels per case, the body's share of the volume, and how much
    brighter bone is than the rest of the body."""
    body = images[:, 0] > BODY
    soft = body & (labels == 0)
    bone = labels == BONE
    contrast = images[:, 0][bone].mean() - images[:, 0][soft].mean() if bone.any() else 0.0
    return {
        "bone": float(bone.flatten(1).sum(1).double().mean()),
        "tumour": float((labels == TUMOUR).flatten(1).sum(1).double().mean()),
        "body": float(body.double().mean()),
        "bone_contrast": float(contrast),
    }


def like_real(synthetic: dict[str, float], real: dict[str, float]) -> bool:
    """Structure volumes and body within a factor 2 of the real ones, tumours drawn, bone
    at least half as bright against soft tissue as in the real cases."""
    return (
        0.5 < synthetic["bone"] / real["bone"] < 2.0
        and 0.5 < synthetic["body"] / real["body"] < 2.0
        and synthetic["tumour"] > 0.1 * real["tumour"]
        and synthetic["tumour"] < 10 * real["tumour"]
        and synthetic["bone_contrast"] > 0.5 * real["bone_contrast"]
    )


@pytest.mark.slow
def test_the_shipped_prior_draws_a_neck_at_the_demos_size(tmp_path: Path) -> None:
    """The demo starts from the shipped prior: at the demo's grid its samples (the prior's
    phantom profile is not the sites': smaller patients, stronger contrast) have bone, body
    and tumour volumes and a bone contrast like the demo sites' cases; an untrained model of
    the same sizes and a blank generator do not."""
    demo = load_config({**preset("demo"), "phantoms.cases-per-site": 6, "phantoms.sites": 1})
    cohort = write_cohort(demo, tmp_path / "sites")
    prepare_site(cohort.sites[0], tmp_path / "cache", demo.data)
    real = anatomy(*stacked(CachedCases(tmp_path / "cache", demo.model.spatial_dims)))
    generator = torch.Generator().manual_seed(3)
    learned = initial_model(demo).sample(4, generator)
    untrained = build_model(load_config({**preset("demo"), "model.prior": ""})).sample(
        4, torch.Generator().manual_seed(3)
    )
    scores = {
        "prior": anatomy(learned.image, learned.label),
        "untrained": anatomy(untrained.image, untrained.label),
        "blank": anatomy(-torch.ones_like(learned.image), torch.zeros_like(learned.label)),
    }
    print(real, scores)  # for the record
    assert like_real(scores["prior"], real), (real, scores)
    assert not like_real(scores["untrained"], real), scores
    assert not like_real(scores["blank"], real), scores
