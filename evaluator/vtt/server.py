"""``vtt serve``: the reading web app (FastAPI), with nothing of the answer key in it.

The server never opens ``key.json``: what it can show cannot tell the sources apart. A reader's
browser receives each case's NIfTI file as ``vtt create`` wrote it (every file the same header
bytes and size) and draws it with NiiVue, which the app serves itself from the package
(``make`` installs it from npm): no page loads anything from elsewhere. Every page and API call
but the login page needs a token: a reader's link carries it in the URL fragment (never sent to
a server, never logged), the login page posts it once and gets it back as an HttpOnly cookie;
an ``Authorization: Bearer`` header works too. Readers see and answer only their own cases; the
admin sees progress and exports the answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from common.data.schema import SCHEMAS
from common.errors import FedsynthError
from evaluator.vtt.render import WINDOWS
from evaluator.vtt.score import csv_text
from evaluator.vtt.store import Answer, AnswerConflictError, AnswerError, AnswerStore, now
from evaluator.vtt.study import ADMIN, Reader, Study, load_study
from evaluator.vtt.tokens import identify

COOKIE = "vtt_session"
DEFAULT_HOST = "127.0.0.1"
"""Only this machine, unless told otherwise."""
DEFAULT_PORT = 8765
STATIC = Path(__file__).with_name("static")
VIEWER = STATIC / "vendor" / "niivue.umd.js"
"""NiiVue's browser bundle, copied from its npm package by ``make install``."""
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    ),
}
"""Sent with every reply: nothing cached, nothing embedded, no token in a Referer, nothing
loaded from elsewhere (NiiVue draws its letters from an image it carries as a data: URL)."""
VOLUME_TYPE = "application/octet-stream"
EXPORT_COLUMNS = ("reader", "case", "call", "confidence", "comment", "answered_at")
FORBIDDEN = "a valid token is needed: open your invitation link again"


class ViewerMissingError(FedsynthError):
    """NiiVue's bundle is not installed beside the app."""


class TokenIn(BaseModel):
    """The body of ``POST /api/session``."""

    token: str


class AnswerIn(BaseModel):
    """The body of ``PUT /api/answers/{case}``."""

    call: str
    confidence: int
    comment: str = ""


def _presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip()
    return request.cookies.get(COOKIE)


def _answer_json(answer: Answer) -> dict[str, object]:
    return {
        "case": answer.case_id,
        "call": answer.call,
        "confidence": answer.confidence,
        "comment": answer.comment,
    }


def create_app(folder: Path) -> FastAPI:
    """The web app serving the study in ``folder``.

    Raises:
        StudyError: ``folder`` is not a study.
        ViewerMissingError: NiiVue is not installed.
    """
    study = load_study(folder)
    if not VIEWER.is_file():
        raise ViewerMissingError(
            f"{VIEWER}: the reading viewer (NiiVue) is not installed; run `make install` in "
            "the fedsynth folder (it needs npm)"
        )
    store = AnswerStore(study.answers_path)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def who(request: Request) -> str:
        name = identify(_presented_token(request), study)
        if name is None:
            raise HTTPException(403, FORBIDDEN)
        return name

    def reader(name: str = Depends(who)) -> Reader:
        if name == ADMIN:
            raise HTTPException(403, "this is the admin token; open a reader's link to read")
        return study.reader(name)

    def admin(name: str = Depends(who)) -> str:
        if name != ADMIN:
            raise HTTPException(403, "the admin page needs the admin token")
        return name

    _pages(app, study, reader, admin)
    _reading_api(app, study, store, who, reader)
    _admin_api(app, study, store, admin)
    return app


