"""Atomic outputs: a failed write leaves nothing partial behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from common.atomic import atomic_directory, atomic_write_text
from common.errors import DiskFullError, OutputExistsError


def test_directory_appears_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_no_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def write_then_fail() -> None:
        with atomic_directory(out) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_directory(out):
        pass
    assert (out / "old.txt").read_text() == "old"
    with atomic_directory(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_overwrite_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True):
        raise RuntimeError("boom")
    assert (out / "old.txt").read_text() == "old"


def test_atomic_text_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "x" / "f.json"
    atomic_write_text(path, "{}")
    atomic_write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_directory_gets_the_usual_permissions(tmp_path: Path) -> None:
    out, plain = tmp_path / "out", tmp_path / "plain"
    with atomic_directory(out):
        pass
    plain.mkdir()
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert out.stat().st_mode & 0o055  # group and others may read, unlike mkdtemp's 0700


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["atomic.txt"] == modes["plain.txt"]


# -- a full disk ------------------------------------------------------------------------------
_OPEN_FD = os.fdopen


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fd: int, mode: str) -> None:
        self._file = _OPEN_FD(fd, mode)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def write(self, _: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_old_file_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr("common.atomic.os.fdopen", _FullDisk)
    with pytest.raises(DiskFullError, match=f"disk holding {path} is full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temporary file left


def test_a_full_disk_inside_a_folder_names_the_output_not_the_staging_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "release"
    with atomic_directory(out) as staging:
        (staging / "old.txt").write_text("old")
    monkeypatch.setattr("common.atomic.os.fdopen", _FullDisk)
    with pytest.raises(DiskFullError) as raised, atomic_directory(out, overwrite=True) as staging:
        atomic_write_text(staging / "manifest.json", "{}")
    assert raised.value.path == out.resolve()
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["release"]


def test_other_os_errors_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic_directory(tmp_path / "out"):
        raise PermissionError(errno.EACCES, "denied")
