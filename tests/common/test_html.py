"""Self-contained report pages: escaped text, formatted numbers, embedded figures."""

from __future__ import annotations

import base64
import math
import re

from matplotlib.figure import Figure

from common.reports.html import Page, number, png


def test_numbers_are_rounded_and_special_values_spelled_out() -> None:
    assert number(0.123456789) == "0.1235"
    assert number(12345.678) == "1.235e+04"
    assert number(7) == "7"
    assert number(math.inf) == "infinite"
    assert number(math.nan) == "not defined"
    assert number(None) == "-"
    assert number(True) == "True"
    assert number("site-01") == "site-01"


def test_a_page_escapes_text_and_embeds_figures_without_external_files() -> None:
    page = Page("Release <b>")
    page.heading("Dice & HD95")
    page.paragraph("<script>alert(1)</script>")
    page.missing("paired MAE", "no --run given")
    page.table(["structure", "Dice"], [["tumour <1>", 0.83412345]])
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    data = png(figure)
    page.image(data, 'a "line"')
    text = page.render()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<title>Release &lt;b&gt;</title>" in text
    assert "<h2>Dice &amp; HD95</h2>" in text
    assert "paired MAE: not computed (no --run given)." in text
    assert "<td>tumour &lt;1&gt;</td><td>0.8341</td>" in text
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing loaded from elsewhere
    (encoded,) = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert base64.b64decode(encoded) == data
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
