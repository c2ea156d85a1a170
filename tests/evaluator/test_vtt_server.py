"""`vtt serve`'s app through FastAPI's TestClient: every security rule, answers, rendering."""

from __future__ import annotations

import json
import sqlite3
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner
from vtt_support import make_study, make_world

from evaluator.vtt.render import WINDOWS, plane_size, read_case, slice_png
from evaluator.vtt.server import COOKIE, DEFAULT_HOST, STATIC, create_app
from evaluator.vtt.study import ADMIN, KEY_FILE, load_key, load_study
from simulations.cli import app


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vtt-server")
    created = make_study(make_world(root), root / "study", n=2)
    (root / "tokens.json").write_text(json.dumps(created.tokens))
    return root / "study"


@pytest.fixture
def study(folder: Path, tmp_path: Path) -> Path:
    """A fresh copy of the study (no answers yet), its key moved out of the folder."""
    copy = tmp_path / "study"
    copy.mkdir()
    for path in folder.rglob("*"):
        target = copy / path.relative_to(folder)
        if path.is_dir():
            target.mkdir()
        else:
            target.write_bytes(path.read_bytes())
    (copy / KEY_FILE).rename(tmp_path / KEY_FILE)  # the server must not need the key
    return copy


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
        ("GET", f"/api/cases/{case}/slices/axial/0.png"),
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
    assert client.get("/login").status_code == 200
    assert client.get("/static/reader.js").status_code == 200
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
    assert again.json()["repeated"] is True
    changed = client.put(f"/api/answers/{case}", json={**ANSWER, "call": "real"}, headers=ana)
    assert changed.status_code == 409
    assert (
        client.put(
            f"/api/answers/{case}", json={**ANSWER, "confidence": 9}, headers=ben
        ).status_code
        == 400
    )
    assert client.put("/api/answers/nope", json=ANSWER, headers=ben).status_code == 404
    ben_view = client.get("/api/me", headers=ben).json()
    assert ben_view["answered"] == 0
    assert all(entry["answer"] is None for entry in ben_view["cases"])
    ana_view = client.get("/api/me", headers=ana).json()
    assert ana_view["answered"] == 1
    assert [e["case"] for e in ana_view["cases"]] == list(load_study(study).reader("ana").order)
    rows = sqlite3.connect(study / "answers.sqlite").execute("SELECT reader, call FROM answers")
    assert rows.fetchall() == [("ana", "synthetic")]
    admin = _bearer(tokens[ADMIN])
    assert client.get("/api/admin/progress", headers=admin).json() == [
        {"reader": "ana", "answered": 1, "total": 4},
        {"reader": "ben", "answered": 0, "total": 4},
    ]
    export = client.get("/api/admin/export", headers=admin).text.splitlines()
    assert export[0] == "reader,case,call,confidence,comment,answered_at"
    assert export[1].startswith(f"ana,{case},synthetic,4,too smooth,")
    assert client.get("/api/admin/export", headers=ana).status_code == 403


def _png_chunks(data: bytes) -> list[str]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at + 4 : at + 8].decode("ascii"))
        at += 12 + length
    return chunks


def test_no_reply_tells_real_from_synthetic(folder: Path, study: Path) -> None:
    tokens = _tokens(folder)
    key = load_key(study.parent)
    client = TestClient(create_app(study))
    ana = _bearer(tokens["ana"])
    entries = json.loads((study.parent / KEY_FILE).read_text(encoding="utf-8")).values()
    forbidden = ["synth_", "real-0", "origin", "source", *(e["origin"] for e in entries)]
    texts = [client.get(path, headers=ana).text for path in ("/read", "/api/me", "/api/study")]
    texts += [p.read_text(encoding="utf-8") for p in STATIC.iterdir()]
    headers_by_source: dict[str, set[tuple[tuple[str, str], ...]]] = {
        "real": set(),
        "synthetic": set(),
    }
    shape = load_study(study).shape
    for case, source in key.items():
        for plane in ("axial", "coronal", "sagittal"):
            for window in WINDOWS["ct"]:
                reply = client.get(
                    f"/api/cases/{case}/slices/{plane}/{plane_size(shape, plane) // 2}.png",
                    params={"window": window},
                    headers=ana,
                )
                assert reply.status_code == 200
                assert _png_chunks(reply.content) == ["IHDR", "IDAT", "IEND"]
                headers = tuple(
                    sorted((k, v) for k, v in reply.headers.items() if k != "content-length")
                )
                headers_by_source[source].add(headers)
        answered = client.put(f"/api/answers/{case}", json=ANSWER, headers=ana)
        texts.append(answered.text + json.dumps(dict(answered.headers)))
    assert headers_by_source["real"] == headers_by_source["synthetic"]
    assert len(headers_by_source["real"]) == 1
    for text in texts:
        assert not [word for word in forbidden if word in text]
    me = client.get("/api/me", headers=ana).json()
    assert set(me) == {"reader", "cases", "answered", "total"}
    assert all(set(e["answer"]) == {"case", "call", "confidence", "comment"} for e in me["cases"])
    assert client.get("/openapi.json", headers=ana).status_code == 404


def test_every_reply_carries_the_security_headers(folder: Path, study: Path) -> None:
    client = TestClient(create_app(study))
    for reply in (client.get("/login"), client.get("/api/me")):
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'self'" in reply.headers["content-security-policy"]
    assert DEFAULT_HOST == "127.0.0.1"


def test_slices_out_of_range_and_unknown_windows_are_not_found(folder: Path, study: Path) -> None:
    client = TestClient(create_app(study))
    ana = _bearer(_tokens(folder)["ana"])
    case = load_study(study).cases[0]
    for path in (
        f"/api/cases/{case}/slices/axial/16.png",
        f"/api/cases/{case}/slices/axial/-1.png",
        f"/api/cases/{case}/slices/oblique/0.png",
        f"/api/cases/{case}/slices/axial/0.png?window=lung",
        "/api/cases/000000000000/slices/axial/0.png",
    ):
        assert client.get(path, headers=ana).status_code == 404, path


def test_a_slice_is_drawn_in_its_window_with_superior_at_the_top(study: Path) -> None:
    volume = np.zeros((2, 2, 2), dtype=np.float32)
    volume[0] = [[-160.0, 40.0], [240.0, 1000.0]]  # inferior slice
    volume[1] = -1000.0
    soft = WINDOWS["ct"]["soft tissue"]
    axial = np.asarray(Image.open(BytesIO(slice_png(volume, "axial", 0, soft))))
    np.testing.assert_array_equal(axial, [[0, 128], [255, 255]])  # 200/400*255 = 127.5 -> 128
    coronal = np.asarray(Image.open(BytesIO(slice_png(volume, "coronal", 0, soft))))
    np.testing.assert_array_equal(coronal, [[0, 0], [0, 128]])  # superior (z = 1) on top
    sagittal = np.asarray(Image.open(BytesIO(slice_png(volume, "sagittal", 1, soft))))
    np.testing.assert_array_equal(sagittal, [[0, 0], [128, 255]])
    case = load_study(study).case_path(load_study(study).cases[0])
    assert read_case(case).dtype == np.float32
    assert zlib.crc32(slice_png(volume, "axial", 0, soft)) == zlib.crc32(
        slice_png(volume, "axial", 0, soft)
    )


def test_serving_a_folder_that_is_not_a_study_is_a_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["vtt", "serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "study.json: missing" in result.output
    assert "Traceback" not in result.output
