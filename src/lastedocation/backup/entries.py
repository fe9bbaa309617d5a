"""Database rows of backup jobs and their event logs.

A job (a backup, a verify, a prune or a restore into a folder) is a row in
`backup_jobs` and an append-only log in `backup_events`, numbered by `seq` within the
job: what the live event stream sends (event ids are `seq`, so a client that
reconnects with `Last-Event-ID` misses nothing). The snapshots themselves live on the
target; these rows are the studio's history of what it did and how long it took.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lastedocation.db import Base, BigInt

KINDS = ("backup", "verify", "prune", "restore")
ACTIVE = ("queued", "running", "cancelling")
ENDED = ("done", "failed", "cancelled")


def now() -> datetime:
    return datetime.now(UTC)


class BackupJob(Base):
    __tablename__ = "backup_jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(40), index=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual, schedule, retry, cli
    state: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    # backup: tags; verify: read_data; restore: snapshot and folder
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    snapshot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    files: Mapped[int] = mapped_column(BigInt, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInt, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInt, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # verify: what is missing or corrupt; backup: checkpoints left out
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempt: Mapped[int] = mapped_column(BigInt, default=1)
    last_seq: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BackupEvent(Base):
    __tablename__ = "backup_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(BigInt)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
