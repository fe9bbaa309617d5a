"""First start: no default password; a one-time set-up token makes the first admin."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.auth import setup
from lastedocation.settings import Settings
from tests.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


def _token(app: FastAPI) -> str:
    with app.state.sessions() as session:
        token = setup.start_setup(session=session)
    assert token is not None
    return token


def test_setup_token_makes_the_first_admin_once(app: FastAPI) -> None:
    with TestClient(app) as client:
        # a fresh studio has no account and no default password
        for guess in ("admin", "password", "changeme", "lastedocation"):
            login = client.post("/api/v1/auth/login", json={"username": "admin", "password": guess})
            assert login.status_code == 401
        assert client.get("/api/v1/datasets").status_code == 401

        token = _token(app)
        body = {"token": token, "username": "Shirin", "password": PASSWORD}
        wrong = client.post("/api/v1/auth/setup", json={**body, "token": "guess"})
        assert wrong.status_code == 403
        weak = client.post("/api/v1/auth/setup", json={**body, "password": "short"})
        assert weak.status_code == 400 and weak.json()["field"] == "password"

        created = client.post("/api/v1/auth/setup", json=body)  # the bad tries did not burn it
        assert created.status_code == 201, created.text
        assert created.json()["username"] == "shirin" and created.json()["role"] == "admin"
        again = client.post("/api/v1/auth/setup", json={**body, "username": "mallory"})
        assert again.status_code == 409
        sign_in(client, "shirin")
        assert client.get("/api/v1/auth/me").json()["role"] == "admin"
    with app.state.sessions() as session:
        assert setup.start_setup(session=session) is None


def test_a_restart_replaces_the_token(app: FastAPI) -> None:
    with TestClient(app) as client:
        first, second = _token(app), _token(app)
        body = {"token": first, "username": "shirin", "password": PASSWORD}
        assert client.post("/api/v1/auth/setup", json=body).status_code == 403
        body["token"] = second
        assert client.post("/api/v1/auth/setup", json=body).status_code == 201


def test_setup_page_form(app: FastAPI) -> None:
    with TestClient(app) as client:
        token = _token(app)
        page = client.get("/setup", params={"token": token})
        assert page.status_code == 200 and f'value="{token}"' in page.text
        assert page.headers["content-type"].startswith("text/html")
        csrf = client.cookies.get("ldt_csrf")
        assert csrf  # the page gave this browser its CSRF token
        form = {"token": token, "username": "shirin", "password": PASSWORD, "csrf_token": csrf}
        forged = client.post("/setup", data={**form, "csrf_token": "x", "password_again": PASSWORD})
        assert forged.status_code == 403  # a form posted from elsewhere
        mismatch = client.post("/setup", data={**form, "password_again": PASSWORD + "x"})
        assert mismatch.status_code == 400
        short = client.post("/setup", data={**form, "password": "short", "password_again": "short"})
        assert short.status_code == 400 and "at least 10 characters" in short.text
        done = client.post("/setup", data={**form, "password_again": PASSWORD})
        assert done.status_code == 200 and done.url.path == "/"  # signed in, on the dashboard
        assert 'action="/setup"' not in client.get("/setup", params={"token": token}).text
        sign_in(client, "shirin")


@pytest.mark.slow
def test_serve_prints_a_working_setup_link(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "studio")
    env = {
        **os.environ,
        "LASTEDOCATION_DATA_DIR": str(settings.data_dir),
        "LASTEDOCATION_IMPORT_SAMPLE_DATASET": "false",
        "LASTEDOCATION_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "300",
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "lastedocation.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        link = None
        deadline = time.monotonic() + 60
        while link is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "serve exited without printing a set-up link"
            found = re.search(r"(http://\S+/setup\?token=(\S+))", line)
            link = found and found.group(1)
        assert link is not None and link.startswith(f"http://127.0.0.1:{port}/setup?token=")
        token = link.split("token=")[1]
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"token": token, "username": "shirin", "password": PASSWORD}
        assert httpx.post(f"{url}/api/v1/auth/setup", json=body).status_code == 201
        assert httpx.post(f"{url}/api/v1/auth/setup", json=body).status_code == 409
        with httpx.Client(base_url=url) as client:
            sign_in(client, "shirin")
            assert client.get("/api/v1/datasets").json() == []
        assert oct(settings.secret_key_path.stat().st_mode & 0o777) == "0o600"
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