def _pages(
    app: FastAPI, study: Study, reader: Callable[..., Reader], admin: Callable[..., str]
) -> None:
    @app.get("/")
    @app.get("/login")
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html")

    @app.get("/favicon.ico")
    def no_icon() -> Response:  # browsers ask for one; an empty reply, not a 404 in the console
        return Response(status_code=204)

    @app.post("/api/session")
    def session(body: TokenIn, response: Response) -> dict[str, str]:
        name = identify(body.token, study)
        if name is None:
            raise HTTPException(403, FORBIDDEN)
        response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", path="/")
        return {"page": "/admin" if name == ADMIN else "/read"}

    @app.get("/read")
    def read_page(_: Reader = Depends(reader)) -> FileResponse:
        return FileResponse(STATIC / "reader.html")

    @app.get("/admin")
    def admin_page(_: str = Depends(admin)) -> FileResponse:
        return FileResponse(STATIC / "admin.html")


def _reading_api(
    app: FastAPI,
    study: Study,
    store: AnswerStore,
    who: Callable[..., str],
    reader: Callable[..., Reader],
) -> None:
    schema = SCHEMAS[study.modality]
    labels = [{"value": v, "name": n} for n, v in schema.labels.items()] if study.labels else []

    @app.get("/api/study")
    def study_info(_: str = Depends(who)) -> dict[str, object]:
        return {
            "modality": study.modality,
            "shape": list(study.shape),
            "spacing": list(study.spacing),
            "windows": [
                {"name": name, "low": low, "high": high}
                for name, (low, high) in WINDOWS[study.modality].items()
            ],
            "labels": labels,
        }

    @app.get("/api/me")
    def me(me: Reader = Depends(reader)) -> dict[str, object]:
        answers = {a.case_id: _answer_json(a) for a in store.answers(me.name)}
        return {
            "reader": me.name,
            "cases": [{"case": c, "answer": answers.get(c)} for c in me.order],
            "answered": len(answers),
            "total": len(me.order),
        }

    @app.get("/api/cases/{case_id}/image.nii")
    def image(case_id: str, me: Reader = Depends(reader)) -> Response:
        if case_id not in me.order:
            raise HTTPException(404, "no such case")
        return Response(study.case_path(case_id).read_bytes(), media_type=VOLUME_TYPE)

    @app.get("/api/cases/{case_id}/labels.nii")
    def label_map(case_id: str, me: Reader = Depends(reader)) -> Response:
        if case_id not in me.order:
            raise HTTPException(404, "no such case")
        if not study.labels:
            raise HTTPException(404, "this study shows images only")
        return Response(study.labels_path(case_id).read_bytes(), media_type=VOLUME_TYPE)

    @app.put("/api/answers/{case_id}")
    def answer(case_id: str, body: AnswerIn, me: Reader = Depends(reader)) -> JSONResponse:
        if case_id not in me.order:
            raise HTTPException(404, "no such case")
        given = Answer(me.name, case_id, body.call, body.confidence, body.comment, now())
        try:
            stored, created = store.submit(given)
        except AnswerConflictError as err:
            raise HTTPException(409, str(err)) from None
        except AnswerError as err:
            raise HTTPException(400, str(err)) from None
        return JSONResponse({**_answer_json(stored), "repeated": not created})


def _admin_api(app: FastAPI, study: Study, store: AnswerStore, admin: Callable[..., str]) -> None:
    @app.get("/api/admin/progress")
    def progress(_: str = Depends(admin)) -> list[dict[str, object]]:
        answers = store.answers()
        return [
            {
                "reader": r.name,
                "answered": sum(a.reader == r.name for a in answers),
                "total": len(r.order),
            }
            for r in study.readers
        ]

    @app.get("/api/admin/export")
    def export(_: str = Depends(admin)) -> Response:
        rows = [
            (a.reader, a.case_id, a.call, a.confidence, a.comment, a.answered_at)
            for a in store.answers()
        ]
        text = csv_text(EXPORT_COLUMNS, rows)
        headers = {"Content-Disposition": 'attachment; filename="answers.csv"'}
        return Response(text, media_type="text/csv", headers=headers)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until stopped: no access log (no path or query is ever
    printed), no ``Server`` header, warnings only."""
    uvicorn.run(
        app, host=host, port=port, access_log=False, server_header=False, log_level="warning"
    )
