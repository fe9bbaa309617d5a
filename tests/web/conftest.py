from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.conftest import ADMIN, PASSWORD, add_account


def browser_sign_in(client: TestClient, username: str = ADMIN, password: str = PASSWORD) -> None:
    """Sign in through the login page, as a browser does (cookies kept by the client)."""
    client.get("/login")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": client.cookies["ldt_csrf"]},
    )
    assert response.status_code == 200 and response.url.path == "/", response.text[:500]


@pytest.fixture
def browser(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    """A browser signed in to the web UI as an admin (session cookie, CSRF cookie)."""
    with TestClient(app) as client:
        add_account(settings, ADMIN, role="admin")
        browser_sign_in(client)
        yield client
