"""`vtt serve` as a real process: answers survive a kill and a restart; tokens are never printed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from vtt_support import free_port, make_study, make_world, start_server

from evaluator.vtt.study import ADMIN, load_study

ANSWER = {"call": "real", "confidence": 2, "comment": ""}


def _call(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return {
            "status": reply.status,
            "headers": dict(reply.headers),
            "body": json.loads(reply.read()),
        }


@pytest.mark.slow
def test_answers_survive_a_killed_server(tmp_path: Path) -> None:
    created = make_study(make_world(tmp_path), tmp_path / "study", n=2)
    study = load_study(tmp_path / "study")
    ana = created.tokens["ana"]
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(study.folder, port, log)
    try:
        first, second = study.reader("ana").order[:2]
        reply = _call(f"{server.url}/api/answers/{first}", ana, "PUT", ANSWER)
        assert reply["status"] == 200
        assert "server" not in {k.lower() for k in reply["headers"]}
        with pytest.raises(urllib.error.HTTPError) as refused:
            _call(f"{server.url}/api/me", "wrong-token")
        assert refused.value.code == 403
    finally:
        server.stop()  # SIGKILL: no clean shutdown
    server = start_server(study.folder, port, log)
    try:
        me = _call(f"{server.url}/api/me", ana)["body"]
        assert me["answered"] == 1
        assert me["cases"][0] == {"case": first, "answer": {"case": first, **ANSWER}}
        _call(f"{server.url}/api/answers/{second}", ana, "PUT", {**ANSWER, "call": "synthetic"})
        progress = _call(f"{server.url}/api/admin/progress", created.tokens[ADMIN])["body"]
        assert progress[0] == {"reader": "ana", "answered": 2, "total": 4}
    finally:
        server.stop()
    output = log.read_text(encoding="utf-8")
    assert "serving" in output
    assert not [token for token in created.tokens.values() if token in output]
    assert "/api/" not in output  # no access log
