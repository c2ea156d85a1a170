"""The prepared-case cache a site keeps between runs.

A cache folder holds ``index.json`` and, per case, ``<case>.npz`` (``image`` float32 and ``label``
uint8, both (z, y, x)) and ``<case>.meta.json`` (prepared and source geometry, intensity mapping).
The index names the format version, the modality, the target grid, every ``data.*`` setting used
and a ``fingerprint``: a SHA-256 over the settings and, in case-id order, each case's id, arrays,
geometry and intensity mapping. The same prepared data always gives the same fingerprint, and any
changed voxel gives another. The index also keeps the source fingerprints: one of the whole
dataset (``source_fingerprint``) and one per case (``case_fingerprints``, a hash of the case's
source image voxels), which key the site's privacy ledger. Like the cache itself they never leave
the site: anyone holding a patient's image could recompute its fingerprint. The folder is written
atomically and checked against the fingerprint when read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from common.config import DataConfig, FedsynthConfig, Scalar, to_run_config
from common.data.imageio import Geometry
from common.data.intensity import IntensityMapping
from common.data.preprocess import PreparedCase
from common.data.problems import ProblemKind
from common.errors import DataError

FORMAT_NAME = "fedsynth-cache"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ARRAYS_SUFFIX = ".npz"
META_SUFFIX = ".meta.json"
SETTINGS_PREFIX = "data."
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""Case ids become file names: letters, digits, '.', '_' and '-', not starting with a dot."""
CASE_FINGERPRINT_TAG = b"fedsynth-source-case-image-v1"
"""Opens every per-case source fingerprint's hash (domain separation from other SHA-256s)."""
REPAIR_HINT = "run `fedsynth data prepare` again to rebuild the cache"
_LOAD_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class CacheIndex:
    """What ``index.json`` says about a cache folder."""

    format_version: int
    modality: str
    target_spacing: tuple[float, float, float]
    target_shape: tuple[int, int, int]
    settings: Mapping[str, Scalar]
    case_ids: tuple[str, ...]
    fingerprint: str
    source_fingerprint: str = ""
    case_fingerprints: tuple[str, ...] = ()
    """Per-case source fingerprints in ``case_ids`` order (empty in caches of older versions)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "modality": self.modality,
            "target_spacing": list(self.target_spacing),
            "target_shape": list(self.target_shape),
            "settings": dict(self.settings),
            "case_ids": list(self.case_ids),
            "fingerprint": self.fingerprint,
            "source_fingerprint": self.source_fingerprint,
            "case_fingerprints": (
                dict(zip(self.case_ids, self.case_fingerprints, strict=True))
                if self.case_fingerprints
                else {}
            ),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheIndex:
        """Inverse of :meth:`to_json` (raises KeyError, TypeError or ValueError on bad input)."""
        spacing = tuple(float(v) for v in data["target_spacing"])
        shape = tuple(int(v) for v in data["target_shape"])
        if len(spacing) != 3 or len(shape) != 3:
            raise ValueError("target spacing and shape need three values")
        case_ids = tuple(str(c) for c in data["case_ids"])
        per_case = dict(data.get("case_fingerprints") or {})
        if per_case and set(per_case) != set(case_ids):
            raise ValueError("case_fingerprints must name exactly the cached cases")
        return cls(
            format_version=int(data["format_version"]),
            modality=str(data["modality"]),
            target_spacing=spacing,  # type: ignore[arg-type]
            target_shape=shape,  # type: ignore[arg-type]
            settings=dict(data["settings"]),
            case_ids=case_ids,
            fingerprint=str(data["fingerprint"]),
            source_fingerprint=str(data.get("source_fingerprint", "")),
            case_fingerprints=tuple(str(per_case[c]) for c in case_ids) if per_case else (),
        )


def data_settings(data: DataConfig) -> dict[str, Scalar]:
    """Every ``data.*`` setting as its run-config key and scalar value."""
    flat = to_run_config(FedsynthConfig(data=data))
    return {k: v for k, v in flat.items() if k.startswith(SETTINGS_PREFIX)}


def _case_meta(case: PreparedCase) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "geometry": case.geometry.to_json(),
        "source_geometry": case.source_geometry.to_json(),
        "intensity": case.intensity.to_json(),
    }


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _hash_block(digest: Any, block: bytes) -> None:
    """Length-prefixed, so no two different sequences of blocks hash the same stream."""
    digest.update(len(block).to_bytes(8, "little"))
    digest.update(block)


def _hash_array(digest: Any, array: np.ndarray) -> None:
    canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    _hash_block(digest, _canonical_json([canonical.dtype.str, list(canonical.shape)]))
    _hash_block(digest, canonical.tobytes())


def fingerprint(cases: Sequence[PreparedCase], settings: Mapping[str, Scalar]) -> str:
    """SHA-256 hex digest of the settings and the cases, taken in case-id order."""
    digest = hashlib.sha256()
    _hash_block(digest, _canonical_json([FORMAT_NAME, FORMAT_VERSION, dict(settings)]))
    for case in sorted(cases, key=lambda c: c.case_id):
        _hash_block(digest, _canonical_json(_case_meta(case)))
        _hash_array(digest, case.image)
        _hash_array(digest, case.label)
    return digest.hexdigest()


def case_fingerprint(image: np.ndarray) -> str:
    """SHA-256 hex digest of one source case: its image's voxel values as read, and its shape.

    Only the image: it is the patient, whatever its label map says (which depends on
    ``data.label-remap`` and the CT bone threshold), its file's name, path or format, and the
    settings it is prepared with. Values are hashed as float64, so the same scan stored as
    int16 or float32 gives the same digest.
    """
    digest = hashlib.sha256(CASE_FINGERPRINT_TAG)
    _hash_block(digest, _canonical_json(list(image.shape)))
    for plane in image.reshape(image.shape[0], -1):  # one slice at a time: bounded memory
        _hash_block(digest, np.ascontiguousarray(plane, dtype="<f8").tobytes())
    return digest.hexdigest()


class SourceFingerprint:
    """SHA-256 over a site's source cases as read (ids, voxels, label maps), settings aside,
    and each case's own :func:`case_fingerprint` (``cases``, by case id).

    Unlike the cache's ``fingerprint``, it stays the same when the same patients are prepared
    again with other settings, so a privacy budget keyed by it is not reset by re-preparing.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.cases: dict[str, str] = {}

    def add(self, case_id: str, image: np.ndarray, label: np.ndarray) -> None:
        """Add one case; cases must be added in a fixed order (the listing's)."""
        _hash_block(self._digest, case_id.encode("utf-8"))
        _hash_array(self._digest, image)
        _hash_array(self._digest, label)
        self.cases[case_id] = case_fingerprint(image)

    def hexdigest(self) -> str:
        """The digest of the cases added so far."""
        return self._digest.hexdigest()


