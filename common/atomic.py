"""Atomic writes: a reader sees either the whole new file or folder, or nothing new."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import DiskFullError, OutputExistsError


@contextmanager
def disk_full_reported(path: Path) -> Iterator[None]:
    """Turn a full disk (``ENOSPC``) met inside the block into a :class:`DiskFullError`
    naming ``path``, the output being written (not a temporary file beside it)."""
    try:
        yield
    except OSError as err:
        if isinstance(err, DiskFullError) or err.errno == errno.ENOSPC:
            raise DiskFullError(path) from err
        raise


def _default_mode(requested: int) -> int:
    """The mode a plain ``open``/``mkdir`` would give: ``requested`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return requested & ~umask


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename;
    ``mode`` (e.g. 0o600 for a private key) or the umask's default permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with disk_full_reported(path), os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode(0o666) if mode is None else mode)  # mkstemp: owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_nonempty_dir(path: Path) -> bool:
    """True when ``path`` is a folder holding at least one entry."""
    return path.is_dir() and any(path.iterdir())


def refuse_existing_output(out: Path, *, overwrite: bool, ignored: Collection[str] = ()) -> None:
    """Check, before any work, that ``out`` may be written: not a file, and not a folder with
    entries (other than those named in ``ignored``) unless ``overwrite``.

    Raises:
        OutputExistsError: it may not.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(out)
    if not overwrite and out.is_dir() and any(p.name not in ignored for p in out.iterdir()):
        raise OutputExistsError(out)


@contextmanager
def atomic_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``out`` only if the block succeeds.

    On any error the temporary folder is removed and ``out`` is left as it was.

    Raises:
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    out = out.resolve()
    refuse_existing_output(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    staging.chmod(_default_mode(0o777))  # mkdtemp makes it owner-only; `out` gets the usual mode
    try:
        with disk_full_reported(out):
            yield staging
        if out.exists():
            retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
