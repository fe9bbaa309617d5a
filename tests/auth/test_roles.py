"""Roles: admins manage accounts; members cannot."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


def test_members_get_403_on_admin_routes(member_client: TestClient) -> None:
    assert member_client.get("/api/v1/auth/me").json()["role"] == "member"
    assert member_client.get("/api/v1/users").status_code == 403
    body = {"username": "eve", "password": PASSWORD, "role": "admin"}
    assert member_client.post("/api/v1/users", json=body).status_code == 403
    assert member_client.delete("/api/v1/users/1").status_code == 403


def test_anonymous_gets_401_on_account_routes(anon_client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/password"),
        ("GET", "/api/v1/auth/tokens"),
        ("POST", "/api/v1/auth/tokens"),
        ("DELETE", "/api/v1/auth/tokens/1"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("DELETE", "/api/v1/users/1"),
    ]:
        response = anon_client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"


def test_admin_adds_lists_and_deletes_accounts(client: TestClient, anon_client: TestClient) -> None:
    body = {"username": "Reza", "password": PASSWORD, "role": "admin"}
    created = client.post("/api/v1/users", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["username"] == "reza" and "password_hash" not in created.json()
    member = client.post("/api/v1/users", json={"username": "sara", "password": PASSWORD})
    assert member.json()["role"] == "member"
    assert [u["username"] for u in client.get("/api/v1/users").json()] == ["admin", "reza", "sara"]

    sign_in(anon_client, "sara")
    dataset = anon_client.post(
        "/api/v1/datasets", files={"file": ("s.jsonl", b'{"question": "a", "answer": "b"}\n')}
    ).json()
    api_token = anon_client.post("/api/v1/auth/tokens", json={"name": "t"}).json()["token"]

    me = client.get("/api/v1/auth/me").json()
    assert client.delete(f"/api/v1/users/{me['id']}").status_code == 409  # not yourself
    assert client.delete("/api/v1/users/999").status_code == 404
    assert client.delete(f"/api/v1/users/{member.json()['id']}").status_code == 204
    # her sessions and tokens end; her dataset passes to the admin, not to everyone
    assert anon_client.get("/api/v1/auth/me").status_code == 401
    gone = anon_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {api_token}"})
    assert gone.status_code == 401
    kept = client.get(f"/api/v1/datasets/{dataset['id']}").json()
    assert kept["owner_id"] == me["id"]
