"""Radiomics features of one structure with pyradiomics: one case, or many in worker processes.

Features keep pyradiomics' names (``original_firstorder_Mean``, ``original_shape_Sphericity``,
``original_glcm_Contrast``, ...): the original image (no filter), first order, 3D shape and the
five texture classes (GLCM, GLRLM, GLSZM, GLDM, NGTDM). Diagnostics (pyradiomics' provenance
entries, ``diagnostics_*``) are never mixed into the features; :func:`extract_diagnostics`
returns them apart.

Settings are pyradiomics' ``setting`` section (``binWidth``, ``resampledPixelSpacing``, ...),
checked against pyradiomics' own schema; :func:`settings_from_file` reads them from a params file
(YAML or JSON) or from the row a pyradiomics baseline CSV records them in.

    features = extract_features(image, mask, label=1, settings={"binWidth": 25})
    results = extract_many(cases, label=1, settings=settings, workers=2)   # in input order

:func:`extract_many` runs cases in worker processes forked from a fork server (never from
the caller, whose threads, torch's among them, a fork would copy mid-flight), so a script
calling it needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import multiprocessing
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pykwalify.core
import pykwalify.errors
import SimpleITK as sitk
import yaml
from radiomics.featureextractor import RadiomicsFeatureExtractor

from common.config import DataConfig
from common.data.imageio import read_image
from common.data.loading import grid_mismatch
from common.data.problems import ProblemKind
from common.errors import ConfigError, DataError, FedsynthError
from common.interrupts import deferred

FEATURE_CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
"""Feature classes extracted (pyradiomics names): first order, 3D shape, five texture classes."""
IMAGE_TYPE = "Original"  # features of the image itself; filtered images (wavelet, LoG) are not used
DIAGNOSTICS_PREFIX = "diagnostics_"  # pyradiomics' provenance entries: not features
GEOMETRY_TOLERANCE = DataConfig().geometry_tolerance  # the data layer's image/label grid tolerance
LABELS_LISTED = 20  # at most this many label values are named in an "empty structure" message
WORKER_ITK_THREADS = 1  # one ITK thread per worker process: the worker processes fill the cores
POOL_START_METHOD = "forkserver"  # workers forked from a clean server, not from a threaded parent
FAILED_KIND = "radiomics-failed"  # pyradiomics could not compute the features of a case
WORKER_DIED_KIND = "worker-died"  # the worker process running a case stopped (e.g. out of memory)
BASELINE_SETTINGS_ROW = "diagnostics_Configuration_Settings"  # where a baseline CSV keeps them
PARAMS_SUFFIXES = (".yaml", ".yml", ".json")  # pyradiomics params files
BASELINE_SUFFIX = ".csv"  # pyradiomics baseline tables: one row per feature, a column per case
VALIDATOR_WARNING = re.escape("the load_module() method is deprecated")  # pykwalify, each time
WHOLE_IMAGE_SETTINGS = ("normalize", "resampledPixelSpacing")  # these use all of the image
DEFAULT_PAD = RadiomicsFeatureExtractor._getDefaultSettings()["padDistance"]  # pyradiomics' own
SETTINGS_HELP = "https://pyradiomics.readthedocs.io/en/latest/customization.html"

Settings = Mapping[str, Any]

PYRADIOMICS_NOISE = ("GLCM is symmetrical, therefore Sum Average",)
"""pyradiomics warnings with nothing to act on (SumAverage is in its own baselines), dropped."""


class _PyradiomicsNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in PYRADIOMICS_NOISE)


_GLCM_LOGGER = logging.getLogger("radiomics.glcm")
if not any(isinstance(f, _PyradiomicsNoise) for f in _GLCM_LOGGER.filters):
    _GLCM_LOGGER.addFilter(_PyradiomicsNoise())
# pyradiomics sets its logger to DEBUG, so each step of every case would reach the application's
# handlers (fedsynth's console) at INFO; its warnings and errors still do.
PYRADIOMICS_LOG_LEVEL = logging.WARNING
logging.getLogger("radiomics").setLevel(PYRADIOMICS_LOG_LEVEL)


class RadiomicsSettingsError(ConfigError):
    """A pyradiomics setting, params file or baseline CSV cannot be used."""


class EmptyStructureError(DataError):
    """The mask holds no voxel of the requested label."""

    def __init__(self, source: Path | str, label: int, present: Sequence[int]) -> None:
        self.label = label
        listed = ", ".join(str(v) for v in present[:LABELS_LISTED]) or "none"
        if len(present) > LABELS_LISTED:
            listed += ", ..."
        super().__init__(
            source,
            ProblemKind.LABEL_EMPTY.value,
            f"mask holds no voxel of label {label} (labels present: {listed})",
            "choose a label present in the mask, or check that this is the right mask",
        )


class RadiomicsExtractionError(DataError):
    """pyradiomics could not compute the features of a case (its reason is in the message)."""

    def __init__(self, source: Path | str, reason: str) -> None:
        super().__init__(
            source,
            FAILED_KIND,
            f"pyradiomics could not extract features: {reason}",
            "check the structure's size and the settings (e.g. minimumROIDimensions, binWidth)",
        )


@dataclass(frozen=True, eq=False)
class ArrayVolume:
    """A 3D volume as a (z, y, x) array with its voxel spacing (x, y, z) in mm.

    Unlike a SimpleITK image it pickles, so it can be sent to a worker process.
    """

    array: np.ndarray
    spacing_xyz: tuple[float, float, float]

    def to_image(self) -> sitk.Image:
        """The volume as a SimpleITK image (origin 0, identity direction)."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(tuple(float(s) for s in self.spacing_xyz))
        return image


