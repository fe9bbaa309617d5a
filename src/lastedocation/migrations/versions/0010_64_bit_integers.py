"""every integer column is 64-bit on PostgreSQL too

SQLite's INTEGER always holds 64 bits; PostgreSQL's holds 32, so there a dataset or
backup past 2 GiB, a split seed past 2**31 or an id looked up past 2**31 failed with
"integer out of range". Ids keep their sequences, widened too. Nothing changes on SQLite.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = {
    "users": ("id",),
    "api_tokens": ("id", "user_id"),
    "refresh_tokens": ("id", "user_id"),
    "datasets": ("id", "owner_id", "rows", "rows_dropped", "size_bytes", "upload_bytes"),
    "dataset_splits": (
        "id", "dataset_id", "seed", "train_rows", "validation_rows", "train_groups",
        "validation_groups",
    ),
    "runs": (
        "id", "dataset_id", "owner_id", "pid", "exit_code", "step", "total_steps", "last_seq",
        "events_offset",
    ),
    "run_events": ("id", "run_id", "seq", "step"),
    "models": ("id", "run_id", "dataset_id", "owner_id"),
    "model_evaluations": ("id", "model_id", "dataset_id"),
    "transcriptions": (
        "id", "owner_id", "model_id", "segments", "audio_bytes", "last_seq",
    ),
    "transcription_events": ("id", "transcription_id", "seq"),
    "backup_jobs": (
        "id", "requested_by", "files", "bytes_total", "bytes_sent", "attempt", "last_seq",
    ),
    "backup_events": ("id", "job_id", "seq"),
}  # fmt: skip


def _retype(sql_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE {sql_type}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")
        # the id's sequence stops at its own type's largest value
        sequence = bind.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
        op.execute(f"ALTER SEQUENCE {sequence.scalar_one()} AS {sql_type}")


def upgrade() -> None:
    _retype("BIGINT")


def downgrade() -> None:
    _retype("INTEGER")
