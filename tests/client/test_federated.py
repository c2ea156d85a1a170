"""A site's federated round: where its data is, what it refuses, what its errors reveal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from federation_support import smoke_config
from federation_support import task_identity as task_identity  # fixture
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client.app import AUDIT_REFUSED_CODE, REFUSED_CODE, audit, train
from client.audit_round import audit_round
from client.federated import RoundRefusedError, failure_reason, proximal_pull, train_round
from client.site_data import DEFAULT_LEDGER_DIR, SiteFiles, ensure_prepared, site_files
from common.audit.exchange import CANDIDATES_KEY, candidates_content
from common.audit.search import CaseSet
from common.config import FedsynthConfig
from common.data.problems import SiteDataError
from common.errors import ConfigError, DataError
from common.exchange import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, model_arrays, settings_record
from common.models.registry import build_model
from common.privacy.ledger import BudgetExceededError
from simulations.phantoms import write_cohort


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_cohort(smoke_config(), tmp_path / "sites").sites[0]


def _content(config: FedsynthConfig, server_round: int = 1) -> RecordDict:
    return RecordDict(
        {
            ARRAYS_KEY: model_arrays(build_model(config)),
            CONFIG_KEY: settings_record(config, server_round, "run-1"),
        }
    )


def _node(site: Path, tmp_path: Path) -> dict[str, object]:
    return {"data-path": str(site), "ledger-dir": str(tmp_path / "ledger")}


def test_a_deployed_site_names_its_data_and_gets_default_places(tmp_path: Path) -> None:
    files = site_files({"data-path": str(tmp_path / "h")}, smoke_config())
    assert files.data == tmp_path / "h"
    assert files.ledger_dir == DEFAULT_LEDGER_DIR
    assert files.cache.parent.name == "cache"  # ~/.fedsynth/cache/<hash of the data path>
    other = site_files({"data-path": str(tmp_path / "k")}, smoke_config())
    assert other.cache != files.cache
    given = site_files(
        {"data-path": "d", "cache-dir": str(tmp_path / "c"), "ledger-dir": str(tmp_path / "l")},
        smoke_config(),
    )
    assert (given.cache, given.ledger_dir) == (tmp_path / "c", tmp_path / "l")


def test_a_virtual_site_is_the_partition_s_folder_of_the_sites_dir(tmp_path: Path) -> None:
    for name in ("b-site", "a-site", "c-site"):
        (tmp_path / "sites" / name).mkdir(parents=True)
    (tmp_path / "sites" / "notes.txt").write_text("not a site")
    config = smoke_config(**{"simulation.sites-dir": str(tmp_path / "sites")})
    files = site_files({"partition-id": 1}, config)
    assert files.data == tmp_path / "sites" / "b-site"  # sorted: a, b, c
    assert files.cache == tmp_path / "sites-state" / "cache" / "b-site"
    assert files.ledger_dir == tmp_path / "sites-state" / "ledger" / "b-site"
    with pytest.raises(ConfigError, match="virtual site 3 has no folder"):
        site_files({"partition-id": 3}, config)


def test_a_site_without_data_is_told_which_setting_to_give() -> None:
    with pytest.raises(ConfigError, match="data-path") as caught:
        site_files({}, smoke_config())
    assert "simulation.sites-dir" in str(caught.value)
    with pytest.raises(ConfigError, match="data-path"):
        site_files({"partition-id": 0}, smoke_config())


def test_the_cache_is_prepared_once_and_again_when_data_settings_change(
    site: Path, tmp_path: Path
) -> None:
    files = SiteFiles(site, tmp_path / "cache", tmp_path / "ledger")
    ensure_prepared(files, smoke_config())
    index = tmp_path / "cache" / "index.json"
    first = index.stat().st_mtime_ns
    ensure_prepared(files, smoke_config())
    assert index.stat().st_mtime_ns == first  # up to date: not prepared again
    ensure_prepared(files, smoke_config(**{"data.ct-window-max": 1500.0}))
    settings = json.loads(index.read_text())["settings"]
    assert settings["data.ct-window-max"] == 1500.0
    raw = json.loads(index.read_text())
    index.write_text(json.dumps({**raw, "case_fingerprints": {}}))  # an older fedsynth's cache
    ensure_prepared(files, smoke_config(**{"data.ct-window-max": 1500.0}))
    assert len(json.loads(index.read_text())["case_fingerprints"]) == 2  # prepared again


def test_a_round_replies_with_the_model_s_arrays_and_charges_the_ledger(
    site: Path, tmp_path: Path
) -> None:
    config = smoke_config()
    reply = train_round(_content(config), _node(site, tmp_path), "attempt-1")  # type: ignore[arg-type]
    assert set(reply.keys()) == {ARRAYS_KEY, METRICS_KEY}
    metrics = reply[METRICS_KEY]
    assert metrics["num-examples"] == 2
    assert metrics["server-round"] == 1
    assert metrics["steps"] == 2
    assert 0 < float(metrics["epsilon"]) <= 8.0  # type: ignore[arg-type]
    (ledger,) = (tmp_path / "ledger").glob("*.json")
    runs = json.loads(ledger.read_text())["runs"]
    assert [run["run_id"] for run in runs] == ["run-1/round-1/attempt-1"]
    train_round(_content(config), _node(site, tmp_path), "attempt-2")  # type: ignore[arg-type]
    assert len(json.loads(ledger.read_text())["runs"]) == 2  # a repeated round costs again


def test_a_round_beyond_the_budget_is_refused_before_training(site: Path, tmp_path: Path) -> None:
    config = smoke_config(**{"privacy.target-epsilon": 0.0, "privacy.budget-epsilon": 0.5})
    with pytest.raises(RoundRefusedError) as caught:
        train_round(_content(config), _node(site, tmp_path), "a")  # type: ignore[arg-type]
    assert caught.value.reason.startswith("privacy budget: the planned rounds would bring 2 of 2")
    assert "over the site's budget 0.5; the most spent from epsilon 0 to" in caught.value.reason
    assert str(tmp_path) not in caught.value.reason
    charged = [json.loads(p.read_text())["runs"] for p in (tmp_path / "ledger").glob("*.json")]
    assert charged in ([], [[]])  # nothing was charged


def test_a_round_that_would_not_fit_in_memory_is_refused_before_the_ledger(
    site: Path, tmp_path: Path
) -> None:
    config = smoke_config(**{"training.memory-limit-gib": 0.01})
    with pytest.raises(RoundRefusedError) as caught:
        train_round(_content(config), _node(site, tmp_path), "a")  # type: ignore[arg-type]
    assert caught.value.reason.startswith("memory: training the diffusion model on 16x16x16")
    assert "training.memory-limit-gib = 0.01" in caught.value.reason
    assert str(tmp_path) not in caught.value.reason
    assert not (tmp_path / "ledger").exists()  # no ledger opened, nothing charged


def _candidates(config: FedsynthConfig) -> RecordDict:
    """An audit message's content: two blank candidates on the run's grid."""
    x, y, z = config.data.target_shape
    blank = CaseSet(torch.zeros(2, z, y, x), torch.zeros(2, z, y, x, dtype=torch.uint8))
    return candidates_content(blank, config, "run-1")


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("kind", ["train", "query.audit"])
def test_the_client_app_answers_a_refused_message_with_an_error_naming_no_file(
    tmp_path: Path, kind: str
) -> None:
    """A train round and the federated audit alike: the site's data is unreadable."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "x_image.nii.gz").write_bytes(b"garbage")
    config = smoke_config()
    content = _content(config) if kind == "train" else _candidates(config)
    message = Message(content, dst_node_id=7, message_type=kind)
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-path": str(tmp_path / "site"), "ledger-dir": str(tmp_path / "l")},
        state=RecordDict(),
        run_config={},
    )
    reply = (train if kind == "train" else audit)(message, context)
    assert reply.has_error()
    assert reply.error.code == (REFUSED_CODE if kind == "train" else AUDIT_REFUSED_CODE)
    assert reply.error.reason.startswith("site data problem")
    assert str(tmp_path) not in reply.error.reason
    assert "x_image" not in reply.error.reason