@dataclass(frozen=True)
class RadiomicsCase:
    """One case to extract: its id (used in every report) and its image and mask."""

    case_id: str
    image: Path | ArrayVolume
    mask: Path | ArrayVolume


@dataclass(frozen=True)
class CaseFeatures:
    """The features of one case."""

    case_id: str
    features: dict[str, float]

    @property
    def ok(self) -> bool:
        """True: this case has features."""
        return True


@dataclass(frozen=True)
class CaseFailure:
    """Why a case has no features: ``kind`` is a stable code (``unreadable``, ``label-empty``,
    ``grid-mismatch``, ``not-3d``, ``radiomics-failed``, ``worker-died``), ``reason`` the text."""

    case_id: str
    kind: str
    reason: str

    @property
    def ok(self) -> bool:
        """False: this case has no features."""
        return False


CaseResult = CaseFeatures | CaseFailure


@contextmanager
def _quiet_validator() -> Iterator[None]:
    """pykwalify logs every refused setting itself (fedsynth's error says it once) and loads
    pyradiomics' schema functions with a deprecated importlib call nobody here can act on."""
    was = pykwalify.core.log.disabled
    pykwalify.core.log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=VALIDATOR_WARNING, category=DeprecationWarning
            )
            yield
    finally:
        pykwalify.core.log.disabled = was


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]  # the schema wants lists (YAML sequences)
    return value.item() if isinstance(value, np.generic) else value


def check_settings(settings: Settings, source: str = "settings") -> dict[str, Any]:
    """A plain copy of ``settings`` once pyradiomics' schema accepts every key and value.

    Raises:
        RadiomicsSettingsError: naming ``source`` and each refused setting.
    """
    plain = {str(key): _plain(value) for key, value in settings.items()}
    try:
        with _quiet_validator():
            RadiomicsFeatureExtractor({"setting": plain})
    except pykwalify.errors.PyKwalifyException as err:
        text = str(getattr(err, "msg", err))
        found = [line.strip(" -.") for line in text.splitlines()[1:] if line.strip()]
        raise RadiomicsSettingsError(
            f"{source}: pyradiomics refuses the settings: {'; '.join(found) or text} "
            f"(valid settings: {SETTINGS_HELP})"
        ) from None
    return plain


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise RadiomicsSettingsError(f"{path}: settings file not found (check the path)")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RadiomicsSettingsError(f"{path}: cannot be read as text ({err})") from None


