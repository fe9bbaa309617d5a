"""Access, refresh and API tokens: rotation, reuse detection, sign-out, password
change, revocation, expiry and the signing key."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from lastedocation.auth import service as accounts
from lastedocation.auth.models import User
from lastedocation.auth.tokens import TokenSigner, load_signing_key
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PASSWORD, sign_in

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _me(client: TestClient, token: str) -> int:
    return client.get("/api/v1/auth/me", headers=_bearer(token)).status_code


def _refresh(client: TestClient, token: str) -> dict[str, Any]:
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    return {"status": response.status_code, **response.json()}


def test_login_answers_a_bearer_pair(anon_client: TestClient) -> None:
    response = anon_client.post(
        "/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["refresh_token"].startswith("ldr_")
    assert _me(anon_client, body["access_token"]) == 200
    wrong = anon_client.post("/api/v1/auth/login", json={"username": ADMIN, "password": "x" * 12})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    nobody = anon_client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    assert nobody.status_code == 401 and nobody.json()["detail"] == wrong.json()["detail"]


def test_refresh_rotates_and_reuse_revokes_the_family(anon_client: TestClient) -> None:
    first = sign_in(anon_client)
    second = _refresh(anon_client, first["refresh_token"])
    assert second["status"] == 200 and second["refresh_token"] != first["refresh_token"]
    third = _refresh(anon_client, second["refresh_token"])
    assert third["status"] == 200
    other_session = sign_in(anon_client)  # another family, untouched by what follows

    # the spent token comes back: someone else holds the chain, so all of it ends
    replay = _refresh(anon_client, second["refresh_token"])
    assert replay["status"] == 401 and "already used" in replay["detail"]
    assert _refresh(anon_client, third["refresh_token"])["status"] == 401
    assert _refresh(anon_client, other_session["refresh_token"])["status"] == 200
    assert _refresh(anon_client, "ldr_made-up")["status"] == 401


def test_logout_revokes_the_session(anon_client: TestClient) -> None:
    one, two = sign_in(anon_client), sign_in(anon_client)
    body = {"refresh_token": one["refresh_token"]}
    assert anon_client.post("/api/v1/auth/logout", json=body).status_code == 204
    assert _refresh(anon_client, one["refresh_token"])["status"] == 401
    assert _refresh(anon_client, two["refresh_token"])["status"] == 200
    three = sign_in(anon_client)
    assert anon_client.post("/api/v1/auth/logout").status_code == 204  # every session
    assert _refresh(anon_client, three["refresh_token"])["status"] == 401
    anon_client.headers.pop("Authorization")
    assert anon_client.post("/api/v1/auth/logout", json=body).status_code == 401


def test_password_change_ends_old_access_and_refresh_tokens(
    member_client: TestClient, anon_client: TestClient
) -> None:
    old = sign_in(anon_client, "mina")
    anon_client.headers.pop("Authorization")
    change = {"current_password": PASSWORD, "new_password": "a new and longer one"}
    wrong = member_client.post("/api/v1/auth/password", json={**change, "current_password": "x"})
    assert wrong.status_code == 400 and wrong.json()["field"] == "current_password"
    short = member_client.post("/api/v1/auth/password", json={**change, "new_password": "short"})
    assert short.status_code == 400 and short.json()["field"] == "new_password"

    response = member_client.post("/api/v1/auth/password", json=change)
    assert response.status_code == 200, response.text
    assert _me(anon_client, old["access_token"]) == 401
    assert member_client.get("/api/v1/auth/me").status_code == 401  # its token is old too
    assert _refresh(anon_client, old["refresh_token"])["status"] == 401
    assert _me(anon_client, response.json()["access_token"]) == 200
    assert (
        anon_client.post(
            "/api/v1/auth/login", json={"username": "mina", "password": PASSWORD}
        ).status_code
        == 401
    )
    sign_in(anon_client, "mina", "a new and longer one")


def test_api_token_works_until_revoked(member_client: TestClient, anon_client: TestClient) -> None:
    created = member_client.post("/api/v1/auth/tokens", json={"name": "notebook"})
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    assert secret.startswith("ldt_") and secret.startswith(created.json()["prefix"])
    token_id = created.json()["id"]

    assert anon_client.get("/api/v1/auth/me", headers=_bearer(secret)).json()["username"] == "mina"
    assert anon_client.get("/api/v1/datasets", headers=_bearer(secret)).status_code == 200
    (listed,) = member_client.get("/api/v1/auth/tokens").json()
    assert "token" not in listed and listed["last_used_at"] is not None
    assert listed["prefix"] == created.json()["prefix"] and secret not in str(listed)

    assert member_client.delete("/api/v1/auth/tokens/999").status_code == 404
    assert member_client.delete(f"/api/v1/auth/tokens/{token_id}").status_code == 204
    assert _me(anon_client, secret) == 401
    assert member_client.get("/api/v1/auth/tokens").json()[0]["revoked"] is True
    assert _me(anon_client, "ldt_made-up") == 401


def test_other_users_api_tokens_are_not_theirs_to_revoke(
    member_client: TestClient, other_member_client: TestClient
) -> None:
    token_id = member_client.post("/api/v1/auth/tokens", json={"name": "x"}).json()["id"]
    assert other_member_client.delete(f"/api/v1/auth/tokens/{token_id}").status_code == 404
    assert other_member_client.get("/api/v1/auth/tokens").json() == []


def test_expired_forged_and_malformed_access_tokens_are_refused(
    app: FastAPI, anon_client: TestClient, settings: Settings
) -> None:
    with app.state.sessions() as session:
        admin = accounts.find_user(session=session, username=ADMIN)
    past = datetime.now(UTC) - timedelta(minutes=16)
    expired = app.state.signer.issue(admin, now=past)
    response = anon_client.get("/api/v1/auth/me", headers=_bearer(expired))
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"
    fresh = app.state.signer.issue(admin)
    assert _me(anon_client, fresh) == 200
    forged = TokenSigner(b"another key of at least thirty-two bytes")
    assert _me(anon_client, forged.issue(admin)) == 401
    assert _me(anon_client, fresh[:-2] + "xx") == 401
    assert _me(anon_client, "not-a-token") == 401
    missing = User(id=999, username="ghost", role="admin", password_changed_at=past)
    assert _me(anon_client, app.state.signer.issue(missing)) == 401
    assert (
        anon_client.get("/api/v1/auth/me", headers={"Authorization": "Basic eA=="}).status_code
        == 401
    )


def test_signing_key_is_made_once_and_private(settings: Settings) -> None:
    key = load_signing_key(settings)
    assert len(key) >= 32 and load_signing_key(settings) == key
    assert stat.S_IMODE(settings.secret_key_path.stat().st_mode) == 0o600
    chosen = Settings(data_dir=settings.data_dir, secret_key="k" * 32)
    assert load_signing_key(chosen) == b"k" * 32
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(data_dir=settings.data_dir, secret_key="too short")
