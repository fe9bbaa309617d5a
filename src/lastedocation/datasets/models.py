"""Database rows for datasets, their splits and one-off studio facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lastedocation.db import Base, BigInt


def _now() -> datetime:
    return datetime.now(UTC)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # "text" (rows of Q/A, chat or plain text) or "speech" (audio files with transcripts)
    kind: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    filename: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(16))
    data_format: Mapped[str] = mapped_column(String(16))
    detection_reason: Mapped[str] = mapped_column(Text)
    question_field: Mapped[str | None] = mapped_column(String(100))
    answer_field: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInt)
    upload_bytes: Mapped[int] = mapped_column(BigInt)
    rows: Mapped[int] = mapped_column(BigInt)
    rows_dropped: Mapped[int] = mapped_column(BigInt, default=0)
    normalized: Mapped[bool] = mapped_column(default=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    normalization: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # None: a shared dataset (the bundled sample, CLI imports), readable by everyone
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_datasets_owner_id_users"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    splits: Mapped[list[DatasetSplit]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="DatasetSplit.id"
    )


class DatasetSplit(Base):
    __tablename__ = "dataset_splits"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    key: Mapped[str | None] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(BigInt)
    validation_fraction: Mapped[float]
    train_rows: Mapped[int] = mapped_column(BigInt)
    validation_rows: Mapped[int] = mapped_column(BigInt)
    train_groups: Mapped[int] = mapped_column(BigInt)
    validation_groups: Mapped[int] = mapped_column(BigInt)
    folder: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    dataset: Mapped[Dataset] = relationship(back_populates="splits")


class StudioFact(Base):
    """Key/value facts the studio remembers, such as whether the sample was imported."""

    __tablename__ = "studio_facts"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
