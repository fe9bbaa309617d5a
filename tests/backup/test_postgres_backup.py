"""A studio on PostgreSQL: backed up with pg_dump (one consistent transaction) and
restored with pg_restore into an empty database on a new data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.backup import restore
from lastedocation.backup.runner import engine_for
from lastedocation.backup.targets import BackupTarget
from lastedocation.errors import Conflict
from lastedocation.settings import Settings
from tests.backup.test_restore_resume import back_up
from tests.conftest import ADMIN, add_account, sign_in
from tests.postgres import Postgres
from tests.runs.test_runs_api import upload_percqa


def test_a_postgresql_studio_comes_back_on_a_new_database(
    tmp_path: Path, postgres: Postgres
) -> None:
    target = BackupTarget(name="nas", kind="folder", path=str(tmp_path / "nas"))
    old = Settings(
        data_dir=tmp_path / "old",
        database_url=postgres.create_database("studio_old"),
        backup_targets=[target],
    )
    add_account(old, ADMIN, role="admin")
    with TestClient(create_app(old)) as client:
        sign_in(client)
        upload_percqa(client, rows=40)
        before = [(d["id"], d["name"], d["rows"]) for d in client.get("/api/v1/datasets").json()]
        assert back_up(client, target).bytes_sent > 0
    assert len(before) == 2  # the sample and the upload

    new = Settings(
        data_dir=tmp_path / "new",
        database_url=postgres.create_database("studio_new"),
        backup_targets=[target],
    )
    restored = restore.restore(
        engine=engine_for(new, target),
        snapshot_id="latest",
        data_dir=new.data_dir,
        database_url=new.database_url,
    )
    assert restored.database == "postgresql"
    with TestClient(create_app(new)) as client:
        sign_in(client)
        after = [(d["id"], d["name"], d["rows"]) for d in client.get("/api/v1/datasets").json()]
        assert after == before
        first = client.get("/api/v1/datasets").json()[0]["id"]
        assert client.get(f"/api/v1/datasets/{first}/preview").status_code == 200
    # the restored database now holds a studio: a second restore must be asked for
    with pytest.raises(Conflict, match="postgresql database studio_new"):
        restore.restore(
            engine=engine_for(new, target),
            snapshot_id="latest",
            data_dir=tmp_path / "other",
            database_url=new.database_url,
        )
