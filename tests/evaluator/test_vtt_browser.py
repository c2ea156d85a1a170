"""The reading app in a real headless Chromium (Debian's package, driven by Playwright): two
readers read a whole study, the server is killed and restarted in the middle, and what was
stored, the scores and screenshots are checked."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from vtt_support import free_port, make_study, make_world, start_server

from evaluator.vtt.score import write_scores
from evaluator.vtt.store import AnswerStore
from evaluator.vtt.study import ADMIN, load_key, load_study

CHROMIUM_ENV = "FEDSYNTH_CHROMIUM"
"""Path of the Chromium executable, when it is not `chromium` on PATH."""
MISSING = (
    "the browser tests need Debian's chromium and Playwright's Python package: "
    "`apt-get install -y chromium` and `pip install -e '.[dev]'` (.ci/run does both); "
    f"or set {CHROMIUM_ENV} to a Chromium executable"
)
MIN_GREY_LEVELS = 8
"""A screenshot showing slices has at least this many grey levels; a blank one has one or two."""
TIMEOUT_MS = 30_000


def _chromium() -> str:
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    if not found:
        pytest.fail(MISSING)  # never a silent skip: CI must have the browser
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(MISSING)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        yield launched
        launched.close()


def _not_blank(png: bytes, path: Path) -> None:
    path.write_bytes(png)
    grey = np.asarray(Image.open(BytesIO(png)).convert("L"))
    assert len(np.unique(grey)) >= MIN_GREY_LEVELS, f"{path} looks blank"


def _wait_for_slices(page: Any) -> None:
    page.wait_for_function(
        "(() => { const imgs = [...document.querySelectorAll('.view img')];"
        " return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0); })()",
        timeout=TIMEOUT_MS,
    )


def _shows(page: Any, selector: str, text: str) -> None:
    """Wait until ``selector`` shows ``text`` (the page updates asynchronously)."""
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=TIMEOUT_MS)


def _current_case(page: Any) -> str:
    src = page.get_attribute("#view-axial img", "src")
    found = re.search(r"/api/cases/([0-9a-f]+)/", src or "")
    assert found, src
    return found.group(1)


def _answer(page: Any, call: str, confidence: int, comment: str = "") -> str:
    _wait_for_slices(page)
    case = _current_case(page)
    before = page.inner_text("#progress")
    page.check(f"input[name=call][value={call}]")
    page.check(f"input[name=confidence][value='{confidence}']")
    page.fill("textarea[name=comment]", comment)
    page.click("#submit")
    page.wait_for_function(
        f"document.getElementById('progress').textContent !== {before!r}", timeout=TIMEOUT_MS
    )
    return case


def _open(browser: Any, url: str) -> Any:
    # bypass_csp: Playwright evaluates its waits as strings; the app itself needs no eval
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


@pytest.mark.slow
def test_two_readers_read_a_study_across_a_server_restart(browser: Any, tmp_path: Path) -> None:
    created = make_study(make_world(tmp_path), tmp_path / "study", n=2)
    study = load_study(tmp_path / "study")
    key = load_key(study.folder)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(study.folder, port, log)
    try:
        ana = _open(browser, f"{server.url}/login#{created.tokens['ana']}")
        ana.wait_for_url(f"{server.url}/read")
        assert "#" not in ana.url  # the token left the address bar
        _wait_for_slices(ana)
        _shows(ana, "#progress", "0 of 4 cases answered")
        _shows(ana, "#view-axial .caption", "axial 9 / 16")
        ana.hover("#view-axial img")
        ana.mouse.wheel(0, 100)
        _shows(ana, "#view-axial .caption", "axial 10 / 16")
        ana.keyboard.press("c")
        ana.keyboard.press("ArrowUp")
        _shows(ana, "#view-coronal .caption", "coronal 8 / 16")
        ana.select_option("#window", "bone")
        assert "window=bone" in (ana.get_attribute("#view-sagittal img", "src") or "")
        _wait_for_slices(ana)
        _not_blank(ana.screenshot(), tmp_path / "ana-reading.png")
        ana_first = [_answer(ana, key[_current_case(ana)], 5, "first look") for _ in range(2)]
        _shows(ana, "#progress", "2 of 4 cases answered")
        ben = _open(browser, f"{server.url}/login#{created.tokens['ben']}")
        ben.wait_for_url(f"{server.url}/read")
        _shows(ben, "#progress", "0 of 4 cases answered")  # not ana's answers
        _answer(ben, "real", 2)
    finally:
        server.stop()  # killed mid-study
    server = start_server(study.folder, port, log)
    try:
        ana.reload()  # the cookie from the first visit is still valid
        _wait_for_slices(ana)
        _shows(ana, "#progress", "2 of 4 cases answered")
        assert _current_case(ana) not in ana_first  # resumes at a case not yet answered
        while ana.is_hidden("#done"):
            _answer(ana, key[_current_case(ana)], 4)
        _not_blank(ana.screenshot(), tmp_path / "ana-done.png")
        ben.reload()
        _wait_for_slices(ben)
        _shows(ben, "#progress", "1 of 4 cases answered")
        while ben.is_hidden("#done"):
            _answer(ben, "real", 2)
        admin = _open(browser, f"{server.url}/login#{created.tokens[ADMIN]}")
        admin.wait_for_url(f"{server.url}/admin")
        admin.wait_for_selector("#progress tbody tr")
        rows = admin.inner_text("#progress tbody").split("\n")
        assert [row.split("\t") for row in rows] == [["ana", "4", "4"], ["ben", "4", "4"]]
        _not_blank(admin.screenshot(), tmp_path / "admin.png")
    finally:
        server.stop()
    answers = AnswerStore(study.answers_path).answers()
    assert len(answers) == 8
    assert {a.comment for a in answers if a.case_id in ana_first and a.reader == "ana"} == {
        "first look"
    }
    result = write_scores(study.folder, tmp_path / "scores")
    assert result.readers["ana"].accuracy == 1.0
    assert result.readers["ben"].sensitivity == 0.0
    assert result.readers["ben"].specificity == 1.0
    assert result.pooled.accuracy == pytest.approx(6 / 8)
    assert result.kappa == pytest.approx(-1 / 3)  # as hand-computed in test_vtt_score
    assert not [t for t in created.tokens.values() if t in log.read_text(encoding="utf-8")]
