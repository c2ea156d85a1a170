"""`vtt create`: a balanced, seeded, blinded study whose two sources differ only in content."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from vtt_support import CONFIG, World, make_study, make_world, voxels

from common.config import load_config
from common.errors import OutputExistsError
from evaluator.cases import EvaluationInputError, load_real, load_release
from evaluator.evaluate import ProgressEvent
from evaluator.vtt.create import CHECK_STEP, WRITE_STEP, create_study, draw, parse_readers
from evaluator.vtt.render import write_case, write_labels
from evaluator.vtt.study import (
    ADMIN,
    KEY_FILE,
    LABELS_DIR,
    STUDY_FILE,
    TOKENS_FILE,
    StudyError,
    load_key,
    load_study,
)
from evaluator.vtt.tokens import token_digest
from simulations.cli import app

NIFTI_HEADER_BYTES = 352  # the 348-byte header and its 4-byte extension flag
NIFTI_UINT8, NIFTI_INT16, NIFTI_FLOAT32 = 2, 4, 16  # the header's datatype codes (bytes 70-71)


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
    assert int(np.frombuffer(headers.pop()[70:72], "<i2")[0]) == NIFTI_INT16
    volumes = [voxels(p) for p in files]
    assert all(v.shape == (16, 16, 16) for v in volumes)
    assert study.shape == (16, 16, 16)
    assert study.spacing == (12.5, 12.5, 12.5)
    assert created.study.cases == study.cases
    assert study.labels is False  # as in the study: readers judge images only
    assert not (study.folder / LABELS_DIR).exists()


def test_a_study_with_label_maps_writes_them_alike_for_both_sources(
    world: World, tmp_path: Path
) -> None:
    make_study(world, tmp_path / "study", n=2, labels=True)
    study = load_study(tmp_path / "study")
    assert study.labels is True
    files = [study.labels_path(c) for c in study.cases]
    assert sorted(p.name for p in (study.folder / LABELS_DIR).iterdir()) == sorted(
        p.name for p in files
    )
    assert {p.stat().st_size for p in files} == {NIFTI_HEADER_BYTES + 16**3}  # one byte a voxel
    headers = {p.read_bytes()[:NIFTI_HEADER_BYTES] for p in files}
    assert len(headers) == 1
    assert int(np.frombuffer(headers.pop()[70:72], "<i2")[0]) == NIFTI_UINT8
    entries = json.loads((study.folder / KEY_FILE).read_text(encoding="utf-8"))
    real = load_real(world.real, CONFIG)
    released = {case.case_id: case for case in load_release(world.release, CONFIG)}
    for case_id, entry in entries.items():
        if entry["source"] == "real":
            expected = real[int(entry["origin"].removeprefix("real-")) - 1].label
        else:
            expected = released[entry["origin"]].label
            assert set(np.unique(expected)) == {0, 1, 2}  # the release's tumour and bone blocks
        np.testing.assert_array_equal(voxels(study.labels_path(case_id)), expected)


def test_creating_a_study_reports_each_case_checked_and_written(
    world: World, tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    create_study(world.real, world.release, 2, tmp_path / "s", ["ana"], on_progress=events.append)
    checked = [(CHECK_STEP, done, 0) for done in range(5)]  # 4 real cases, no total known
    written = [(WRITE_STEP, done, 4) for done in range(5)]  # 2 real + 2 synthetic
    assert [(e.step, e.done, e.total) for e in events] == checked + written


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
            np.testing.assert_array_equal(voxels(study.case_path(case_id)), expected)


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
    lines = result.output.splitlines()
    # off a terminal, progress lines: the check counted, the writing at each tenth of 4
    assert [line.split(" (")[0] for line in lines if line.startswith(CHECK_STEP)] == [
        f"{CHECK_STEP}: started",
        f"{CHECK_STEP}: 4/4",
    ]
    assert [line.split(" (")[0] for line in lines if line.startswith(WRITE_STEP)] == [
        f"{WRITE_STEP}: started",
        *(f"{WRITE_STEP}: {done}/4" for done in (1, 2, 3, 4)),
    ]
    assert "images only" in result.output
    with_labels = runner.invoke(
        app, [*args, "--n", "1", "--out", str(tmp_path / "l"), "--readers", "ana", "--labels"]
    )
    assert with_labels.exit_code == 0, with_labels.output
    assert "images and label maps" in with_labels.output
    assert load_study(tmp_path / "l").labels is True
    refused = runner.invoke(app, [*args, "--n", "9", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    assert "only 4 real cases" in refused.output
    assert "Traceback" not in refused.output


def test_a_damaged_study_folder_is_refused_naming_the_file(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    make_study(world, folder, n=1)
    data = json.loads((folder / STUDY_FILE).read_text(encoding="utf-8"))
    (folder / STUDY_FILE).write_text(json.dumps({**data, "format": "other/9"}))
    with pytest.raises(StudyError, match=r"study\.json: format 'other/9'.*make the study again"):
        load_study(folder)
    (folder / STUDY_FILE).write_text(json.dumps({**data, "labels": "yes"}))
    with pytest.raises(StudyError, match=r"incomplete study file.*not true or false"):
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
    np.testing.assert_array_equal(voxels(tmp_path / "case.nii"), image.astype(np.float32))
    ct = load_config({"data.target-shape": "10,9,8"}).data
    write_case(np.full((8, 9, 10), 40000.4), ct, tmp_path / "ct.nii")
    assert voxels(tmp_path / "ct.nii").max() == 32767  # clipped into int16, not wrapped
    labels = (np.arange(720).reshape(8, 9, 10) % 4).astype(np.uint8)
    write_labels(labels, mri, tmp_path / "labels.nii")
    stored = voxels(tmp_path / "labels.nii")
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, labels)
