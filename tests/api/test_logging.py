"""Request ids and structured logs against the real app: every answer (200, 401, 404,
413, 422, 503, and a 500 from a broken database) carries X-Request-ID; a sane incoming
id is kept and a hostile one replaced; JSON log lines parse and carry the id, the access
line its route template, status and duration; `lastedocation serve` logs JSON lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from lastedocation.api import create_app
from lastedocation.logs import configure_logging
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """The studio's log as JSON lines, written here for the test to read."""
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = configure_logging(level="info", fmt="json", stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The studio's lines (not those of the test's own HTTP client)."""
    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [entry for entry in entries if not entry["logger"].startswith(("httpx", "httpcore"))]


def written(buffer: io.StringIO) -> str:
    return "\n".join(json.dumps(entry, ensure_ascii=False) for entry in lines(buffer))


def access_line(buffer: io.StringIO, request_id: str) -> dict[str, Any]:
    (line,) = [
        entry
        for entry in lines(buffer)
        if entry["logger"] == "lastedocation.access" and entry["request_id"] == request_id
    ]
    return line


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """Signed in as an admin; the app's background threads are not started (a test
    breaks the database, and no supervisor should trip over it)."""
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    test_client = TestClient(app)
    sign_in(test_client)
    yield test_client
    app.state.engine.dispose()


def test_every_answer_carries_a_request_id(
    client: TestClient, settings: Settings, log: io.StringIO
) -> None:
    anonymous = TestClient(client.app)
    answers = {
        200: client.get("/healthz"),
        401: anonymous.get("/api/v1/runs"),
        404: client.get("/api/v1/runs/424242"),
        422: client.get("/api/v1/runs/0"),
        413: client.post(
            "/api/v1/auth/login",
            content=b"{" + b" " * (settings.max_body_kb * 1024 + 1) + b"}",
            headers={"Content-Type": "application/json"},
        ),
    }
    page = client.get("/no/such/page")  # a page, not the API
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")

    # not ready: the data folder is gone
    moved = settings.data_dir.with_name("moved")
    settings.data_dir.rename(moved)
    try:
        answers[503] = client.get("/readyz")
    finally:
        moved.rename(settings.data_dir)

    # a 500: the database lost a table under the running studio
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(text("DROP TABLE run_events"))
        connection.execute(text("DROP TABLE runs"))
    answers[500] = client.get("/api/v1/runs")

    seen = set()
    for status, answer in [*answers.items(), (404, page)]:
        assert answer.status_code == status, answer.text
        request_id = answer.headers["x-request-id"]
        assert NEW_ID.fullmatch(request_id), request_id
        assert access_line(log, request_id)["status"] == status
        seen.add(request_id)
    assert len(seen) == len(answers) + 1, "two requests shared an id"

    failed = answers[500]
    request_id = failed.headers["x-request-id"]
    assert failed.json()["error"] == "internal_error"
    assert request_id in failed.json()["detail"]  # the user can quote it to the operator
    assert "Traceback" not in failed.text and "runs" not in failed.json()["detail"]
    (error,) = [e for e in lines(log) if e["level"] == "error" and e["request_id"] == request_id]
    assert "no such table: runs" in error["exception"]
    assert access_line(log, request_id)["route"] == "/api/v1/runs"


def test_a_sane_incoming_id_is_kept_and_a_hostile_one_replaced(
    client: TestClient, log: io.StringIO
) -> None:
    for sane in ("abc-123", "0af7651916cd43dd8448eb211c80319c", "trace.1:span_2", "a" * 128):
        answer = client.get("/healthz", headers={"X-Request-ID": sane})
        assert answer.headers["x-request-id"] == sane
        assert access_line(log, sane)["status"] == 200
    hostile: list[str | bytes] = [
        "a" * 129,  # too long
        "x" * 100_000,
        "abc\nFAKE LOG LINE",  # a forged log line
        "abc\r\nSet-Cookie: session=stolen",  # a forged header
        '"><script>alert(1)</script>',
        "spaced id",
        "",
        "سلام".encode(),  # not ASCII
    ]
    for value in hostile:
        answer = client.get("/healthz", headers={"X-Request-ID": value})
        replaced = answer.headers["x-request-id"]
        assert NEW_ID.fullmatch(replaced), replaced
        assert "set-cookie" not in answer.headers
        assert access_line(log, replaced)["status"] == 200
    for marker in ("FAKE LOG LINE", "stolen", "<script>", "x" * 200):
        assert marker not in written(log)


def test_json_lines_carry_time_level_logger_message_and_the_access_fields(
    client: TestClient, log: io.StringIO
) -> None:
    answer = client.get(
        "/api/v1/runs/424242?token=not-for-the-log", headers={"X-Request-ID": "req-7"}
    )
    assert answer.status_code == 404
    line = access_line(log, "req-7")
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert line["level"] == "info" and line["logger"] == "lastedocation.access"
    assert line["method"] == "GET" and line["path"] == "/api/v1/runs/424242"
    assert line["route"] == "/api/v1/runs/{run_id}" and line["status"] == 404
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "/api/v1/runs/424242" in line["message"] and "404" in line["message"]
    assert "not-for-the-log" not in written(log)  # query strings may hold credentials
    assert "Authorization" not in written(log) and "Bearer" not in written(log)
    # a line logged outside any request has no id
    logging.getLogger("lastedocation.test").warning("between requests")
    (outside,) = [e for e in lines(log) if e["message"] == "between requests"]
    assert outside["request_id"] is None and outside["level"] == "warning"


def test_text_lines_carry_the_request_id(client: TestClient) -> None:
    root = logging.getLogger()
    level, buffer = root.level, io.StringIO()
    handler = configure_logging(level="info", fmt="text", stream=buffer)
    try:
        client.get("/healthz", headers={"X-Request-ID": "text-id-1"})
        # a newline in the path (%0A, decoded) is written escaped: no forged line
        client.get("/api/v1/x%0A2026-01-01 00:00:00 ERROR forged", headers={"X-Request-ID": "t2"})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text_lines = buffer.getvalue().splitlines()
    (line,) = [entry for entry in text_lines if "[text-id-1]" in entry]
    assert "INFO lastedocation.access [text-id-1] GET /healthz 200" in line
    (line,) = [entry for entry in text_lines if "[t2]" in entry]
    assert "GET /api/v1/x\\n2026-01-01 00:00:00 ERROR forged 404" in line
    assert not any(entry.startswith("2026-01-01") for entry in text_lines)


@pytest.mark.slow
def test_serve_writes_json_lines(tmp_path: Path) -> None:
    """A real `lastedocation serve` with LASTEDOCATION_LOG_FORMAT=json: uvicorn's lines
    and the studio's are JSON on stderr, and the access line carries the request id."""
    output = tmp_path / "serve.log"
    server = StudioServer(
        tmp_path / "studio",
        log_path=output,
        LASTEDOCATION_LOG_FORMAT="json",
        LASTEDOCATION_LOG_LEVEL="info",
    )
    server.start()
    try:
        answer = httpx.get(f"{server.url}/api/v1/runs/5", headers={"X-Request-ID": "serve-1"})
        assert answer.status_code == 401 and answer.headers["x-request-id"] == "serve-1"
    finally:
        server.stop()
    logged = [line for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    entries = [json.loads(line) for line in logged if line.startswith("{")]
    # the other lines are the banner printed to stdout (and the one-time setup link, a
    # credential: printed for the operator, never logged)
    others = [line for line in logged if not line.startswith("{")]
    assert len(others) <= 8 and not any("uvicorn" in line.lower() for line in others), others
    assert not any(line.startswith(("INFO:", "WARNING:", "ERROR:")) for line in logged)
    assert not any("setup?token" in json.dumps(entry) for entry in entries)
    (access,) = [e for e in entries if e.get("request_id") == "serve-1"]
    assert access["route"] == "/api/v1/runs/{run_id}" and access["status"] == 401
    assert any(e["logger"].startswith("uvicorn") for e in entries)
