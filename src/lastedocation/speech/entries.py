"""Database rows of background transcriptions and their events.

A transcription job is a row in `transcriptions` (state, progress, options, the text at
the end) and an append-only log in `transcription_events`, numbered by `seq` within the
job: its state changes and each segment as it is decoded. The log is what the live
event stream sends (event ids are `seq`, so a client that reconnects with
`Last-Event-ID` misses nothing), and the segments of a job are read back from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from lastedocation.db import Base, BigInt

STATES = ("queued", "running", "cancelling", "done", "failed", "cancelled")
ACTIVE = ("queued", "running", "cancelling")  # the job may still change
ENDED = ("done", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(UTC)


class Transcription(Base):
    """One audio file to transcribe in the background, owned by the account that sent it.

    `audio` is the uploaded file's place under the data root while the job waits or
    runs; it is deleted (and the column emptied) when the job ends."""

    __tablename__ = "transcriptions"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    )
    model_name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # requested: language (None: detect it), vad, word_timestamps, initial_prompt, ...
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    language_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    segments: Mapped[int] = mapped_column(BigInt, default=0)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    audio: Mapped[str | None] = mapped_column(String(255), nullable=True)
    audio_bytes: Mapped[int] = mapped_column(BigInt, default=0)
    vad: Mapped[bool] = mapped_column(Boolean, default=True)
    last_seq: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TranscriptionEvent(Base):
    """One entry of a job's log: `type` is "state" or "segment"."""

    __tablename__ = "transcription_events"
    __table_args__ = (UniqueConstraint("transcription_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    transcription_id: Mapped[int] = mapped_column(
        ForeignKey("transcriptions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(BigInt)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
