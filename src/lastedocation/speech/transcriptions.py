"""Background transcriptions: long audio files transcribed by a worker thread while the
client watches the segments arrive (or comes back later for the text).

    queued ──> running ──> done
       │          ├──────> failed      (bad audio, model gone, server restart)
       │          └─> cancelling ──> cancelled   (stops between two segments)
       └──────────────────────────> cancelled

A job belongs to the account that sent it (another member's job answers 404; admins see
all). Its audio waits in `DATA_DIR/transcriptions/` and is deleted when the job ends,
however it ends. Each state change and each segment is appended to the job's event log
(`TranscriptionEvent`, numbered by `seq`), which the live stream sends and from which
the segments are read back. `Transcriber` (speech/transcriber.py) runs the jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from lastedocation import ownership
from lastedocation.auth.models import User
from lastedocation.errors import Conflict, InvalidInput, NotFound
from lastedocation.models.entries import ModelEntry
from lastedocation.runs.live import polled_events
from lastedocation.settings import Settings
from lastedocation.speech import subtitles
from lastedocation.speech.entries import ACTIVE, ENDED, Transcription, TranscriptionEvent
from lastedocation.speech.stt import Options, Segment

DOWNLOAD_FORMATS = {"txt": "text", "srt": "srt", "vtt": "vtt", "json": "verbose_json"}


def jobs_dir(settings: Settings) -> Path:
    return settings.data_dir / "transcriptions"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobRequest:
    """What a client asks of a background transcription."""

    model: ModelEntry
    language: str | None = "fa"
    vad: bool = True
    word_timestamps: bool = False
    prompt: str | None = None

    def options(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "vad": self.vad,
            "word_timestamps": self.word_timestamps,
            "initial_prompt": self.prompt,
        }


def submit(
    *,
    session: Session,
    settings: Settings,
    user: User,
    audio: Path,
    filename: str,
    request: JobRequest,
) -> Transcription:
    """Queue `audio` (moved into the jobs folder) for transcription."""
    waiting = session.scalar(
        select(func.count())
        .select_from(Transcription)
        .where(Transcription.owner_id == user.id, Transcription.state.in_(ACTIVE))
    )
    if (waiting or 0) >= settings.max_queued_transcriptions:
        raise Conflict(
            f"you have {waiting} transcriptions waiting or running, the most an account may "
            "have (LASTEDOCATION_MAX_QUEUED_TRANSCRIPTIONS): wait for one to end or cancel one",
            limit=settings.max_queued_transcriptions,
        )
    job = Transcription(
        owner_id=user.id,
        model_id=request.model.id,
        model_name=request.model.name,
        filename=filename,
        state="queued",
        options=request.options(),
        vad=request.vad,
        audio_bytes=audio.stat().st_size,
    )
    session.add(job)
    session.flush()
    folder = jobs_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{job.id:06d}.audio"
    os.replace(audio, target)
    try:
        job.audio = str(target.relative_to(settings.data_dir))
        add_event(session, job, "state", state="queued", progress=0.0)
        session.commit()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return job


def add_event(session: Session, job: Transcription, kind: str, **data: Any) -> None:
    """Append to the job's log (not committed); `seq` and `type` frame it on the stream.

    The worker and a cancel may log at the same moment: `seq` is taken by one UPDATE
    (which holds the row until the commit), never read first and written back."""
    seq = session.execute(
        update(Transcription)
        .where(Transcription.id == job.id)
        .values(last_seq=Transcription.last_seq + 1)
        .returning(Transcription.last_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(job, "last_seq", seq)
    event = {"seq": seq, "type": kind, **data}
    session.add(TranscriptionEvent(transcription_id=job.id, seq=seq, type=kind, data=event))


def remove_audio(settings: Settings, job: Transcription) -> None:
    if job.audio:
        (settings.data_dir / job.audio).unlink(missing_ok=True)
        job.audio = None


def get_transcription(
    *, session: Session, transcription_id: int, user: User | None
) -> Transcription:
    job = session.get(Transcription, transcription_id)
    if job is None:
        raise NotFound(
            f"no transcription with id {transcription_id}", transcription_id=transcription_id
        )
    ownership.check(user, "transcription", transcription_id, job.owner_id)
    return job


def list_transcriptions(
    *, session: Session, user: User | None, offset: int = 0, limit: int = 100
) -> list[Transcription]:
    """Yours, newest first (an admin's: everyone's)."""
    query = select(Transcription).where(
        ownership.visible(user, "transcription", Transcription.owner_id)
    )
    query = query.order_by(Transcription.id.desc()).offset(offset).limit(limit)
    return list(session.scalars(query))


def cancel(*, session: Session, settings: Settings, job: Transcription) -> Transcription:
    """A queued job ends at once; a running one stops after its current segment."""
    if job.state in ENDED:
        raise Conflict(
            f"transcription {job.id} has ended ({job.state}): there is nothing to cancel",
            state=job.state,
        )
    for before, after in (("queued", "cancelled"), ("running", "cancelling")):
        # conditional: a worker may claim the job at this very moment
        claimed = session.execute(
            update(Transcription)
            .where(Transcription.id == job.id, Transcription.state == before)
            .values(state=after)
        )
        if claimed.rowcount:  # type: ignore[attr-defined]
            session.refresh(job)
            if after == "cancelled":
                job.finished_at = now()
                remove_audio(settings, job)
            add_event(session, job, "state", state=after, progress=job.progress)
            break
    session.commit()
    session.refresh(job)
    return job


def delete_transcription(*, session: Session, settings: Settings, job: Transcription) -> None:
    if job.state in ACTIVE:
        raise Conflict(
            f"transcription {job.id} is {job.state}: cancel it first, then delete it",
            state=job.state,
        )
    remove_audio(settings, job)
    session.execute(delete(TranscriptionEvent).where(TranscriptionEvent.transcription_id == job.id))
    session.delete(job)
    session.commit()


def segments(*, session: Session, transcription_id: int) -> list[Segment]:
    query = (
        select(TranscriptionEvent.data)
        .where(
            TranscriptionEvent.transcription_id == transcription_id,
            TranscriptionEvent.type == "segment",
        )
        .order_by(TranscriptionEvent.seq)
    )
    return [Segment.from_dict(data["segment"]) for data in session.scalars(query)]


def download(*, session: Session, job: Transcription, fmt: str) -> tuple[str, str, str]:
    """(body, media type, file name) of an ended job's transcript in `fmt`."""
    if fmt not in DOWNLOAD_FORMATS:
        raise InvalidInput(
            f"unknown format {fmt!r}: choose one of {', '.join(DOWNLOAD_FORMATS)}", field="format"
        )
    if job.state in ACTIVE:
        raise Conflict(
            f"transcription {job.id} is {job.state}: download it when it has ended, or "
            "follow its segments live at .../events",
            state=job.state,
        )
    found = segments(session=session, transcription_id=job.id)
    style = DOWNLOAD_FORMATS[fmt]
    body = subtitles.render(
        found,
        style,
        language=job.language or "fa",
        duration=job.duration_s or 0.0,
        with_words=bool(job.options.get("word_timestamps")),
    )
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False, indent=1)
    stem = Path(job.filename).stem or f"transcription-{job.id}"
    return body, subtitles.MEDIA_TYPES[style], f"{stem}.{fmt}"


