"""ids are never reused; run and model configs keep no server paths

SQLite reuses the largest rowid once its row is deleted, so a new account, dataset,
run or model could take the id of a deleted one (and with it, e.g., its leftover
export folder or a token's subject). AUTOINCREMENT makes ids strictly increasing;
PostgreSQL's sequences never reuse ids already.

Configs stored before this revision held `data.train`, the absolute path of the
dataset's records; it is dropped (the run's dataset id names the data).

Revision ID: 0005
Revises: 0004
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = ("users", "datasets", "runs", "models")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for name in _TABLES:
            with op.batch_alter_table(
                name, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
    for name in ("runs", "models"):
        _drop_train_path(name)


def _drop_train_path(name: str) -> None:
    table = sa.table(name, sa.column("id", sa.Integer), sa.column("config", sa.JSON))
    bind = op.get_bind()
    for row_id, config in bind.execute(sa.select(table.c.id, table.c.config)).all():
        data: Any = (config or {}).get("data")
        if isinstance(data, dict) and "train" in data:
            del data["train"]
            bind.execute(table.update().where(table.c.id == row_id).values(config=config))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _TABLES:
            with op.batch_alter_table(
                name, recreate="always", table_kwargs={"sqlite_autoincrement": False}
            ):
                pass
