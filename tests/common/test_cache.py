"""The site's prepared-case cache: round trip, fingerprint, and every way a cache can be broken."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.config import DataConfig
from common.data.cache import (
    FORMAT_VERSION,
    INDEX_FILE,
    CacheIndex,
    data_settings,
    fingerprint,
    read_cache,
    write_cache,
)
from common.data.imageio import Geometry
from common.data.intensity import IntensityMapping
from common.data.preprocess import PreparedCase, prepare_case
from common.errors import DataError, OutputExistsError

REAL = (Path(__file__).resolve().parents[2] / "../shared/data/real").resolve()
DATA = DataConfig(modality="ct", target_spacing=(2.0, 2.0, 3.0), target_shape=(8, 10, 12))
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# sha256 of the two _tiny() cases with the settings {"data.modality": "ct"}: pinned so a change of
# the hashing (which would orphan every privacy ledger keyed by it) cannot go unnoticed.
PINNED_FINGERPRINT = "95a1e6f1ecf59c6cbf2060d497e11bf0647696e6de5eb43f3e949b0aef6423dc"


def _case(case_id: str, seed: int, data: DataConfig = DATA) -> PreparedCase:
    rng = np.random.default_rng(seed)
    shape = tuple(reversed(data.target_shape))
    geometry = Geometry(data.target_shape, data.target_spacing, (-7.0, 3.5, 100.25), IDENTITY)
    source = Geometry((64, 64, 20), (0.5, 0.5, 5.0), (1.0, 2.0, 3.0), IDENTITY)
    return PreparedCase(
        case_id=case_id,
        image=rng.uniform(-1, 1, size=shape).astype(np.float32),
        label=rng.integers(0, 3, size=shape).astype(np.uint8),
        geometry=geometry,
        intensity=IntensityMapping(data.modality, -1024.0, 2048.0),
        source_geometry=source,
    )


def _tiny() -> list[PreparedCase]:
    data = DataConfig(target_spacing=(1.0,) * 3, target_shape=(8,) * 3)
    first = dataclasses.replace(
        _case("a", 0, data),
        image=np.linspace(-1, 1, 512, dtype=np.float32).reshape(8, 8, 8),
        label=(np.arange(512) % 3).astype(np.uint8).reshape(8, 8, 8),
    )
    return [first, dataclasses.replace(first, case_id="b", label=first.label[::-1].copy())]


def _assert_same(read: PreparedCase, written: PreparedCase) -> None:
    assert read.case_id == written.case_id
    np.testing.assert_array_equal(read.image, written.image)
    np.testing.assert_array_equal(read.label, written.label)
    assert read.image.dtype == np.float32
    assert read.label.dtype == np.uint8
    assert read.geometry == written.geometry
    assert read.source_geometry == written.source_geometry
    assert read.intensity == written.intensity


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, list[PreparedCase]]:
    cases = [_case("site1_002", 2), _case("site1_001", 1)]
    out = tmp_path / "cache"
    write_cache(cases, out, data=DATA)
    return out, cases


def test_round_trip_keeps_arrays_geometry_and_settings(
    cache: tuple[Path, list[PreparedCase]],
) -> None:
    out, cases = cache
    index, read = read_cache(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "site1_001.meta.json",
        "site1_001.npz",
        "site1_002.meta.json",
        "site1_002.npz",
    ]
    assert index.case_ids == ("site1_001", "site1_002")
    assert index.format_version == FORMAT_VERSION
    assert index.modality == "ct"
    assert index.target_spacing == (2.0, 2.0, 3.0)
    assert index.target_shape == (8, 10, 12)
    assert index.settings == data_settings(DATA)
    assert index.settings["data.target-shape"] == "8,10,12"
    assert index.fingerprint == fingerprint(cases, data_settings(DATA))
    _assert_same(read[0], cases[1])
    _assert_same(read[1], cases[0])


@pytest.mark.skipif(not REAL.is_dir(), reason=f"shared real test cases not found at {REAL}")
def test_a_real_prepared_case_round_trips(tmp_path: Path) -> None:
    folder = REAL / "pyradiomics-lung1"
    image = sitk.ReadImage(str(folder / "lung1_image.nrrd"))
    label = sitk.ReadImage(str(folder / "lung1_label.nrrd"))
    data = DataConfig(modality="ct", target_spacing=(4.0,) * 3, target_shape=(32,) * 3)
    case = prepare_case("lung1", image, label, data)
    written = write_cache([case], tmp_path / "cache", data=data)
    index, (read,) = read_cache(tmp_path / "cache")
    assert index == written
    _assert_same(read, case)


def test_fingerprint_is_pinned_and_independent_of_case_order() -> None:
    settings = {"data.modality": "ct"}
    cases = _tiny()
    assert fingerprint(cases, settings) == PINNED_FINGERPRINT
    assert fingerprint(cases[::-1], settings) == PINNED_FINGERPRINT


def test_fingerprint_changes_with_any_voxel_setting_or_geometry() -> None:
    settings = {"data.modality": "ct"}
    cases = _tiny()
    base = fingerprint(cases, settings)
    image = cases[1].image.copy()
    image[7, 7, 7] = np.nextafter(image[7, 7, 7], np.float32(0))  # one voxel, one ulp
    label = cases[1].label.copy()
    label[0, 0, 0] ^= 1
    origin = dataclasses.replace(cases[1].geometry, origin=(-7.0, 3.5, 100.5))
    changed = [
        [cases[0], dataclasses.replace(cases[1], image=image)],
        [cases[0], dataclasses.replace(cases[1], label=label)],
        [cases[0], dataclasses.replace(cases[1], geometry=origin)],
        [cases[0], dataclasses.replace(cases[1], case_id="c")],
        [cases[0]],
    ]
    digests = {fingerprint(c, settings) for c in changed}
    digests.add(fingerprint(cases, {"data.modality": "ct", "data.ct-window-max": 2047.0}))
    assert len(digests) == len(changed) + 1
    assert base not in digests


def test_writing_refuses_bad_case_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeated: a"):
        write_cache([_case("a", 1), _case("a", 2)], tmp_path / "x", data=DATA)
    with pytest.raises(ValueError, match="cannot name a cache file"):
        write_cache([_case("../a", 1)], tmp_path / "x", data=DATA)
    other = DataConfig(target_shape=(8, 8, 8))
    with pytest.raises(ValueError, match="not prepared with these settings"):
        write_cache([_case("a", 1, other)], tmp_path / "x", data=DATA)
    assert not (tmp_path / "x").exists()


def test_an_existing_cache_is_replaced_only_with_overwrite(
    cache: tuple[Path, list[PreparedCase]],
) -> None:
    out, _ = cache
    with pytest.raises(OutputExistsError):
        write_cache([_case("other", 3)], out, data=DATA)
    assert read_cache(out)[0].case_ids == ("site1_001", "site1_002")
    write_cache([_case("other", 3)], out, data=DATA, overwrite=True)
    assert read_cache(out)[0].case_ids == ("other",)
    assert not (out / "site1_001.npz").exists()


def _expect(path: Path, kind: str, culprit: Path, match: str) -> None:
    with pytest.raises(DataError, match=match) as caught:
        read_cache(path)
    assert caught.value.kind == kind
    assert caught.value.path == culprit
    assert "fedsynth data prepare" in str(caught.value)


def _edit_index(out: Path, **changes: object) -> None:
    raw = json.loads((out / INDEX_FILE).read_text())
    raw.update(changes)
    (out / INDEX_FILE).write_text(json.dumps(raw))


def test_a_missing_or_garbled_index_is_unreadable(cache: tuple[Path, list[PreparedCase]]) -> None:
    out, _ = cache
    index = out / INDEX_FILE
    index.write_text('{"format": "fedsynth-cache", "format_')
    _expect(out, "unreadable", index, "not valid JSON")
    index.unlink()
    _expect(out, "unreadable", index, "not found")
    _expect(out / "nowhere", "unreadable", out / "nowhere" / INDEX_FILE, "not found")


def test_an_unknown_format_or_incomplete_index_is_a_bad_layout(
    cache: tuple[Path, list[PreparedCase]],
) -> None:
    out, _ = cache
    index = out / INDEX_FILE
    _edit_index(out, format_version=FORMAT_VERSION + 1)
    _expect(out, "bad-layout", index, f"version {FORMAT_VERSION + 1} is not the version")
    _edit_index(out, format_version=FORMAT_VERSION, case_ids=["../../etc/passwd"])
    _expect(out, "bad-layout", index, "unusable case ids")
    raw = json.loads(index.read_text())
    del raw["fingerprint"]
    index.write_text(json.dumps(raw))
    _expect(out, "bad-layout", index, "incomplete")
    index.write_text("[1, 2]")
    _expect(out, "bad-layout", index, "not a fedsynth cache index")


def test_missing_or_corrupt_case_files_are_unreadable(
    cache: tuple[Path, list[PreparedCase]],
) -> None:
    out, _ = cache
    arrays = out / "site1_002.npz"
    arrays.write_bytes(arrays.read_bytes()[:200])
    _expect(out, "unreadable", arrays, "corrupt")
    arrays.unlink()
    _expect(out, "unreadable", arrays, "not found")
    meta = out / "site1_001.meta.json"
    meta.unlink()
    _expect(out, "unreadable", meta, "not found")


def test_changed_voxels_or_mismatched_metadata_are_a_bad_layout(
    cache: tuple[Path, list[PreparedCase]],
) -> None:
    out, cases = cache
    arrays = out / "site1_001.npz"
    with np.load(arrays) as stored:
        image, label = stored["image"].copy(), stored["label"]
    image[0, 0, 0] += 0.5
    np.savez_compressed(arrays, image=image, label=label)
    _expect(out, "bad-layout", out / INDEX_FILE, "fingerprint")
    np.savez_compressed(arrays, image=image.astype(np.float64), label=label)
    _expect(out, "bad-layout", arrays, "image is float64 \\(12, 10, 8\\), the index says float32")
    meta = out / "site1_001.meta.json"
    np.savez_compressed(arrays, image=cases[1].image, label=label)
    raw = json.loads(meta.read_text())
    raw["case_id"] = "site1_002"
    meta.write_text(json.dumps(raw))
    _expect(out, "bad-layout", meta, "does not fit its index")
    raw["case_id"], raw["geometry"]["size"] = "site1_001", [8, 8, 8]
    meta.write_text(json.dumps(raw))
    _expect(out, "bad-layout", meta, "image must be float32 of shape \\(8, 8, 8\\)")


def test_the_index_round_trips_through_json() -> None:
    index = CacheIndex(1, "mri", (1.0, 1.0, 1.0), (8, 8, 8), {"data.modality": "mri"}, ("a",), "f")
    assert CacheIndex.from_json(json.loads(json.dumps(index.to_json()))) == index


def test_case_fingerprints_are_kept_by_case_and_must_name_the_cases(tmp_path: Path) -> None:
    cases = [_case("b", 2), _case("a", 1)]
    given = {"a": "1" * 64, "b": "2" * 64}
    index = write_cache(cases, tmp_path / "c", data=DATA, case_fingerprints=given)
    assert index.case_fingerprints == ("1" * 64, "2" * 64)  # in case-id order
    assert read_cache(tmp_path / "c")[0].case_fingerprints == index.case_fingerprints
    assert write_cache(cases, tmp_path / "older", data=DATA).case_fingerprints == ()
    with pytest.raises(ValueError, match="exactly the cases written"):
        write_cache(cases, tmp_path / "x", data=DATA, case_fingerprints={"a": "1" * 64})
    _edit_index(tmp_path / "c", case_fingerprints={"a": "1" * 64})
    _expect(tmp_path / "c", "bad-layout", tmp_path / "c" / INDEX_FILE, "must name exactly")
