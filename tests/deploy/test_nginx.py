"""The shipped nginx configuration in front of a real studio, both on loopback: uploads up
to the limit pass and larger ones get 413 from nginx without reaching the studio; event
streams arrive event by event and resume after `Last-Event-ID`; the web UI and its static
files load through the proxy, over HTTP and HTTPS, with no address of the upstream in
them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from lastedocation.settings import Settings
from tests.conftest import ADMIN, PASSWORD, PERCQA, add_account, sign_in
from tests.deploy.proxy import Nginx
from tests.server import StudioServer

MB = 1024 * 1024
ROW = '{"question": "این یک پرسش آزمایشی است؟", "answer": "بله، این پاسخ است."}\n'.encode()
TINY: dict[str, Any] = {
    "model": {"vocab_size": 500},
    "data": {"split_key": "qid"},
    # metrics every 20 steps: a small event or two a second, while a proxy's buffer holds
    # 4 KB, a dozen of them
    "training": {
        "seq_len": 96,
        "batch_size": 4,
        "max_steps": 2000,
        "eval_every": 1000,
        "log_every": 20,
        "threads": 1,
    },
}

# The studio sends `X-Accel-Buffering: no` on its event streams, which alone would turn
# nginx's buffering off for them; ignoring that header here makes the stream test prove
# the shipped `proxy_buffering off` itself (the one that covers every other stream).
IGNORE_APP_HINT = "proxy_ignore_headers X-Accel-Buffering;"


@dataclass
class Stack:
    studio: StudioServer
    nginx: Nginx
    auth: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("proxy")
    add_account(Settings(data_dir=folder / "studio"), ADMIN, role="admin")
    studio = StudioServer(folder / "studio", log_path=folder / "studio.log").start()
    nginx = Nginx(folder / "nginx", studio.port, extra=IGNORE_APP_HINT)
    try:
        nginx.start()
        with httpx.Client(base_url=nginx.url) as client:
            sign_in(client)
            auth = {"Authorization": client.headers["Authorization"]}
        yield Stack(studio, nginx, auth)
    finally:
        nginx.stop()
        studio.stop()


def _jsonl_body(size: int, boundary: str = "BoUnDaRy") -> bytes:
    """A multipart body holding a JSONL file of whole rows, `size` bytes at most."""
    rows = ROW * (size // len(ROW))
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + rows + f"\r\n--{boundary}--\r\n".encode()


def _post_dataset(stack: Stack, body: bytes | Iterator[bytes]) -> httpx.Response | None:
    headers = {"content-type": "multipart/form-data; boundary=BoUnDaRy", **stack.auth}
    try:
        return httpx.post(
            f"{stack.nginx.url}/api/v1/datasets", content=body, headers=headers, timeout=300
        )
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return None  # answered and closed while the client was still sending


def _log_lines(stack: Stack, needle: str, count: int) -> list[str]:
    """The access log's lines with `needle`, once there are `count` (nginx writes a line
    when it is done with a request, which may be after the client has its answer)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        lines = [line for line in stack.nginx.access_log() if needle in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"{count} lines with {needle!r} never came: {lines}")


