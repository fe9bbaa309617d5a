"""Uploads against a real server process: the size limit holds while the body
streams in, and the server's memory does not grow by the upload's size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer

MB = 1024 * 1024
Server = tuple[str, psutil.Process, Path, dict[str, str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server")
    # the account is made on the data folder before the server starts, as `users add` does
    add_account(Settings(data_dir=data_dir), ADMIN, role="admin")
    studio = StudioServer(data_dir).start()
    assert studio.process is not None
    try:
        with httpx.Client(base_url=studio.url) as client:
            sign_in(client)
            headers = {"Authorization": client.headers["Authorization"]}
        yield studio.url, psutil.Process(studio.process.pid), data_dir, headers
    finally:
        studio.stop()


class PeakRss:
    """Samples a process's resident memory in the background; `.peak` is the maximum."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def _multipart_body(size: int, boundary: str = "XyZbOuNdArY") -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    row = '{"question": "این یک پرسش آزمایشی است؟", "answer": "بله، این پاسخ است."}\n'.encode()
    chunk = row * (MB // len(row))  # whole rows, about 1 MB
    for _ in range(-(-size // len(chunk))):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _post(
    url: str, size: int, *, declare_length: bool, auth: dict[str, str]
) -> httpx.Response | None:
    headers = {"content-type": "multipart/form-data; boundary=XyZbOuNdArY", **auth}
    body: bytes | Iterator[bytes] = _multipart_body(size)
    if declare_length:
        body = b"".join(_multipart_body(size))
    try:
        return httpx.post(f"{url}/api/v1/datasets", content=body, headers=headers, timeout=120)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return None  # the server answered 413 and closed while we were still sending


@pytest.mark.slow
def test_101_mb_streamed_upload_gets_413_without_the_server_holding_it(
    server: Server,
) -> None:
    url, process, data_dir, auth = server
    meter = PeakRss(process)
    response = _post(url, 101 * MB, declare_length=False, auth=auth)
    growth = meter.stop()
    if response is not None:
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["detail"]
    assert growth < 40 * MB, f"server memory grew by {growth / MB:.1f} MB"
    assert list((data_dir / "tmp").iterdir()) == []
    assert httpx.get(f"{url}/api/v1/datasets", headers=auth).json() == []


@pytest.mark.slow
def test_declared_length_over_the_limit_is_refused_at_once(
    server: Server,
) -> None:
    url, _, data_dir, auth = server
    response = _post(url, 101 * MB, declare_length=True, auth=auth)
    if response is not None:
        assert response.status_code == 413
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert list((data_dir / "tmp").iterdir()) == []


@pytest.mark.slow
def test_large_valid_upload_imports_with_bounded_memory(
    server: Server,
) -> None:
    url, process, _, auth = server
    meter = PeakRss(process)
    response = _post(url, 60 * MB, declare_length=False, auth=auth)
    growth = meter.stop()
    assert response is not None and response.status_code == 201, response
    assert response.json()["rows"] > 500_000
    assert growth < 64 * MB, f"server memory grew by {growth / MB:.1f} MB importing 60 MB"


@pytest.mark.slow
def test_anonymous_upload_is_refused_before_the_body_is_stored(server: Server) -> None:
    url, _, data_dir, auth = server
    before = httpx.get(f"{url}/api/v1/datasets", headers=auth).json()
    response = _post(url, 5 * MB, declare_length=False, auth={})
    if response is not None:
        assert response.status_code == 401
    assert list((data_dir / "tmp").iterdir()) == []
    assert httpx.get(f"{url}/api/v1/datasets", headers=auth).json() == before