def _baseline_rows(csv_path: Path) -> dict[str, str]:
    rows = csv.reader(_read_text(csv_path).splitlines())
    return {row[0]: row[1] for row in rows if len(row) > 1}


def settings_from_baseline(csv_path: Path) -> dict[str, Any]:
    """The settings recorded in a pyradiomics baseline CSV (its first case column).

    Raises:
        RadiomicsSettingsError: no such file, no ``diagnostics_Configuration_Settings`` row,
            or settings pyradiomics refuses.
    """
    text = _baseline_rows(csv_path).get(BASELINE_SETTINGS_ROW)
    if text is None:
        raise RadiomicsSettingsError(
            f"{csv_path}: no {BASELINE_SETTINGS_ROW} row, so not a pyradiomics baseline "
            f"(give a baseline CSV or a params file: {', '.join(PARAMS_SUFFIXES)})"
        )
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = None
    if not isinstance(parsed, dict):
        raise RadiomicsSettingsError(
            f"{csv_path}: the {BASELINE_SETTINGS_ROW} row is not a settings dictionary"
        )
    return check_settings(parsed, source=str(csv_path))


def baseline_features(csv_path: Path) -> dict[str, float]:
    """The feature values of a pyradiomics baseline CSV (its first case column)."""
    rows = _baseline_rows(csv_path)
    return {
        name: float(value)
        for name, value in rows.items()
        if name.startswith(f"{IMAGE_TYPE.lower()}_") and value.strip()
    }


