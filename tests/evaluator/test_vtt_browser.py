"""The reading app in a real headless Chromium (Debian's package, driven by Playwright): two
readers read a whole study, the server is killed and restarted in the middle, and what was
stored, the scores and screenshots are checked."""

from __future__ import annotations

import os
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
        # NiiVue draws with WebGL 2: in headless Chromium that is SwiftShader, on CPU, which
        # Chromium allows only when asked (recent Playwright versions ask by default too)
        launched = playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--enable-unsafe-swiftshader"]
        )
        yield launched
        launched.close()


def _grey_levels(png: bytes) -> int:
    return len(np.unique(np.asarray(Image.open(BytesIO(png)).convert("L"))))


def _not_blank(png: bytes, path: Path) -> bytes:
    path.write_bytes(png)
    assert _grey_levels(png) >= MIN_GREY_LEVELS, f"{path} looks blank"
    return png


def _wait_for_case(page: Any) -> str:
    """Wait until NiiVue shows a case; its id."""
    page.wait_for_selector("#viewer[data-case], #error:not(:empty)", timeout=TIMEOUT_MS)
    assert page.inner_text("#error") == "", page.inner_text("#error")  # e.g. no WebGL 2
    return str(page.get_attribute("#viewer", "data-case"))


def _expect(page: Any, selector: str) -> Any:
    """Playwright's waiting assertions on ``selector`` (they need no eval, unlike a string
    given to ``wait_for_function``, which the app's CSP refuses)."""
    from playwright.sync_api import expect

    return expect(page.locator(selector))


def _shows(page: Any, selector: str, text: str) -> None:
    """Wait until ``selector`` shows ``text`` (the page updates asynchronously)."""
    _expect(page, selector).to_have_text(text, timeout=TIMEOUT_MS)


def _answer(page: Any, call: str, confidence: int, comment: str = "") -> str:
    case = _wait_for_case(page)
    before = page.inner_text("#progress")
    page.check(f"input[name=call][value={call}]")
    page.check(f"input[name=confidence][value='{confidence}']")
    page.fill("textarea[name=comment]", comment)
    page.click("#submit")
    _expect(page, "#progress").not_to_have_text(before, timeout=TIMEOUT_MS)
    return case


def _open(browser: Any, url: str, requests: list[str], problems: list[str]) -> Any:
    """A page at ``url`` in a new context, under the app's own Content-Security-Policy; the
    URLs it requests go to ``requests``, its script errors and console errors (a CSP refusal
    among them) to ``problems``."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("request", lambda request: requests.append(request.url))

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"{page.url}: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"{page.url}: {error}"))
    page.goto(url)
    return page


def _viewer(page: Any, expression: str) -> Any:
    """A value of the page's NiiVue instance."""
    return page.evaluate(f"viewer.{expression}")