def test_an_audit_message_without_candidates_is_refused_as_an_audit(
    site: Path, tmp_path: Path
) -> None:
    content = _candidates(smoke_config())
    del content[CANDIDATES_KEY]
    with pytest.raises(RoundRefusedError, match="bad audit message: an audit message needs"):
        audit_round(content, _node(site, tmp_path))  # type: ignore[arg-type]
    assert not (tmp_path / "ledger").exists()


def test_a_train_message_without_settings_is_refused(site: Path, tmp_path: Path) -> None:
    content = RecordDict({ARRAYS_KEY: model_arrays(build_model(smoke_config()))})
    with pytest.raises(RoundRefusedError, match="bad train message"):
        train_round(content, _node(site, tmp_path), "a")  # type: ignore[arg-type]
    content = RecordDict(
        {
            ARRAYS_KEY: model_arrays(build_model(smoke_config())),
            CONFIG_KEY: ConfigRecord({"server-round": 1, "federation-run-id": "r", "nope": 1}),
        }
    )
    with pytest.raises(RoundRefusedError, match="bad train message: unknown setting"):
        train_round(content, _node(site, tmp_path), "a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BudgetExceededError(Path("/h/l.json"), 1.0, 12.0, 10.0, 1e-5), "privacy budget"),
        (DataError(Path("/h/p1.nii.gz"), "unreadable", "bad", "hint"), "site data problem"),
        (SiteDataError(Path("/h"), [], "fix /h"), "site data problem"),
        (OSError("/h/secret: disk full"), "site error (OSError)"),
    ],
)
def test_failure_reasons_name_the_kind_never_the_file(error: Exception, expected: str) -> None:
    reason = failure_reason(error)
    assert reason.startswith(expected)
    assert "/h" not in reason


def test_the_proximal_pull_moves_each_weight_towards_the_global_one() -> None:
    model = build_model(smoke_config(**{"training.learning-rate": 0.1}))
    name = next(iter(model.nets))
    parameters = dict(model.nets[name].named_parameters())
    key = next(iter(parameters))
    with torch.no_grad():
        parameters[key].fill_(1.0)
    global_state = {
        n: {k: torch.zeros_like(p) for k, p in net.named_parameters()}
        for n, net in model.nets.items()
    }
    proximal_pull(model, global_state, mu=0.5)
    lr = model.optimizers[name].param_groups[0]["lr"]
    expected = 1.0 - lr * 0.5 * 1.0  # w - lr * mu * (w - w_global)
    assert torch.allclose(parameters[key], torch.full_like(parameters[key], expected))


def test_a_round_takes_its_place_in_the_whole_training_schedule(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 2 of 3, 2 steps per round: the learning-rate schedule runs over 6 steps and
    this round starts at step 2, as a centralised run of 6 steps would."""
    import client.federated as federated

    seen: dict[str, object] = {}
    real_train_local = federated.train_local

    def spy(*args: object, **kwargs: object) -> object:
        seen["schedule"] = kwargs["schedule"]
        return real_train_local(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(federated, "train_local", spy)
    config = smoke_config(**{"federation.num-rounds": 3, "privacy.enabled": False})
    train_round(_content(config, server_round=2), _node(site, tmp_path), "attempt")
    assert seen["schedule"] == (2, 6)
