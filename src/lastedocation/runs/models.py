"""Database rows for runs and the events ingested from their event logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lastedocation.db import Base, BigInt


def _now() -> datetime:
    return datetime.now(UTC)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    folder: Mapped[str] = mapped_column(String(255))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True
    )
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_runs_owner_id_users", ondelete="SET NULL"),
        nullable=True,
        index=True,
    )
    pid: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    step: Mapped[int] = mapped_column(BigInt, default=0)
    total_steps: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    last_seq: Mapped[int] = mapped_column(BigInt, default=0)
    events_offset: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RunEvent(Base):
    """One line of a run's events.jsonl, as ingested (seq is the trainer's)."""

    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(BigInt)
    type: Mapped[str] = mapped_column(String(20))
    step: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
