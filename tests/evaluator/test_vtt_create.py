"""`vtt create`: a balanced, seeded, blinded study whose two sources differ only in content."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from vtt_support import CONFIG, World, make_study, make_world

from common.config import load_config
from common.errors import OutputExistsError
from evaluator.cases import EvaluationInputError, load_real
from evaluator.vtt.create import create_study, draw, parse_readers
from evaluator.vtt.render import read_case, write_case
from evaluator.vtt.study import (
    ADMIN,
    KEY_FILE,
    STUDY_FILE,
    TOKENS_FILE,
    StudyError,
    load_key,
    load_study,
)
from evaluator.vtt.tokens import token_digest
from simulations.cli import app

NIFTI_HEADER_BYTES = 352  # the 348-byte header and its 4-byte extension flag


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("vtt-world"))


def _origins(folder: Path) -> dict[str, list[str]]:
    key = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    by_source: dict[str, list[str]] = {"real": [], "synthetic": []}
    for entry in key.values():
        by_source[entry["source"]].append(entry["origin"])
    return {source: sorted(origins) for source, origins in by_source.items()}


def test_a_study_is_balanced_and_its_files_differ_only_in_content(
    world: World, tmp_path: Path
) -> None:
    created = make_study(world, tmp_path / "study", n=3)
    study = load_study(tmp_path / "study")
    key = load_key(tmp_path / "study")
    assert sorted(key.values()) == ["real"] * 3 + ["synthetic"] * 3
    assert sorted(study.cases) == sorted(key) == list(study.cases)
    assert all(len(c) == 12 and int(c, 16) >= 0 for c in study.cases)  # random hex ids
    files = [study.case_path(c) for c in study.cases]
    on_disk = sorted(p.name for p in (study.folder / "cases").iterdir())
    assert sorted(p.name for p in files) == on_disk
    assert len({p.stat().st_size for p in files}) == 1  # uncompressed: the same size
    headers = {p.read_bytes()[:NIFTI_HEADER_BYTES] for p in files}
    assert len(headers) == 1  # same size, spacing, origin, data type, every header field
    assert int(np.frombuffer(headers.pop()[70:72], "<i2")[0]) == 4  # NIfTI INT16
    volumes = [read_case(p) for p in files]
    assert all(v.shape == (16, 16, 16) for v in volumes)
    assert study.shape == (16, 16, 16)
    assert study.spacing == (12.5, 12.5, 12.5)
    assert created.study.cases == study.cases


def test_real_cases_are_prepared_on_the_release_grid_in_hounsfield_units(
    world: World, tmp_path: Path
) -> None:
    make_study(world, tmp_path / "study", n=4)
    study = load_study(tmp_path / "study")
    entries = json.loads((study.folder / KEY_FILE).read_text(encoding="utf-8"))
    real = load_real(world.real, CONFIG)
    for case_id, entry in entries.items():
        if entry["source"] == "real":
            position = int(entry["origin"].removeprefix("real-")) - 1
            expected = np.round(real[position].image)
            np.testing.assert_array_equal(read_case(study.case_path(case_id)), expected)


def test_nothing_in_the_study_file_tells_the_sources_apart(world: World, tmp_path: Path) -> None:
    created = make_study(world, tmp_path / "study")
    text = (tmp_path / "study" / STUDY_FILE).read_text(encoding="utf-8")
    origins = _origins(tmp_path / "study")
    assert not any(o in text for o in origins["real"] + origins["synthetic"])
    assert '"real"' not in text
    assert '"synthetic"' not in text
    assert "source" not in text
    assert not any(token in text for token in created.tokens.values())
    for reader in created.study.readers:
        assert reader.token_sha256 == token_digest(created.tokens[reader.name])
        assert sorted(reader.order) == sorted(created.study.cases)
    assert created.study.readers[0].order != created.study.readers[1].order


def test_the_draw_follows_the_seed_and_the_ids_and_tokens_do_not(
    world: World, tmp_path: Path
) -> None:
    first = make_study(world, tmp_path / "a")
    second = make_study(world, tmp_path / "b")
    assert _origins(tmp_path / "a") == _origins(tmp_path / "b")
    assert set(first.study.cases).isdisjoint(second.study.cases)
    assert set(first.tokens.values()).isdisjoint(second.tokens.values())
    other = create_study(
        world.real, world.release, 2, tmp_path / "c", ["ana"], overrides={"seed": 8}
    )
    assert _origins(tmp_path / "c") != _origins(tmp_path / "a")
    assert other.study.seed == 8
    assert draw(4, 2, 5, "real") == draw(4, 2, 5, "real") == sorted(draw(4, 2, 5, "real"))


def test_tokens_and_key_are_private_files(world: World, tmp_path: Path) -> None:
    created = make_study(world, tmp_path / "study")
    for name in (TOKENS_FILE, KEY_FILE):
        assert stat.S_IMODE((tmp_path / "study" / name).stat().st_mode) == 0o600
    lines = (tmp_path / "study" / TOKENS_FILE).read_text(encoding="utf-8").splitlines()
    rows = dict(line.split("\t") for line in lines if not line.startswith("#"))
    assert rows == created.tokens
    assert set(rows) == {ADMIN, "ana", "ben"}
    assert all(len(token) == 43 for token in rows.values())


def test_bad_requests_are_refused_and_write_nothing(world: World, tmp_path: Path) -> None:
    out = tmp_path / "study"
    with pytest.raises(StudyError, match="only 4 real cases are usable"):
        make_study(world, out, n=5)
    with pytest.raises(StudyError, match="at least one case"):
        make_study(world, out, n=0)
    assert not out.exists()
    with pytest.raises(EvaluationInputError, match="no such folder"):
        create_study(tmp_path / "nowhere", world.release, 1, out, ["ana"])
    with pytest.raises(EvaluationInputError, match="no manifest"):
        create_study(world.real, tmp_path, 1, out, ["ana"])
    make_study(world, out, n=1)
    with pytest.raises(OutputExistsError):
        make_study(world, out, n=1)
    assert parse_readers(" ana , ben,") == ["ana", "ben"]
    for bad, message in (
        ("", "at least one"),
        ("a b", "not a reader name"),
        ("admin", "not"),
        ("ana,ana", "more than once"),
        ("x" * 41, "at most 40"),
    ):
        with pytest.raises(StudyError, match=message):
            parse_readers(bad)


def test_the_command_prints_every_link_once_and_refuses_with_a_message(
    world: World, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "study"
    args = ["vtt", "create", "--real", str(world.real), "--synthetic", str(world.release)]
    result = runner.invoke(app, [*args, "--n", "2", "--out", str(out), "--readers", "ana"])
    assert result.exit_code == 0, result.output
    tokens = dict(
        line.split("\t")
        for line in (out / TOKENS_FILE).read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    )
    for token in tokens.values():
        assert result.output.count(f"/login#{token}") == 1
    refused = runner.invoke(app, [*args, "--n", "9", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    assert "only 4 real cases" in refused.output
    assert "Traceback" not in refused.output


def test_a_damaged_study_folder_is_refused_naming_the_file(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    make_study(world, folder, n=1)
    data = json.loads((folder / STUDY_FILE).read_text(encoding="utf-8"))
    (folder / STUDY_FILE).write_text(json.dumps({**data, "format": "other/9"}))
    with pytest.raises(StudyError, match=r"study\.json: format 'other/9'"):
        load_study(folder)
    del data["readers"]
    (folder / STUDY_FILE).write_text(json.dumps(data))
    with pytest.raises(StudyError, match="incomplete study file"):
        load_study(folder)
    (folder / STUDY_FILE).write_text("{not json")
    with pytest.raises(StudyError, match="unreadable study file"):
        load_study(folder)
    (folder / KEY_FILE).write_text(json.dumps({"abc": {"source": "maybe"}}))
    with pytest.raises(StudyError, match=r"\['abc'\] are neither real nor synthetic"):
        load_key(folder)


def test_mri_cases_are_written_as_float32_on_the_release_grid(tmp_path: Path) -> None:
    mri = load_config({"data.modality": "mri", "data.target-shape": "10,9,8"}).data
    image = np.arange(720, dtype=np.float64).reshape(8, 9, 10) * 1.25
    write_case(image, mri, tmp_path / "case.nii")
    header = (tmp_path / "case.nii").read_bytes()[:NIFTI_HEADER_BYTES]
    assert int(np.frombuffer(header[70:72], "<i2")[0]) == 16  # NIfTI FLOAT32
    np.testing.assert_array_equal(read_case(tmp_path / "case.nii"), image.astype(np.float32))
    ct = load_config({"data.target-shape": "10,9,8"}).data
    write_case(np.full((8, 9, 10), 40000.4), ct, tmp_path / "ct.nii")
    assert read_case(tmp_path / "ct.nii").max() == 32767  # clipped into int16, not wrapped
