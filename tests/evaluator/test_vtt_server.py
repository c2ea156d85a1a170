"""`vtt serve`'s app through FastAPI's TestClient: every security rule, answers, case files."""

from __future__ import annotations

import hmac
import json
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from vtt_support import make_study, make_world

import evaluator.vtt.server as server_module
from evaluator.vtt.render import MRI_HIGH_CONTRAST, WINDOWS
from evaluator.vtt.server import COOKIE, STATIC, ViewerMissingError, create_app
from evaluator.vtt.study import ADMIN, KEY_FILE, load_key, load_study
from evaluator.vtt.tokens import identify
from simulations.cli import app

NIFTI_HEADER_BYTES = 352


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two studies of the same world: one showing label maps, one images only (the default)."""
    root = tmp_path_factory.mktemp("vtt-server")
    world = make_world(root)
    made = {}
    for name, labels in (("labels", True), ("images", False)):
        created = make_study(world, root / name / "study", n=2, labels=labels)
        (root / name / "tokens.json").write_text(json.dumps(created.tokens))
        made[name] = root / name / "study"
    return made


def _copy(folder: Path, tmp_path: Path) -> Path:
    """A fresh copy of a study (no answers yet), its key moved out of the folder."""
    copy = tmp_path / "study"
    copy.mkdir(parents=True)
    for path in folder.rglob("*"):
        target = copy / path.relative_to(folder)
        if path.is_dir():
            target.mkdir()
        else:
            target.write_bytes(path.read_bytes())
    (copy / KEY_FILE).rename(tmp_path / KEY_FILE)  # the server must not need the key
    return copy


@pytest.fixture
def folder(folders: dict[str, Path]) -> Path:
    return folders["labels"]


@pytest.fixture
def study(folder: Path, tmp_path: Path) -> Path:
    return _copy(folder, tmp_path)


def _tokens(folder: Path) -> dict[str, str]:
    return json.loads((folder.parent / "tokens.json").read_text(encoding="utf-8"))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ANSWER = {"call": "synthetic", "confidence": 4, "comment": "too smooth"}


def _protected(case: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/read"),
        ("GET", "/admin"),
        ("GET", "/api/study"),
        ("GET", "/api/me"),
        ("GET", f"/api/cases/{case}/image.nii"),
        ("GET", f"/api/cases/{case}/labels.nii"),
        ("PUT", f"/api/answers/{case}"),
        ("GET", "/api/admin/progress"),
        ("GET", "/api/admin/export"),
    ]


def test_every_route_but_the_login_page_needs_a_valid_token(folder: Path, study: Path) -> None:
    client = TestClient(create_app(study))
    case = load_study(study).cases[0]
    for headers in ({}, _bearer("not-a-token"), _bearer(_tokens(folder)["ana"] + "x")):
        for method, path in _protected(case):
            reply = client.request(method, path, headers=headers, json=ANSWER)
            assert reply.status_code == 403, (method, path)
            assert "case" not in reply.text
    client.cookies.set(COOKIE, "forged")
    assert client.get("/api/me").status_code == 403
    client.cookies.clear()
    assert client.get("/login").status_code == 200
    assert client.get("/static/reader.js").status_code == 200
    icon = client.get("/favicon.ico")  # what every browser asks for first: nothing
    assert (icon.status_code, icon.content) == (204, b"")
    assert client.post("/api/session", json={"token": "wrong"}).status_code == 403
    assert COOKIE not in client.cookies
    assert sqlite3.connect(study / "answers.sqlite").execute(
        "SELECT COUNT(*) FROM answers"
    ).fetchone() == (0,)


def test_a_link_becomes_an_http_only_cookie_for_the_readers_pages(
    folder: Path, study: Path
) -> None:
    tokens = _tokens(folder)
    client = TestClient(create_app(study))
    reply = client.post("/api/session", json={"token": tokens["ana"]})
    assert reply.json() == {"page": "/read"}
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert client.get("/read").status_code == 200
    assert client.get("/api/me").json()["reader"] == "ana"
    assert client.get("/admin").status_code == 403  # a reader is not the admin
    admin = TestClient(create_app(study))
    assert admin.post("/api/session", json={"token": tokens[ADMIN]}).json() == {"page": "/admin"}
    assert admin.get("/admin").status_code == 200
    assert admin.get("/api/me").status_code == 403  # the admin does not read
    assert admin.get("/read").status_code == 403
    case = load_study(study).cases[0]
    assert admin.get(f"/api/cases/{case}/image.nii").status_code == 403


def test_readers_are_isolated_and_repeats_are_idempotent(folder: Path, study: Path) -> None:
    tokens = _tokens(folder)
    client = TestClient(create_app(study))
    ana, ben = _bearer(tokens["ana"]), _bearer(tokens["ben"])
    case = load_study(study).cases[0]
    first = client.put(f"/api/answers/{case}", json=ANSWER, headers=ana)
    assert first.status_code == 200
    assert first.json() == {"case": case, **ANSWER, "repeated": False}
    again = client.put(f"/api/answers/{case}", json=ANSWER, headers=ana)
    assert again.status_code == 200
    assert again.json() == {"case": case, **ANSWER, "repeated": True}
    changed = client.put(f"/api/answers/{case}", json={**ANSWER, "call": "real"}, headers=ana)
    assert changed.status_code == 409
    bad = client.put(f"/api/answers/{case}", json={**ANSWER, "confidence": 9}, headers=ben)
    assert bad.status_code == 400
    assert client.put("/api/answers/nope", json=ANSWER, headers=ben).status_code == 404
    ben_view = client.get("/api/me", headers=ben).json()
    assert ben_view["answered"] == 0
    assert all(entry["answer"] is None for entry in ben_view["cases"])
    # ben answering the same case writes ben's answer only: ana's stays as she gave it
    own = client.put(f"/api/answers/{case}", json={**ANSWER, "call": "real"}, headers=ben)
    assert own.json()["repeated"] is False
    ana_view = client.get("/api/me", headers=ana).json()
    assert ana_view["answered"] == 1
    assert [e["case"] for e in ana_view["cases"]] == list(load_study(study).reader("ana").order)
    assert {e["case"]: e["answer"] for e in ana_view["cases"]}[case] == {"case": case, **ANSWER}
    rows = sqlite3.connect(study / "answers.sqlite").execute(
        "SELECT reader, call FROM answers ORDER BY reader"
    )
    assert rows.fetchall() == [("ana", "synthetic"), ("ben", "real")]
    admin = _bearer(tokens[ADMIN])
    assert client.get("/api/admin/progress", headers=admin).json() == [
        {"reader": "ana", "answered": 1, "total": 4},
        {"reader": "ben", "answered": 1, "total": 4},
    ]
    export = client.get("/api/admin/export", headers=admin).text.splitlines()
    assert export[0] == "reader,case,call,confidence,comment,answered_at"
    assert export[1].startswith(f"ana,{case},synthetic,4,too smooth,")
    assert export[2].startswith(f"ben,{case},real,4,too smooth,")
    assert client.get("/api/admin/export", headers=ana).status_code == 403


def test_the_browser_gets_each_case_file_as_written_alike_for_both_sources(
    folder: Path, study: Path
) -> None:
    tokens = _tokens(folder)
    key = load_key(study.parent)
    client = TestClient(create_app(study))
    ana = _bearer(tokens["ana"])
    headers_by_source: dict[str, set[tuple[tuple[str, str], ...]]] = {
        "real": set(),
        "synthetic": set(),
    }
    file_headers: set[bytes] = set()
    loaded = load_study(study)
    for case, source in key.items():
        for kind, path in (("image", loaded.case_path(case)), ("labels", loaded.labels_path(case))):
            reply = client.get(f"/api/cases/{case}/{kind}.nii", headers=ana)
            assert reply.status_code == 200
            assert reply.content == path.read_bytes()  # the file as written, nothing added
            file_headers.add(kind.encode() + reply.content[:NIFTI_HEADER_BYTES])
            headers_by_source[source].add((("kind", kind), *sorted(reply.headers.items())))
    # every reply header (Content-Length among them) is the same for real and synthetic cases;
    # no Last-Modified or ETag, which would tell files apart
    assert headers_by_source["real"] == headers_by_source["synthetic"]
    assert len(headers_by_source["real"]) == 2  # one set for images, one for label maps
    assert not [h for h in headers_by_source["real"] if dict(h).keys() & {"etag", "last-modified"}]
    assert len(file_headers) == 2  # every image header identical, every label-map header too


def test_no_page_script_or_reply_tells_real_from_synthetic(folder: Path, study: Path) -> None:
    tokens = _tokens(folder)
    key = load_key(study.parent)
    client = TestClient(create_app(study))
    ana = _bearer(tokens["ana"])
    entries = json.loads((study.parent / KEY_FILE).read_text(encoding="utf-8")).values()
    forbidden = ["synth_", "real-0", "origin", "source", *(e["origin"] for e in entries)]
    texts = [client.get(path, headers=ana).text for path in ("/read", "/api/me", "/api/study")]
    texts += [p.read_text(encoding="utf-8") for p in STATIC.glob("*.*")]
    for case in key:
        answered = client.put(f"/api/answers/{case}", json=ANSWER, headers=ana)
        texts.append(answered.text + json.dumps(dict(answered.headers)))
    texts.append(client.get("/api/me", headers=ana).text)
    for text in texts:
        assert not [word for word in forbidden if word in text]
    me = client.get("/api/me", headers=ana).json()
    assert set(me) == {"reader", "cases", "answered", "total"}
    assert all(set(e["answer"]) == {"case", "call", "confidence", "comment"} for e in me["cases"])
    assert client.get("/openapi.json", headers=ana).status_code == 404
    assert client.get("/docs", headers=ana).status_code == 404


def test_the_pages_load_nothing_from_elsewhere(folder: Path, study: Path) -> None:
    client = TestClient(create_app(study))
    for reply in (client.get("/login"), client.get("/api/me")):
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["content-security-policy"] == (
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
        )
    for page in STATIC.glob("*.html"):
        sources = re.findall(r'(?:src|href)="([^"]*)"', page.read_text(encoding="utf-8"))
        assert sources
        assert all(s.startswith("/static/") or s.startswith("/api/") for s in sources), page
    assert client.get("/static/vendor/niivue.umd.js").status_code == 200  # served by the app


def test_the_study_reply_gives_the_windows_and_the_labels_to_show(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    labels = TestClient(create_app(_copy(folders["labels"], tmp_path / "l")))
    reply = labels.get("/api/study", headers=_bearer(_tokens(folders["labels"])["ana"])).json()
    assert reply == {
        "modality": "ct",
        "shape": [16, 16, 16],
        "spacing": [12.5, 12.5, 12.5],
        "windows": [
            {"name": "soft tissue", "low": -160.0, "high": 240.0},
            {"name": "bone", "low": -200.0, "high": 1800.0},
        ],
        "labels": [{"value": 1, "name": "tumour"}, {"value": 2, "name": "bone"}],
    }
    images = _copy(folders["images"], tmp_path / "i")
    client = TestClient(create_app(images))
    ana = _bearer(_tokens(folders["images"])["ana"])
    assert client.get("/api/study", headers=ana).json()["labels"] == []
    case = load_study(images).cases[0]
    assert client.get(f"/api/cases/{case}/image.nii", headers=ana).status_code == 200
    refused = client.get(f"/api/cases/{case}/labels.nii", headers=ana)
    assert refused.status_code == 404
    assert refused.json() == {"detail": "this study shows images only"}
    # MRI: the release range 0-1000, and its middle half
    assert WINDOWS["mri"] == {"full range": (0.0, 1000.0), "high contrast": (250.0, 750.0)}
    assert MRI_HIGH_CONTRAST == (250.0, 750.0)


def test_unknown_cases_are_not_found(folder: Path, study: Path) -> None:
    client = TestClient(create_app(study))
    ana = _bearer(_tokens(folder)["ana"])
    for path in (
        "/api/cases/000000000000/image.nii",
        "/api/cases/000000000000/labels.nii",
        "/api/cases/..%2Fkey/image.nii",
    ):
        assert client.get(path, headers=ana).status_code == 404, path


def test_tokens_are_compared_with_every_digest_in_constant_time(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_study(folder)
    tokens = _tokens(folder)
    compared: list[tuple[str, str]] = []
    compare = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("evaluator.vtt.tokens.hmac.compare_digest", recording)
    stored = [study.admin_sha256, *(r.token_sha256 for r in study.readers)]
    for token, expected in ((tokens[ADMIN], ADMIN), (tokens["ben"], "ben"), ("nope", None)):
        compared.clear()
        assert identify(token, study) == expected
        # no early exit: the first token (admin) and no token at all cost the same comparisons
        assert [b for _, b in compared] == stored
    compared.clear()
    assert identify("", study) is None
    assert compared == []


def test_serving_a_folder_that_is_not_a_study_is_a_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["vtt", "serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "study.json: missing" in result.output
    assert "Traceback" not in result.output


def test_serving_without_the_viewer_installed_says_to_install_it(
    folder: Path, study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "VIEWER", tmp_path / "vendor" / "niivue.umd.js")
    with pytest.raises(ViewerMissingError, match=r"niivue\.umd\.js: the reading viewer"):
        create_app(study)
    result = CliRunner().invoke(app, ["vtt", "serve", str(study)])
    assert result.exit_code == 2
    assert "run `make install`" in result.output
    assert "Traceback" not in result.output


def test_serve_listens_on_this_machine_only_unless_told_otherwise(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[dict[str, object]] = []
    monkeypatch.setattr(server_module.uvicorn, "run", lambda _app, **kwargs: runs.append(kwargs))
    runner = CliRunner()
    assert runner.invoke(app, ["vtt", "serve", str(study)]).exit_code == 0
    told = runner.invoke(app, ["vtt", "serve", str(study), "--host", "0.0.0.0", "--port", "9000"])
    assert told.exit_code == 0
    assert [(r["host"], r["port"]) for r in runs] == [("127.0.0.1", 8765), ("0.0.0.0", 9000)]
    assert all(r["access_log"] is False and r["server_header"] is False for r in runs)
