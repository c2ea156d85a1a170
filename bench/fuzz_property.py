"""The property every fuzz case must keep, and what each case ended in.

Reading a broken file either gives a sane image (voxels as the header says, at most
``max_voxels`` of them, finite positive spacing, finite origin and direction) or raises a
:class:`~common.errors.DataError` whose message names the file. A site check lists problems
naming files inside the site and never raises; loading a listed case raises DataError only.
An unbroken case must read, with the voxels that were written. Anything else is a failure,
counted by exception type.
"""

from __future__ import annotations

import faulthandler
import math
import multiprocessing
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from bench.fuzz_files import FuzzCase, build
from common.config import load_config
from common.data.imageio import read_image, to_array
from common.data.loading import load_case
from common.data.site import check_site
from common.errors import DataError

FUZZ_MAX_VOXELS = 1 << 20
"""data.max-voxels of the fuzz runs: a lying header costs at most this many voxels."""
DETAIL_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    """How a case ended: 'read', 'refused' (a DataError naming the file) or 'failure'.

    ``kind`` is the DataError's kind for a refusal and the exception type (or the broken
    promise) for a failure.
    """

    status: str
    kind: str = ""
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True when the case broke the property."""
        return self.status == "failure"


def _failure(kind: str, detail: object) -> Outcome:
    return Outcome("failure", kind, str(detail)[:DETAIL_CHARS])


def insanity(image: sitk.Image, max_voxels: int) -> str | None:
    """Why a successfully read image is not sane, or None."""
    array = to_array(image)
    components = image.GetNumberOfComponentsPerPixel()
    expected = tuple(image.GetSize())[::-1] + ((components,) if components > 1 else ())
    if array.shape != expected:
        return f"array shape {array.shape} is not the size {image.GetSize()}"
    if array.size > max_voxels * components:
        return f"{array.size} voxels read, more than the limit {max_voxels}"
    if not all(math.isfinite(s) and s > 0 for s in image.GetSpacing()):
        return f"spacing {image.GetSpacing()}"
    if not all(math.isfinite(v) for v in (*image.GetOrigin(), *image.GetDirection())):
        return f"origin {image.GetOrigin()} or direction {image.GetDirection()} not finite"
    return None


def _refusal(err: DataError, target: Path) -> Outcome:
    if str(target) not in str(err):
        return _failure("DataErrorWithoutPath", err)
    return Outcome("refused", err.kind, err.message[:DETAIL_CHARS])


def _read_file(case: FuzzCase, target: Path, max_voxels: int) -> Outcome:
    try:
        image = read_image(target, max_voxels=max_voxels)
    except DataError as err:
        return _refusal(err, target)
    except Exception as err:  # the property: nothing else may escape
        return _failure(type(err).__name__, err)
    problem = insanity(image, max_voxels)
    if problem is not None:
        return _failure("InsaneImage", problem)
    if not case.mutations and not np.array_equal(to_array(image), to_array(case.volume.image())):
        return _failure("WrongVoxels", "an unbroken file read back other voxels")
    return Outcome("read")


def _read_site(case: FuzzCase, site: Path, max_voxels: int) -> Outcome:
    data = load_config({"data.layout": case.layout, "data.max-voxels": max_voxels}).data
    try:
        report = check_site(site, data)
        for problem in report.problems:
            if site != problem.path and site not in problem.path.parents:
                return _failure("ProblemOutsideSite", problem)
        for files in report.listing.cases:
            load_case(files, data, report.listing.label_remap)
    except DataError as err:
        return _refusal(err, site)
    except Exception as err:  # the property: nothing else may escape
        return _failure(type(err).__name__, err)
    if report.ok:
        return Outcome("read")
    if not case.mutations and case.dataset_json is None:
        return _failure("GoodSiteRefused", report.problems[0])
    return Outcome("refused", report.problems[0].kind.value, report.problems[0].message)


def run_case(case: FuzzCase, max_voxels: int = FUZZ_MAX_VOXELS) -> Outcome:
    """Write ``case`` in a temporary folder, read it as fedsynth would, and judge the result."""
    with tempfile.TemporaryDirectory(prefix="fedsynth-fuzz-") as folder:
        target = build(case, Path(folder) / "case")
        if case.layout == "file":
            return _read_file(case, target, max_voxels)
        return _read_site(case, target, max_voxels)


def run_isolated(case: FuzzCase, max_voxels: int = FUZZ_MAX_VOXELS) -> Outcome:
    """:func:`run_case` in a forked child, so that a reader that crashes the process (a
    segmentation fault in an imaging library) is counted as a failure, not the end of a run."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(case, max_voxels, send))
    child.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:  # the child died before it could answer
        outcome = None
    child.join()
    if isinstance(outcome, Outcome):
        return outcome
    code = child.exitcode or 0
    name = signal.Signals(-code).name if code < 0 else f"exit {code}"
    return _failure(f"Crash({name})", "the reading process died")


def _child(case: FuzzCase, max_voxels: int, send: Any) -> None:
    faulthandler.disable()  # a crash is reported by the parent, with the case
    try:
        outcome = run_case(case, max_voxels)
    except Exception as err:  # building the case failed: a fault of the fuzzer itself
        outcome = _failure(f"FuzzerError({type(err).__name__})", err)
    send.send(outcome)
    send.close()
