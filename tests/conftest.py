from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from lastedocation.api import create_app
from lastedocation.auth import service as accounts
from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.settings import Settings

pytest_plugins = ["tests.postgres"]  # the `postgres` fixture: a private PostgreSQL server

# Studios made by tests register the bundled speech model only where a test asks for it
# (Settings(bundled_speech_model=True)), so model ids and lists stay what each test made.
os.environ.setdefault("LASTEDOCATION_BUNDLED_SPEECH_MODEL", "false")

ROOT = Path(__file__).resolve().parents[1]
PERCQA = ROOT.parent / "shared" / "data" / "percqa" / "train.jsonl"

ADMIN = "admin"
PASSWORD = "correct horse battery staple"


def add_account(
    settings: Settings, username: str, *, role: str = "member", password: str = PASSWORD
) -> int:
    """Create an account on a studio's data folder, as `lastedocation users add` does
    (the server may be running on it or not)."""
    engine = make_engine(settings)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            user = accounts.create_user(
                session=session, username=username, password=password, role=role
            )
            return user.id
    finally:
        engine.dispose()


def sign_in(
    client: TestClient | httpx.Client, username: str = ADMIN, password: str = PASSWORD
) -> dict[str, Any]:
    """Log in over HTTP; `client` then sends the access token with every request."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    client.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    return tokens


@pytest.fixture
def percqa() -> Path:
    assert PERCQA.is_file(), f"the shared PerCQA data is missing at {PERCQA}"
    return PERCQA


DATABASES = ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test (or module) marked `databases` runs once on SQLite and once on PostgreSQL."""
    if metafunc.definition.get_closest_marker("databases") and "database" in metafunc.fixturenames:
        metafunc.parametrize("database", DATABASES, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str | None:
    """The studio's database URL: None (SQLite in the data folder) unless the test is
    marked `databases`; on PostgreSQL, a fresh database of its own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    postgres = request.getfixturevalue("postgres")
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = str(postgres.create_database(name))
    # a server in Tehran (UTC+03:30): a time read back in the server's zone and taken
    # for UTC would be off by hours
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tehran'"))
    finally:
        admin.dispose()
    return url


@pytest.fixture
def settings(tmp_path: Path, database: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "studio",
        database_url=database,
        import_sample_dataset=False,
        bundled_speech_model=False,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    studio = create_app(settings)
    yield studio
    # a test may use the database after the app stopped: those connections close here
    # (PostgreSQL's warn when dropped open)
    studio.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    """The app, running, signed in as an admin (created through the real service)."""
    with TestClient(app) as test_client:
        add_account(settings, ADMIN, role="admin")
        sign_in(test_client)
        yield test_client


def _member(app: FastAPI, settings: Settings, username: str) -> Iterator[TestClient]:
    add_account(settings, username)
    member = TestClient(app)  # the `client` fixture runs the app's lifespan
    try:
        sign_in(member, username)
        yield member
    finally:
        member.close()


@pytest.fixture
def member_client(app: FastAPI, settings: Settings, client: TestClient) -> Iterator[TestClient]:
    """Signed in as the member `mina`."""
    yield from _member(app, settings, "mina")


@pytest.fixture
def other_member_client(
    app: FastAPI, settings: Settings, client: TestClient
) -> Iterator[TestClient]:
    """Signed in as the member `babak`."""
    yield from _member(app, settings, "babak")


@pytest.fixture
def anon_client(app: FastAPI, client: TestClient) -> Iterator[TestClient]:
    """The same running app, signed in as nobody."""
    anonymous = TestClient(app)
    try:
        yield anonymous
    finally:
        anonymous.close()