def _events_after(
    sessions: sessionmaker[Session], transcription_id: int, after: int
) -> tuple[list[dict[str, Any]], bool]:
    """The next page of events after `after`, and whether the job has ended (read first:
    its last event is committed with the state, so an ended job's page is complete)."""
    with sessions() as session:
        state = session.scalar(
            select(Transcription.state).where(Transcription.id == transcription_id)
        )
        query = (
            select(TranscriptionEvent.data)
            .where(
                TranscriptionEvent.transcription_id == transcription_id,
                TranscriptionEvent.seq > after,
            )
            .order_by(TranscriptionEvent.seq)
            .limit(500)
        )
        return list(session.scalars(query)), state is None or state in ENDED


def stream(
    sessions: sessionmaker[Session], transcription_id: int, after: int
) -> AsyncIterator[bytes]:
    """Every event of the job after `after`, then live ones until the job ends."""
    return polled_events(partial(_events_after, sessions, transcription_id), after)


def job_options(job: Transcription) -> Options:
    saved = job.options
    return Options(
        language=saved.get("language"),
        vad=bool(saved.get("vad", True)),
        word_timestamps=bool(saved.get("word_timestamps")),
        initial_prompt=saved.get("initial_prompt"),
    )


def delete_owned_transcriptions(session: Session, settings: Settings, *, user_id: int) -> int:
    """Delete an account's transcriptions (not committed), for an admin deleting it with
    everything it owned; refused, with nothing deleted, while one of them may still run."""
    owned = list(session.scalars(select(Transcription).where(Transcription.owner_id == user_id)))
    busy = [job.id for job in owned if job.state in ACTIVE]
    if busy:
        raise Conflict(
            f"the account's transcription(s) {', '.join(map(str, busy))} are "
            "waiting or running: cancel them first",
            transcriptions=busy,
        )
    for job in owned:
        remove_audio(settings, job)
        session.execute(
            delete(TranscriptionEvent).where(TranscriptionEvent.transcription_id == job.id)
        )
        session.delete(job)
    return len(owned)
