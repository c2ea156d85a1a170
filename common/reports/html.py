"""Self-contained HTML pages: escaped text, tables, and figures embedded as PNG data URIs.

A report must open anywhere, offline, years later: no scripts, no external files, no fonts.
Every value shown goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO

from matplotlib.figure import Figure

from common.reports.figures import FIGURE_DPI

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 0.92em; }
.missing { color: #a33; }
img { max-width: 100%; }
"""
"""The page's only styling, inline."""
DIGITS = 4
"""Significant digits of numbers in tables."""


def number(value: object) -> str:
    """A table cell: numbers to :data:`DIGITS` significant digits, inf/nan spelled out."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "not defined"
        if math.isinf(value):
            return "infinite"
        return f"{value:.{DIGITS}g}"
    return str(value)


def png(figure: Figure) -> bytes:
    """A Matplotlib figure as PNG bytes."""
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return buffer.getvalue()


@dataclass
class Page:
    """An HTML page built section by section."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading."""
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str = "") -> None:
        """A paragraph of plain text (``css``: an optional class, e.g. "note")."""
        attribute = f' class="{css}"' if css else ""
        self.parts.append(f"<p{attribute}>{html.escape(text)}</p>")

    def missing(self, what: str, reason: str) -> None:
        """Say that a figure or table was not computed, and why."""
        self.paragraph(f"{what}: not computed ({reason}).", "missing")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        """A table; numbers formatted by :func:`number`."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(number(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, png_bytes: bytes, alt: str) -> None:
        """A figure embedded as a data URI."""
        data = base64.b64encode(png_bytes).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def render(self) -> str:
        """The whole page."""
        title = html.escape(self.title)
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{STYLE}</style></head>"
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n"
        )