def _params_settings(params: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = sorted(set(params) - {"setting", "imageType", "featureClass"})
    if unknown:
        raise RadiomicsSettingsError(
            f"{path}: sections {unknown} are not used by fedsynth (voxel-based extraction is "
            "not supported); keep setting, imageType and featureClass"
        )
    image_types = params.get("imageType") or {IMAGE_TYPE: {}}
    if (
        not isinstance(image_types, dict)
        or list(image_types) != [IMAGE_TYPE]
        or any(image_types.values())
    ):
        raise RadiomicsSettingsError(
            f"{path}: fedsynth extracts features of the original image only; set "
            f"imageType to {{{IMAGE_TYPE}: {{}}}} or remove it"
        )
    classes = params.get("featureClass")
    if classes is not None and (
        not isinstance(classes, dict)
        or set(classes) != set(FEATURE_CLASSES)
        or any(classes.values())
    ):
        raise RadiomicsSettingsError(
            f"{path}: featureClass is fixed in fedsynth (every feature of "
            f"{', '.join(FEATURE_CLASSES)}) so that real and synthetic tables match; remove it"
        )
    settings = params.get("setting") or {}
    if not isinstance(settings, dict):
        raise RadiomicsSettingsError(f"{path}: 'setting' must be a mapping of name: value")
    return check_settings(settings, source=str(path))


def settings_from_params_file(path: Path) -> dict[str, Any]:
    """The ``setting`` section of a pyradiomics params file (YAML, or JSON for ``.json``).

    Raises:
        RadiomicsSettingsError: unreadable file, other image types or feature classes than
            fedsynth extracts, voxel settings, or settings pyradiomics refuses.
    """
    text = _read_text(path)
    try:
        params = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "syntax error"
        raise RadiomicsSettingsError(f"{path}: not a valid params file ({first})") from None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RadiomicsSettingsError(f"{path}: a params file is a mapping (setting: ...)")
    return _params_settings(params, path)


def settings_from_file(path: Path) -> dict[str, Any]:
    """Settings from a params file (.yaml, .yml, .json) or a pyradiomics baseline CSV."""
    suffix = path.suffix.lower()
    if suffix == BASELINE_SUFFIX:
        return settings_from_baseline(path)
    if suffix in PARAMS_SUFFIXES:
        return settings_from_params_file(path)
    raise RadiomicsSettingsError(
        f"{path}: unknown settings file type; give a params file ({', '.join(PARAMS_SUFFIXES)}) "
        f"or a pyradiomics baseline ({BASELINE_SUFFIX})"
    )


def _extractor(settings: dict[str, Any], diagnostics: bool) -> RadiomicsFeatureExtractor:
    extractor = RadiomicsFeatureExtractor(**settings)  # settings were checked by the schema
    extractor.settings["additionalInfo"] = diagnostics
    extractor.disableAllFeatures()
    for name in FEATURE_CLASSES:
        extractor.enableFeatureClassByName(name)
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName(IMAGE_TYPE)
    return extractor


def check_label(label: int) -> None:
    """Raise ConfigError unless ``label`` is a positive whole number (a structure's value)."""
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 1:
        raise ConfigError(f"label must be a positive whole number, not {label!r}")


def check_inputs(
    image: sitk.Image,
    mask: sitk.Image,
    label: int,
    source: Path | str,
    image_source: Path | str | None = None,
) -> None:
    """Check that ``mask`` is a 3D volume on ``image``'s grid holding voxels of ``label``.

    Errors name ``source`` (the mask's file or the case), or ``image_source`` for the image.

    Raises:
        ConfigError: ``label`` is not a positive integer.
        DataError: a volume is not 3D, or the mask is off the image's grid.
        EmptyStructureError: the mask has no voxel of ``label``.
    """
    check_label(label)
    for what, volume, named in (("image", image, image_source or source), ("mask", mask, source)):
        if volume.GetDimension() != 3 or volume.GetNumberOfComponentsPerPixel() != 1:
            message = f"{what} is not one scalar 3D volume (size {volume.GetSize()})"
            raise DataError(named, ProblemKind.NOT_3D.value, message, "give 3D volumes")
    mismatch = grid_mismatch(image, mask, GEOMETRY_TOLERANCE)
    if mismatch is not None:
        hint = "resample the mask onto the image grid (nearest neighbour) or re-export both"
        raise DataError(source, ProblemKind.GRID_MISMATCH.value, mismatch, hint)
    values = sitk.GetArrayViewFromImage(mask)
    if not np.any(values == label):
        present = [int(v) for v in np.unique(values) if v != 0]
        raise EmptyStructureError(source, int(label), present)


def _crop_to_structure(
    image: sitk.Image, mask: sitk.Image, label: int, settings: Mapping[str, Any]
) -> tuple[sitk.Image, sitk.Image]:
    """Image and mask cut to the structure's bounding box plus ``padDistance`` voxels.

    pyradiomics computes every original-image feature inside that box (the features come out
    bit for bit the same), but first scans the whole volume: 0.6 of 0.7 s on pyradiomics'
    512 x 512 x 48 lung1 CT. Settings that use the whole image (``WHOLE_IMAGE_SETTINGS``)
    get it whole.
    """
    if any(settings.get(name) for name in WHOLE_IMAGE_SETTINGS):
        return image, mask
    inside = sitk.GetArrayViewFromImage(mask) == label  # (z, y, x)
    pad = int(settings.get("padDistance", DEFAULT_PAD))
    bounds = []
    for axis in (2, 1, 0):  # x, y, z: SimpleITK's index order
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(inside.any(axis=others))
        bounds.append(slice(max(int(present[0]) - pad, 0), int(present[-1]) + pad + 1))
    return image[bounds[0], bounds[1], bounds[2]], mask[bounds[0], bounds[1], bounds[2]]


def _run(
    image: sitk.Image,
    mask: sitk.Image,
    label: int,
    checked: dict[str, Any],
    source: Path | str,
    image_source: Path | str | None,
    diagnostics: bool,
) -> dict[str, Any]:
    """pyradiomics' result (features and, with ``diagnostics``, its diagnostics) for settings
    already accepted by :func:`check_settings`."""
    check_inputs(image, mask, label, source, image_source)
    if not diagnostics:  # diagnostics describe the whole image: crop only without them
        image, mask = _crop_to_structure(image, mask, label, checked)
    try:
        return dict(_extractor(checked, diagnostics).execute(image, mask, label=int(label)))
    except (ValueError, RuntimeError, ArithmeticError, IndexError) as err:
        raise RadiomicsExtractionError(source, f"{type(err).__name__}: {err}") from None


def _features(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if not k.startswith(DIAGNOSTICS_PREFIX)}


def extract_features(
    image: sitk.Image,
    mask: sitk.Image,
    label: int,
    settings: Settings,
    *,
    source: Path | str = "mask",
    image_source: Path | str | None = None,
) -> dict[str, float]:
    """pyradiomics features of the structure ``mask == label``, by pyradiomics name.

    ``source`` (the mask's file or the case id) is named in errors, ``image_source`` in those
    about the image (default: ``source``). A value is NaN where pyradiomics could not compute
    that one feature (it logs why and goes on with the others).

    Raises:
        RadiomicsSettingsError: a setting is unknown or out of range.
        DataError: see :func:`check_inputs`; RadiomicsExtractionError: pyradiomics failed.
    """
    checked = check_settings(settings)
    return _features(_run(image, mask, label, checked, source, image_source, diagnostics=False))


def extract_diagnostics(
    image: sitk.Image,
    mask: sitk.Image,
    label: int,
    settings: Settings,
    *,
    source: Path | str = "mask",
    image_source: Path | str | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Features and pyradiomics' diagnostics (versions, settings, image and mask summaries)."""
    checked = check_settings(settings)
    result = _run(image, mask, label, checked, source, image_source, diagnostics=True)
    diagnostics = {k: str(v) for k, v in result.items() if k.startswith(DIAGNOSTICS_PREFIX)}
    return _features(result), diagnostics


def extract_from_arrays(
    image: np.ndarray,
    mask: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    label: int,
    settings: Settings,
    *,
    source: str = "arrays",
) -> dict[str, float]:
    """:func:`extract_features` on (z, y, x) arrays with their spacing (x, y, z) in mm."""
    if len(spacing_xyz) != 3 or not all(float(s) > 0 for s in spacing_xyz):
        raise ConfigError(f"{source}: spacing must be three positive numbers, not {spacing_xyz}")
    spacing = (float(spacing_xyz[0]), float(spacing_xyz[1]), float(spacing_xyz[2]))
    return extract_features(
        ArrayVolume(image, spacing).to_image(),
        ArrayVolume(mask, spacing).to_image(),
        label,
        settings,
        source=source,
    )


def _load(volume: Path | ArrayVolume) -> sitk.Image:
    if isinstance(volume, ArrayVolume):
        return volume.to_image()
    if isinstance(volume, str | Path):
        return read_image(Path(volume))
    raise TypeError(f"expected a file path or an ArrayVolume, not {type(volume).__name__}")


def _extract_checked(case: RadiomicsCase, label: int, checked: dict[str, Any]) -> CaseResult:
    """:func:`extract_case` for settings already accepted by :func:`check_settings` (the
    schema check costs some 50 ms: once per :func:`extract_many`, not once per case)."""
    source = case.mask if isinstance(case.mask, Path) else case.case_id
    image_source = case.image if isinstance(case.image, Path) else case.case_id
    try:
        image, mask = _load(case.image), _load(case.mask)
        result = _run(image, mask, label, checked, source, image_source, diagnostics=False)
    except DataError as err:
        return CaseFailure(case.case_id, err.kind, str(err))
    except FedsynthError as err:
        return CaseFailure(case.case_id, FAILED_KIND, str(err))
    except Exception as err:  # a case pyradiomics chokes on is reported, never fatal
        return CaseFailure(case.case_id, FAILED_KIND, f"{type(err).__name__}: {err}")
    return CaseFeatures(case.case_id, _features(result))


def extract_case(case: RadiomicsCase, label: int, settings: Settings) -> CaseResult:
    """The features of one case, or why it has none; never raises for a bad case.

    Raises:
        RadiomicsSettingsError: a setting is invalid (the caller's mistake, not the case's).
    """
    return _extract_checked(case, label, check_settings(settings))


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(WORKER_ITK_THREADS)


def _preload() -> list[str]:
    """Modules the fork server imports once, so that workers forked from it start at once.

    Workers also re-run the main module (``multiprocessing`` does so for every start method but
    fork). A main script ("__main__": ``fedsynth``, ``python script.py``) is preloaded too, so
    workers find it run (torch and Flower imported); a ``python -m`` main is re-run by each
    worker, so it should import its heavy modules inside its main function.
    """
    return ["__main__", __name__]


def _pool_context() -> multiprocessing.context.BaseContext:
    if POOL_START_METHOD not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context(POOL_START_METHOD)
    context.set_forkserver_preload(_preload())  # type: ignore[attr-defined]
    return context


def _collect(future: Future[CaseResult], case: RadiomicsCase) -> CaseResult:
    try:
        return future.result()
    except BrokenProcessPool:
        reason = "its worker process stopped before answering (out of memory or killed)"
        return CaseFailure(case.case_id, WORKER_DIED_KIND, reason)
    except Exception as err:  # e.g. a case that cannot be sent to a worker (not picklable)
        return CaseFailure(case.case_id, FAILED_KIND, f"{type(err).__name__}: {err}")


def _pool(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, _pool_context(), initializer=_init_worker)


def _run_pool(
    cases: Sequence[RadiomicsCase], label: int, settings: dict[str, Any], processes: int
) -> Iterator[tuple[int, CaseResult]]:
    """(index, result) as cases finish. A dying worker breaks the whole pool, so the cases it
    left unanswered are then run one by one, each in a pool of its own: only the case that
    kills its worker is reported as ``worker-died``. Stopped (a signal's ``Interrupted``), the
    pool cancels the queued cases and ends its workers once their running cases are done."""
    unanswered = []
    with _pool(processes) as pool:
        try:
            with deferred():  # a stop while a worker starts would orphan it half started
                futures = {
                    pool.submit(_extract_checked, c, label, settings): i
                    for i, c in enumerate(cases)
                }
            for future in as_completed(futures):
                index = futures[future]
                result = _collect(future, cases[index])
                if isinstance(result, CaseFailure) and result.kind == WORKER_DIED_KIND:
                    unanswered.append(index)
                else:
                    yield index, result
        except BaseException:  # a stop signal, or the caller gone: run no queued case
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for index in sorted(unanswered):
        with _pool(1) as alone:
            future = alone.submit(_extract_checked, cases[index], label, settings)
            yield index, _collect(future, cases[index])


def extract_many(
    cases: Sequence[RadiomicsCase],
    label: int,
    settings: Settings,
    workers: int,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Features of every case, in input order, each a :class:`CaseFeatures` or a
    :class:`CaseFailure` naming the case and the reason (no case is ever dropped).

    ``workers`` > 1 runs cases in that many processes (one ITK thread each); 1 runs them here.
    ``on_case`` is called with each result as it arrives (for progress bars).

    Raises:
        RadiomicsSettingsError: a setting is invalid (checked once, before any case).
        ConfigError: ``label`` is not a positive whole number, or ``workers`` is below 1.
    """
    checked = check_settings(settings)
    check_label(label)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    if workers == 1 or len(cases) < 2:
        answers: Iterator[tuple[int, CaseResult]] = (
            (i, _extract_checked(c, label, checked)) for i, c in enumerate(cases)
        )
    else:
        answers = _run_pool(cases, label, checked, min(workers, len(cases)))
    results: dict[int, CaseResult] = {}
    for index, result in answers:
        results[index] = result
        if on_case is not None:
            on_case(result)
    return [results[i] for i in range(len(cases))]


def split_results(results: Sequence[CaseResult]) -> tuple[list[CaseFeatures], list[CaseFailure]]:
    """The cases with features and the failed ones, each in input order."""
    good = [r for r in results if isinstance(r, CaseFeatures)]
    bad = [r for r in results if isinstance(r, CaseFailure)]
    return good, bad
