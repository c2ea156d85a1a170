"""The roles stay apart: server and client never import each other; common imports no role."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "server": {"client", "simulations", "evaluator"},
    "client": {"server", "simulations", "evaluator"},
    "common": {"server", "client", "simulations", "evaluator"},
    "evaluator": {"server", "client", "simulations"},
    "deploy": {"server", "client", "simulations", "evaluator"},
}


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _imported_packages(path: Path) -> set[str]:
    tree = _parse(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_forbidden_role(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & FORBIDDEN[package])
        for path in files
        if _imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_no_assert_for_validation_in_library_code() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("common", "client", "server", "evaluator", "simulations", "deploy")
        for path in (ROOT / package).rglob("*.py")
        if any(isinstance(node, ast.Assert) for node in ast.walk(_parse(path)))
    ]
    assert offenders == []
