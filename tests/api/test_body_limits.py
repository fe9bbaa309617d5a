"""Every request body but a file upload has a size limit. Over it, the answer is 413
with the studio's error shape: at once when Content-Length says so, and after reading
no more than the limit (and one chunk) when the body streams in without one. A real
server answers a 20 MB body that way without its memory growing by the body's size
(before the limit, that body took 38 s and 5 GB)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.api.limits import UPLOAD_ROUTES
from lastedocation.auth.browser import CSRF_COOKIE, CSRF_HEADER
from lastedocation.settings import Settings
from tests.api.test_upload_server import PeakRss
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer

MB = 2**20
CHUNK = 64 * 1024
OVER = 20 * MB  # the body of the report
CHAT = "/v1/chat/completions"
ROUTES = [CHAT, "/api/v1/runs", "/api/v1/auth/login"]
LIMITS = {CHAT: 4 * MB, "/api/v1/runs": MB, "/api/v1/auth/login": MB}  # the defaults


class Streamed:
    """A JSON body of `size` bytes sent in 64 KiB chunks; `sent` counts how much of it
    the server has asked for."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"model": "m", "messages": ['
        while self.sent < self.size:
            self.sent += CHUNK
            yield b" " * CHUNK


def _post(app: FastAPI, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """POST in-process, straight into the app: the body is pulled only as the app reads."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(send())


def _json(member_client: TestClient, **headers: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "authorization": member_client.headers["Authorization"],
        **headers,
    }


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_having_read_at_most_the_limit(
    app: FastAPI, member_client: TestClient, path: str, declared: bool
) -> None:
    body = Streamed(OVER)
    headers = _json(member_client, **({"content-length": str(OVER)} if declared else {}))
    answer = _post(app, path, body, headers)

    assert answer.status_code == 413, answer.text
    limit = LIMITS[path]
    setting = "LASTEDOCATION_MAX_CHAT_BODY_KB" if path == CHAT else "LASTEDOCATION_MAX_BODY_KB"
    assert answer.json() == {
        "error": "payload_too_large",
        "detail": f"the request body is {OVER:,} bytes; the limit is {limit:,} bytes ({setting})"
        if declared
        else f"the request body passes the limit of {limit:,} bytes ({setting})",
        "limit_bytes": limit,
    }
    assert answer.headers["connection"] == "close"  # the server reads no more of it
    # Content-Length over the limit: nothing read; chunked: the limit and one chunk
    assert body.sent <= (0 if declared else limit + CHUNK)


def test_bodies_under_their_limit_pass(app: FastAPI, member_client: TestClient) -> None:
    # a long conversation fits the chat limit, though it is over the default of 1 MiB
    chat = b'{"model": "nope", "messages": [{"role": "user", "content": "%s"}]}' % (
        "س".encode() * MB  # 2 MB of UTF-8
    )
    answer = _post(app, CHAT, chat, _json(member_client))
    assert answer.status_code == 404, answer.text  # read and understood: no such model
    assert _post(app, "/api/v1/runs", chat, _json(member_client)).status_code == 413


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "small", import_sample_dataset=False, max_body_kb=2)
    app = create_app(settings)
    body = b'{"username": "%s", "password": "x"}' % (b"a" * 3000)
    headers = {"content-type": "application/json"}
    answer = _post(app, "/api/v1/auth/login", body, headers)
    assert answer.status_code == 413
    assert answer.json()["limit_bytes"] == 2048
    assert "LASTEDOCATION_MAX_BODY_KB" in answer.json()["detail"]
    assert _post(app, "/api/v1/auth/login", body[:1000], headers).status_code == 422


def test_a_web_form_over_the_limit_is_refused_with_a_page(anon_client: TestClient) -> None:
    form = b"username=admin&password=" + b"x" * (2 * MB)
    answer = anon_client.post(
        "/login", content=form, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")


def test_uploads_keep_their_own_limits(member_client: TestClient) -> None:
    row = '{"question": "پایتخت ایران کجاست؟", "answer": "تهران پایتخت ایران است."}\n'
    rows = (row * (2 * MB // len(row.encode()) + 1)).encode()  # 2 MB: over 1 MiB
    csrf = {"cookie": f"{CSRF_COOKIE}=t", CSRF_HEADER: "t"}  # for the page's upload route
    for method, path in sorted(UPLOAD_ROUTES):  # each exists, and takes more than 1 MiB
        answer = member_client.request(
            method, path, files={"file": ("qa.jsonl", rows)}, headers=csrf
        )
        assert answer.status_code not in (404, 405, 413), (path, answer.status_code)
    answer = member_client.post("/api/v1/datasets/validate", files={"file": ("qa.jsonl", rows)})
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    data_dir = tmp_path_factory.mktemp("limits")
    add_account(Settings(data_dir=data_dir), ADMIN, role="admin")
    add_account(Settings(data_dir=data_dir), "mina")  # a member, as in the report
    studio = StudioServer(data_dir).start()
    assert studio.process is not None
    try:
        yield studio.url, psutil.Process(studio.process.pid)
    finally:
        studio.stop()


def _spaces(size: int) -> Iterator[bytes]:
    yield b'{"model": "m", "messages": ['
    for _ in range(size // CHUNK):
        yield b" " * CHUNK


@pytest.mark.slow
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_real_server_refuses_20_mb_without_holding_it(
    server: tuple[str, psutil.Process], declared: bool
) -> None:
    url, process = server
    with httpx.Client(base_url=url, timeout=30) as client:
        sign_in(client, "mina")
        body: bytes | Iterator[bytes] = b"".join(_spaces(OVER)) if declared else _spaces(OVER)
        meter = PeakRss(process)
        started = time.monotonic()
        try:
            answer: httpx.Response | None = client.post(
                CHAT, content=body, headers={"content-type": "application/json"}
            )
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            answer = None  # the server answered 413 and closed while we were still sending
        took = time.monotonic() - started
        growth = meter.stop()
        if answer is not None:
            assert answer.status_code == 413, answer.text
            assert answer.json()["limit_bytes"] == 4 * MB
        assert growth < 8 * MB, f"server memory grew by {growth / MB:.1f} MB"
        assert took < 5, f"the answer took {took:.1f} s"
        assert client.get("/healthz").status_code == 200