def _check_cases(cases: Sequence[PreparedCase], data: DataConfig) -> None:
    ids = [case.case_id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"case ids must be unique, repeated: {', '.join(duplicates)}")
    shape = tuple(reversed(data.target_shape))
    for case in cases:
        if not CASE_ID_PATTERN.fullmatch(case.case_id):
            raise DataError(
                Path(case.case_id),
                ProblemKind.BAD_LAYOUT.value,
                "this case id cannot name a cache file",
                "rename the case's files: letters, digits, '.', '_' and '-', "
                "starting with a letter or digit",
            )
        if case.image.shape != shape or case.intensity.modality != data.modality:
            raise ValueError(
                f"case {case.case_id} was not prepared with these settings: "
                f"{case.intensity.modality} {case.image.shape} instead of "
                f"{data.modality} {shape} (z, y, x)"
            )


def write_cache(
    cases: Sequence[PreparedCase],
    out: Path,
    *,
    data: DataConfig,
    overwrite: bool = False,
    source_fingerprint: str = "",
    case_fingerprints: Mapping[str, str] | None = None,
) -> CacheIndex:
    """Write prepared cases and their index to ``out``, atomically.

    ``case_fingerprints`` maps each case id to its :func:`case_fingerprint` (all or none).

    Raises:
        ValueError: repeated or unusable case ids, a case of another modality or shape, or
            case fingerprints for other cases than those given.
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    _check_cases(cases, data)
    settings = data_settings(data)
    case_ids = tuple(sorted(case.case_id for case in cases))
    per_case = dict(case_fingerprints or {})
    if per_case and set(per_case) != set(case_ids):
        raise ValueError("case fingerprints must be given for exactly the cases written")
    index = CacheIndex(
        format_version=FORMAT_VERSION,
        modality=data.modality,
        target_spacing=data.target_spacing,
        target_shape=data.target_shape,
        settings=settings,
        case_ids=case_ids,
        fingerprint=fingerprint(cases, settings),
        source_fingerprint=source_fingerprint,
        case_fingerprints=tuple(per_case[c] for c in case_ids) if per_case else (),
    )
    with atomic_directory(out, overwrite=overwrite) as staging:
        for case in cases:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, image=case.image, label=case.label)
            atomic_write_bytes(staging / f"{case.case_id}{ARRAYS_SUFFIX}", buffer.getvalue())
            text = json.dumps(_case_meta(case), indent=2)
            atomic_write_text(staging / f"{case.case_id}{META_SUFFIX}", text)
        atomic_write_text(staging / INDEX_FILE, json.dumps(index.to_json(), indent=2))
    return index


def _unreadable(path: Path, message: str) -> DataError:
    return DataError(path, ProblemKind.UNREADABLE.value, message, REPAIR_HINT)


def _bad_layout(path: Path, message: str) -> DataError:
    return DataError(path, ProblemKind.BAD_LAYOUT.value, message, REPAIR_HINT)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _unreadable(path, "cache file not found") from None
    except (OSError, ValueError) as err:
        raise _unreadable(path, f"cache file is not valid JSON ({err})") from None


def _read_index(path: Path) -> CacheIndex:
    index_path = path / INDEX_FILE
    raw = _read_json(index_path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise _bad_layout(index_path, "not a fedsynth cache index")
    if raw.get("format_version") != FORMAT_VERSION:
        raise _bad_layout(
            index_path,
            f"cache format version {raw.get('format_version')!r} is not the version this "
            f"fedsynth reads ({FORMAT_VERSION})",
        )
    try:
        index = CacheIndex.from_json(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise _bad_layout(index_path, f"cache index is incomplete ({err!r})") from None
    bad_ids = [c for c in index.case_ids if not CASE_ID_PATTERN.fullmatch(c)]
    if bad_ids:
        raise _bad_layout(index_path, f"cache index names unusable case ids {bad_ids}")
    return index


def _read_arrays(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise _unreadable(path, "cache file not found")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            image, label = arrays["image"], arrays["label"]
    except _LOAD_ERRORS as err:
        raise _unreadable(path, f"cache file is corrupt ({err!r})") from None
    for name, array, dtype in (("image", image, np.float32), ("label", label, np.uint8)):
        if array.dtype != dtype or array.shape != shape:
            raise _bad_layout(
                path,
                f"{name} is {array.dtype} {array.shape}, the index says "
                f"{np.dtype(dtype)} {shape} (z, y, x)",
            )
    return image, label


def _read_case(path: Path, case_id: str, index: CacheIndex) -> PreparedCase:
    meta_path = path / f"{case_id}{META_SUFFIX}"
    meta = _read_json(meta_path)
    shape = tuple(reversed(index.target_shape))
    image, label = _read_arrays(path / f"{case_id}{ARRAYS_SUFFIX}", shape)
    try:
        case = PreparedCase(
            case_id=str(meta["case_id"]),
            image=image,
            label=label,
            geometry=Geometry.from_json(meta["geometry"]),
            intensity=IntensityMapping.from_json(meta["intensity"]),
            source_geometry=Geometry.from_json(meta["source_geometry"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise _bad_layout(meta_path, f"cached case does not fit its index ({err})") from None
    if case.case_id != case_id or case.intensity.modality != index.modality:
        raise _bad_layout(meta_path, f"cached case does not fit its index (case {case_id})")
    return case


def read_cache(path: Path) -> tuple[CacheIndex, list[PreparedCase]]:
    """Read a cache folder written by :func:`write_cache`, checking it against its fingerprint.

    Raises:
        DataError: a missing or corrupt file (kind ``unreadable``) or a cache that is not what
            its index says, or of a format version this fedsynth does not know (``bad-layout``).
    """
    index = _read_index(path)
    cases = [_read_case(path, case_id, index) for case_id in index.case_ids]
    if fingerprint(cases, index.settings) != index.fingerprint:
        raise _bad_layout(
            path / INDEX_FILE, "the cached cases do not match the index's fingerprint"
        )
    return index, cases
