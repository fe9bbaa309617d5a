"""The database, on SQLite and on PostgreSQL: the migrations build from empty exactly
the schema the models describe, go all the way down and up again and keep what the
studio stored; numbers past 32 bits and times in a server far from UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect

import lastedocation.api  # noqa: F401  (every model's table joins the metadata)
from lastedocation.db import Base, make_engine, migrate
from lastedocation.settings import Settings

pytestmark = pytest.mark.databases


def _downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("lastedocation") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_from_empty_to_the_models_schema_down_and_up_again(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        migrate(engine)
        assert _differences(engine) == []  # types included: 64-bit integers on both
        _downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_stored_rows_survive_the_newest_migrations(client: TestClient, settings: Settings) -> None:
    rows = b'{"question": "q", "answer": "a"}\n' * 30
    dataset = client.post("/api/v1/datasets", files={"file": ("a.jsonl", rows)}).json()["id"]
    split = client.post(f"/api/v1/datasets/{dataset}/splits", json={"seed": 7})
    assert split.status_code == 201, split.text
    engine = make_engine(settings)
    try:
        _downgrade(engine, "0008")
        migrate(engine)
    finally:
        engine.dispose()
    assert client.get(f"/api/v1/datasets/{dataset}").json()["rows"] == 30
    assert client.get(f"/api/v1/datasets/{dataset}/splits").json()[0]["seed"] == 7
    again = client.post("/api/v1/datasets", files={"file": ("b.jsonl", rows)})
    assert again.json()["id"] == dataset + 1  # the id sequence carried on


def test_numbers_past_32_bits(client: TestClient) -> None:
    rows = b'{"question": "q", "answer": "a"}\n' * 30
    dataset = client.post("/api/v1/datasets", files={"file": ("a.jsonl", rows)}).json()["id"]
    seed = 2**40  # PostgreSQL's INTEGER stops at 2**31 - 1
    split = client.post(f"/api/v1/datasets/{dataset}/splits", json={"seed": seed})
    assert split.status_code == 201, split.text
    assert client.get(f"/api/v1/datasets/{dataset}/splits").json()[0]["seed"] == seed
    for path in (f"/api/v1/runs/{2**40}", f"/api/v1/datasets/{2**62}", f"/api/v1/models/{2**35}"):
        assert client.get(path).status_code == 404, path


def test_times_come_back_in_utc_from_a_server_elsewhere(client: TestClient) -> None:
    """The PostgreSQL test databases keep Tehran's time (UTC+03:30)."""
    before = datetime.now(UTC)
    made = client.post("/api/v1/auth/tokens", json={"name": "ci"}).json()["created_at"]
    listed = client.get("/api/v1/auth/tokens").json()[0]["created_at"]
    assert listed == made and listed.endswith("Z")
    assert abs((datetime.fromisoformat(listed) - before).total_seconds()) < 60