@pytest.mark.slow
def test_two_readers_read_a_study_across_a_server_restart(browser: Any, tmp_path: Path) -> None:
    created = make_study(make_world(tmp_path), tmp_path / "study", n=2, labels=True)
    study = load_study(tmp_path / "study")
    key = load_key(study.folder)
    port = free_port()
    log = tmp_path / "server.log"
    requests: list[str] = []
    problems: list[str] = []
    server = start_server(study.folder, port, log)
    try:
        ana = _open(browser, f"{server.url}/login#{created.tokens['ana']}", requests, problems)
        ana.wait_for_url(f"{server.url}/read")
        assert "#" not in ana.url  # the token left the address bar
        _wait_for_case(ana)
        _shows(ana, "#progress", "0 of 4 cases answered")
        _shows(ana, "#slice-axial", "axial 9 / 16")  # NiiVue starts at the middle slice
        box = ana.locator("#viewer").bounding_box()
        x, y = box["x"] + box["width"] / 6, box["y"] + box["height"] / 2  # the axial view
        ana.mouse.move(x, y)
        ana.mouse.wheel(0, 100)
        _shows(ana, "#slice-axial", "axial 10 / 16")
        ana.keyboard.press("c")
        ana.keyboard.press("ArrowUp")
        _shows(ana, "#slice-coronal", "coronal 8 / 16")
        _shows(ana, "#slice-axial", "axial 10 / 16")  # the other planes stay
        ana.keyboard.press("o")  # the label map off: the image alone
        assert _viewer(ana, "volumes[1].opacity") == 0
        assert not ana.is_checked("#labels")
        soft = _not_blank(ana.locator("#viewer").screenshot(), tmp_path / "ana-soft.png")
        ana.select_option("#window", label="bone")
        assert _viewer(ana, "volumes[0].cal_min") == -200
        assert _viewer(ana, "volumes[0].cal_max") == 1800
        bone = _not_blank(ana.locator("#viewer").screenshot(), tmp_path / "ana-bone.png")
        assert bone != soft  # the window changed what is drawn
        ana.mouse.move(x - 60, y - 60)
        ana.mouse.down(button="right")  # a right-button drag windows to the box it draws
        ana.mouse.move(x + 60, y + 60, steps=5)
        ana.mouse.up(button="right")
        low, high = _viewer(ana, "volumes[0].cal_min"), _viewer(ana, "volumes[0].cal_max")
        assert -1024 <= low < high < 1800  # the range inside the box, not the preset's
        ana.mouse.dblclick(x, y)
        assert _viewer(ana, "volumes[0].cal_max") == 1800  # NiiVue's reset, then the preset
        ana.keyboard.press("w")  # W cycles back to the first preset
        assert ana.eval_on_selector("#window", "s => s.options[s.selectedIndex].text") == (
            "soft tissue"
        )
        assert _viewer(ana, "volumes[0].cal_max") == 240
        ana.keyboard.press("o")
        assert _viewer(ana, "volumes[1].opacity") > 0
        _not_blank(ana.screenshot(), tmp_path / "ana-reading.png")
        ana_first = [_answer(ana, key[_wait_for_case(ana)], 5, "first look") for _ in range(2)]
        _shows(ana, "#progress", "2 of 4 cases answered")
        ben = _open(browser, f"{server.url}/login#{created.tokens['ben']}", requests, problems)
        ben.wait_for_url(f"{server.url}/read")
        _shows(ben, "#progress", "0 of 4 cases answered")  # not ana's answers
        _answer(ben, "real", 2)
        for page in (ana, ben):  # each page's next case loaded: the kill cuts no transfer short
            _wait_for_case(page)
    finally:
        server.stop()  # killed mid-study
    server = start_server(study.folder, port, log)
    try:
        ana.reload()  # the cookie from the first visit is still valid
        _shows(ana, "#progress", "2 of 4 cases answered")
        assert _wait_for_case(ana) not in ana_first  # resumes at a case not yet answered
        while ana.is_hidden("#done"):
            _answer(ana, key[_wait_for_case(ana)], 4)
        _not_blank(ana.screenshot(), tmp_path / "ana-done.png")
        ben.reload()
        _wait_for_case(ben)
        _shows(ben, "#progress", "1 of 4 cases answered")
        while ben.is_hidden("#done"):
            _answer(ben, "real", 2)
        admin = _open(browser, f"{server.url}/login#{created.tokens[ADMIN]}", requests, problems)
        admin.wait_for_url(f"{server.url}/admin")
        admin.wait_for_selector("#progress tbody tr")
        rows = admin.inner_text("#progress tbody").split("\n")
        assert [row.split("\t") for row in rows] == [["ana", "4", "4"], ["ben", "4", "4"]]
        _not_blank(admin.screenshot(), tmp_path / "admin.png")
    finally:
        server.stop()
    # everything the browsers loaded came from the app: NiiVue included, nothing from elsewhere
    assert requests
    assert [url for url in requests if not url.startswith(f"{server.url}/")] == []
    assert f"{server.url}/static/vendor/niivue.umd.js" in requests
    assert problems == []  # no script error, nothing refused by the app's CSP
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


def test_a_missing_browser_fails_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        _chromium()
    monkeypatch.setenv(CHROMIUM_ENV, "/opt/chromium")
    assert _chromium() == "/opt/chromium"
