"""What the README tells a new user to do by hand, checked against the installation."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_flwr_run_example_says_to_activate_the_virtual_environment_first() -> None:
    """Flower starts `flower-superlink` from PATH: without the virtual environment active the
    example failed with "No such file or directory: 'flower-superlink'"."""
    text = README.read_text(encoding="utf-8")
    before = text[: text.index("flwr run . --stream")]
    introduction = " ".join(before[before.rindex("- **One machine**") :].split())
    assert (
        "with the virtual environment active (`. .venv/bin/activate`: Flower starts "
        "`flower-superlink` from `PATH`)" in introduction
    )
    assert (Path(sys.executable).parent / "flower-superlink").is_file()  # what activating adds