@pytest.mark.slow
def test_a_100_mb_upload_passes_and_a_101_mb_one_is_refused_by_nginx(stack: Stack) -> None:
    tmp = stack.studio.data_dir / "tmp"
    body = _jsonl_body(100 * MB)
    accepted = _post_dataset(stack, body)
    assert accepted is not None and accepted.status_code == 201, accepted
    assert accepted.json()["rows"] == (100 * MB) // len(ROW)

    refused = _post_dataset(stack, _jsonl_body(101 * MB))  # Content-Length says it all
    if refused is not None:
        assert refused.status_code == 413
        assert "nginx" in refused.text  # nginx's own page: the studio never answered
    passed, line = _log_lines(stack, "POST /api/v1/datasets", 2)
    assert passed.startswith("201 ")
    assert line.startswith("413 ") and "upstream=- " in line, line  # never forwarded

    # sent in chunks (no length up front), 101 MB still end in 413, whoever counts first,
    # and nothing of it stays behind
    chunks = (body[i : i + MB] for i in range(0, len(body), MB))
    extra = (ROW * (MB // len(ROW)) for _ in range(2))

    def streamed() -> Iterator[bytes]:
        yield next(chunks)
        yield from extra  # more rows before the rest: 102 MB of file in all
        yield from chunks

    refused = _post_dataset(stack, streamed())
    if refused is not None:
        assert refused.status_code == 413
    time.sleep(0.5)
    assert list(tmp.iterdir()) == []
    names = [d["name"] for d in httpx.get(f"{stack.studio.url}/api/v1/datasets",
                                          headers=stack.auth).json()]  # fmt: skip
    assert len(names) == 1


def _start_run(stack: Stack) -> int:
    client = httpx.Client(base_url=stack.nginx.url, headers=stack.auth, timeout=60)
    with client:
        data = b"\n".join(PERCQA.read_bytes().splitlines()[:150]) + b"\n"
        dataset = client.post("/api/v1/datasets", files={"file": ("percqa.jsonl", data)})
        assert dataset.status_code == 201, dataset.text
        run = client.post("/api/v1/runs", json={"dataset_id": dataset.json()["id"], **TINY})
        assert run.status_code == 201, run.text
        run_id = int(run.json()["id"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = client.get(f"/api/v1/runs/{run_id}").json()
            if state["state"] == "running" and state["step"] >= 2:
                return run_id
            assert state["state"] in ("queued", "starting", "running"), state
            time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not start: {state}")


@dataclass
class Frame:
    arrived: float  # time.time() when its bytes came in
    fields: dict[str, str]


def _time(frame: Frame) -> float:
    """When the trainer wrote the event."""
    return float(orjson.loads(frame.fields["data"])["time"])


def _read_stream(
    stack: Stack, run_id: int, *, live: int, **headers: str
) -> tuple[float, list[Frame]]:
    """The run's event stream through the proxy (the `retry:` frame first), read until
    `live` events written after it opened have come; returns when it was asked for, and
    the frames with the time each arrived."""
    frames: list[Frame] = []
    url = f"{stack.nginx.url}/api/v1/runs/{run_id}/events"
    opened, pending = time.time(), b""
    with httpx.stream("GET", url, headers={**stack.auth, **headers}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            pending += chunk
            *complete, pending = pending.split(b"\n\n")
            for raw in complete:
                lines = [line.split(": ", 1) for line in raw.decode().split("\n") if ": " in line]
                frames.append(Frame(time.time(), {key: value for key, value in lines}))
            if sum(1 for f in frames[1:] if _time(f) > opened) >= live:
                return opened, frames
    raise AssertionError(f"the stream ended after {len(frames)} frames")


@pytest.mark.slow
def test_event_stream_arrives_event_by_event_and_resumes_after_last_event_id(
    stack: Stack,
) -> None:
    run_id = _start_run(stack)
    opened, frames = _read_stream(stack, run_id, live=8)
    events = frames[1:]
    seqs = [int(frame.fields["id"]) for frame in events]
    assert seqs == list(range(1, len(seqs) + 1))  # from the start, each once
    # events the trainer wrote after we connected came through within moments of it
    # (the studio reads the trainer's file every 0.2 s), not when a buffer filled
    lags = [f.arrived - _time(f) for f in events if _time(f) > opened]
    assert max(lags) < 2.0, lags

    # reconnect as a browser does: Last-Event-ID is the last event seen
    opened, again = _read_stream(stack, run_id, live=3, **{"Last-Event-ID": str(seqs[-1])})
    # the first frame (a retry hint, a few bytes) comes at once, not when a buffer fills
    assert again[0].fields.get("retry") == "1000"
    assert again[0].arrived - opened < 1.0, again[0].arrived - opened
    resumed = [int(f.fields["id"]) for f in again[1:]]
    assert resumed == list(range(seqs[-1] + 1, seqs[-1] + 1 + len(resumed)))
    stopped = httpx.post(f"{stack.nginx.url}/api/v1/runs/{run_id}/stop", headers=stack.auth)
    assert stopped.status_code == 202, stopped.text


ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def _check_page(client: httpx.Client, path: str, upstream_port: int) -> set[str]:
    """The page loads through the proxy and names nothing absolute; returns its assets."""
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    assert f":{upstream_port}" not in page.text, path
    links = ASSET.findall(page.text)
    absolute = [link for link in links if re.match(r"(?i)(https?:)?//", link)]
    assert absolute == [], (path, absolute)
    return {link for link in links if link.startswith("/static/")}


def _sign_in_page(client: httpx.Client) -> None:
    assert client.get("/login").status_code == 200
    form = {"username": ADMIN, "password": PASSWORD, "csrf_token": client.cookies["ldt_csrf"]}
    signed = client.post("/login", data=form, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/", signed.text


PAGES = ["/", "/datasets", "/runs", "/runs/new", "/models", "/playground", "/speech",
         "/system", "/backup", "/settings"]  # fmt: skip


def _redirect(client: httpx.Client, path: str) -> str:
    response = client.get(path, follow_redirects=False)
    assert response.is_redirect, (path, response.status_code)
    return response.headers["location"]


@pytest.mark.slow
def test_web_ui_and_its_static_files_load_through_the_proxy(stack: Stack) -> None:
    upstream = stack.studio.port
    with httpx.Client(base_url=stack.nginx.url, headers=stack.auth, timeout=30) as client:
        # redirects name the address the browser used (nginx's), never the upstream's
        assert _redirect(client, "/api/v1/runs/") == f"{stack.nginx.url}/api/v1/runs"
    with httpx.Client(base_url=stack.nginx.url, timeout=30) as client:
        assets = _check_page(client, "/login", upstream)
        _sign_in_page(client)
        for path in PAGES:
            assets |= _check_page(client, path, upstream)
        assert any(a.endswith(".css") for a in assets) and any(a.endswith(".js") for a in assets)
        for asset in sorted(assets):
            response = client.get(asset)
            assert response.status_code == 200, asset
            if asset.endswith(".css"):
                assert response.headers["content-type"].startswith("text/css"), asset


@pytest.mark.slow
def test_over_https_the_studio_sees_https_and_sets_secure_cookies(stack: Stack) -> None:
    """X-Forwarded-Proto from the TLS server reaches the studio (it trusts the proxy)."""
    verify = stack.nginx.tls_context()
    with httpx.Client(base_url=stack.nginx.tls_url, verify=verify, timeout=30) as client:
        first = client.get("/login")  # a first visit: the CSRF cookie is set
        assert first.status_code == 200 and "secure" in first.headers["set-cookie"].lower()
        assets = _check_page(client, "/login", stack.studio.port)
        _sign_in_page(client)
        cookies = client.cookies.jar
        assert {c.name for c in cookies if c.secure} >= {"ldt_csrf", "ldt_session"}, list(cookies)
        assets |= _check_page(client, "/", stack.studio.port)
        for asset in sorted(assets):
            assert client.get(asset).status_code == 200, asset
        assert _redirect(client, "/api/v1/runs/") == f"{stack.nginx.tls_url}/api/v1/runs"
    # plain HTTP stays plain: no secure flag where the browser could not send it back
    plain = httpx.get(f"{stack.nginx.url}/login")
    assert "secure" not in plain.headers["set-cookie"].lower()
