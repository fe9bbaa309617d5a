"""Passwords: argon2id at the OWASP cost, rehash on sign-in, the length rule."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from lastedocation.auth.models import User
from lastedocation.auth.passwords import hash_password, needs_rehash, verify_password
from lastedocation.settings import Settings
from tests.conftest import PASSWORD, add_account, sign_in

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    hashed = hash_password("یک گذرواژهٔ بلند فارسی")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(hashed, "یک گذرواژهٔ بلند فارسی")
    assert not verify_password(hashed, "یک گذرواژهٔ بلند فارسی ")
    assert not verify_password("not a hash", "anything")
    assert not needs_rehash(hashed)
    assert needs_rehash(PasswordHasher(time_cost=1, memory_cost=8192).hash("x"))


def test_an_old_hash_is_upgraded_at_sign_in(
    app: FastAPI, settings: Settings, client: TestClient
) -> None:
    add_account(settings, "old-timer")
    with app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == "old-timer"))
        assert user is not None
        user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
        session.commit()
    sign_in(TestClient(app), "old-timer")
    with app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == "old-timer"))
        assert user is not None and "m=19456,t=2,p=1" in user.password_hash


def test_short_password_is_a_400_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/v1/users", json={"username": "mina", "password": "short"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "password"
    assert "at least 10 characters" in response.json()["detail"]
    bad_name = client.post("/api/v1/users", json={"username": "a b", "password": PASSWORD})
    assert bad_name.status_code == 400 and bad_name.json()["field"] == "username"
    taken = client.post("/api/v1/users", json={"username": "ADMIN", "password": PASSWORD})
    assert taken.status_code == 409 and taken.json()["field"] == "username"
