"""Background transcriptions under `/api/v1/speech/transcriptions`: queue a long audio
file (202), follow its segments live over server-sent events, cancel it, download the
transcript as txt, srt, vtt or json, delete it. Each job is its owner's: another
member's id answers 404, as one that does not exist. Thin: the service
(speech/transcriptions.py) decides, the transcriber's threads do the work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lastedocation import ownership
from lastedocation.api.deps import (
    CurrentUser,
    ItemId,
    SessionDep,
    SettingsDep,
    StreamingUser,
    error_responses,
)
from lastedocation.api.routes.transcriptions import (
    FLAG_FIELD,
    LANGUAGE_FIELD,
    MODEL_FIELD,
    PROMPT_FIELD,
    AudioForm,
    about_file,
    parse_form,
    receive_audio,
    upload_body,
)
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.errors import AudioInvalid
from lastedocation.runs.live import EventStreamResponse
from lastedocation.speech import intake, stt, subtitles
from lastedocation.speech import transcriptions as jobs
from lastedocation.speech.entries import Transcription
from lastedocation.speech.transcriber import Transcriber

router = APIRouter(prefix="/speech/transcriptions", tags=["speech"], responses=error_responses(401))
_ONE = error_responses(404, 422)
_UPLOADED = error_responses(400, 413, 422)


class JobForm(AudioForm):
    word_timestamps: bool = False


class SegmentPublic(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[dict[str, Any]] = []


class TranscriptionPublic(BaseModel):
    id: int
    state: str = Field(description="queued, running, cancelling, done, failed or cancelled")
    progress: float = Field(description="0..1: where the last segment ends in the audio")
    model: str
    filename: str
    owner: str
    language: str | None = Field(description="Detected (or given) once it runs")
    language_probability: float | None
    duration_s: float | None
    segment_count: int
    options: dict[str, Any]
    message: str | None = Field(description="Why it failed")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TranscriptionDetail(TranscriptionPublic):
    text: str
    segments: list[SegmentPublic]


def _public(job: Transcription, owners: Mapping[int | None, str]) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "progress": job.progress,
        "model": job.model_name,
        "filename": job.filename,
        "owner": owners.get(job.owner_id, "studio"),
        "language": job.language,
        "language_probability": job.language_probability,
        "duration_s": job.duration_s,
        "segment_count": job.segments,
        "options": job.options,
        "message": job.message,
        "created_at": _utc(job.created_at),
        "started_at": _utc(job.started_at),
        "finished_at": _utc(job.finished_at),
    }


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite keeps no time zone: every time the studio stores is UTC."""
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TranscriptionPublic,
    openapi_extra=upload_body(
        {
            "model": MODEL_FIELD,
            "language": LANGUAGE_FIELD,
            "prompt": PROMPT_FIELD,
            "vad": FLAG_FIELD,
            "word_timestamps": FLAG_FIELD,
        }
    ),
    responses={**_UPLOADED, **error_responses(404, 409)},
)
async def queue_transcription(request: Request, user: StreamingUser, settings: SettingsDep) -> Any:
    """Queue an audio file (multipart field `file`) for transcription in the background."""
    path, filename, fields = await receive_audio(request, settings)
    try:
        form = parse_form(JobForm, fields)

        def work() -> dict[str, Any]:
            try:
                intake.probe(path, max_seconds=settings.max_audio_seconds, name=repr(filename))
            except AudioInvalid as exc:
                raise about_file(exc) from None
            with request.app.state.sessions() as session:
                entry = intake.resolve_speech_model(
                    session=session, settings=settings, user=user, name=form.model
                )
                intake.model_folder(settings, entry)  # refused now if it cannot serve
                job = jobs.submit(
                    session=session,
                    settings=settings,
                    user=user,
                    audio=path,
                    filename=filename,
                    request=jobs.JobRequest(
                        model=entry,
                        language=form.language,
                        vad=form.vad,
                        word_timestamps=form.word_timestamps,
                        prompt=form.prompt,
                    ),
                )
                return _public(job, {user.id: user.username})

        answer = await run_in_threadpool(work)
    finally:
        path.unlink(missing_ok=True)  # moved into the jobs folder, unless refused
    transcriber: Transcriber = request.app.state.transcriber
    transcriber.wake()
    return answer


@router.get("", response_model=list[TranscriptionPublic], responses=error_responses(422))
def list_transcriptions(
    user: CurrentUser,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Your transcriptions, newest first (an admin sees everyone's)."""
    found = jobs.list_transcriptions(session=session, user=user, offset=offset, limit=limit)
    owners = ownership.owner_names(session, {job.owner_id for job in found})
    return [_public(job, owners) for job in found]


@router.get("/{transcription_id}", response_model=TranscriptionDetail, responses=_ONE)
def get_transcription(transcription_id: ItemId, user: CurrentUser, session: SessionDep) -> Any:
    """State, progress, the segments so far and the text."""
    job = jobs.get_transcription(session=session, transcription_id=transcription_id, user=user)
    found = jobs.segments(session=session, transcription_id=job.id)
    owners = ownership.owner_names(session, {job.owner_id})
    return {
        **_public(job, owners),
        "text": job.text if job.text is not None else stt.joined_text(found),
        "segments": [s.to_dict() for s in found],
    }


@router.get(
    "/{transcription_id}/events",
    responses={
        200: {
            "description": "Server-sent events until the job ends.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_ONE,
    },
)
async def transcription_events(
    transcription_id: ItemId,
    request: Request,
    user: StreamingUser,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_DB_INT)] = None,
) -> EventStreamResponse:
    """Server-sent events: `state` changes and each `segment` as it is decoded, until the
    job ends. Event ids are the job's `seq`; `Last-Event-ID` resumes right after it."""
    sessions = request.app.state.sessions

    def check() -> None:
        with sessions() as session:
            jobs.get_transcription(session=session, transcription_id=transcription_id, user=user)

    await run_in_threadpool(check)  # 404 before the stream starts
    if after is None:
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return EventStreamResponse(
        jobs.stream(sessions, transcription_id, after), send_timeout_s=settings.sse_send_timeout_s
    )


@router.post(
    "/{transcription_id}/cancel",
    response_model=TranscriptionPublic,
    responses={**_ONE, **error_responses(409)},
)
def cancel_transcription(
    transcription_id: ItemId, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Any:
    """Stop a job: a queued one at once, a running one after its current segment."""
    job = jobs.get_transcription(session=session, transcription_id=transcription_id, user=user)
    job = jobs.cancel(session=session, settings=settings, job=job)
    return _public(job, ownership.owner_names(session, {job.owner_id}))


@router.get(
    "/{transcription_id}/download",
    responses={
        200: {
            "description": "The transcript as a file (Content-Disposition: attachment).",
            "content": {
                media: {"schema": {"type": "string"}} for media in subtitles.BARE_MEDIA_TYPES
            },
        },
        **_ONE,
        **error_responses(409),
    },
)
def download_transcription(
    transcription_id: ItemId,
    user: CurrentUser,
    session: SessionDep,
    fmt: Annotated[Literal["txt", "srt", "vtt", "json"], Query(alias="format")] = "txt",
) -> Response:
    """The transcript of an ended job as a file: txt, srt, vtt or json."""
    job = jobs.get_transcription(session=session, transcription_id=transcription_id, user=user)
    body, media_type, name = jobs.download(session=session, job=job, fmt=fmt)
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return Response(body, media_type=media_type, headers={"Content-Disposition": disposition})


@router.delete(
    "/{transcription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ONE, **error_responses(409)},
)
def delete_transcription(
    transcription_id: ItemId, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete an ended job and its transcript (409 while it may still run)."""
    job = jobs.get_transcription(session=session, transcription_id=transcription_id, user=user)
    jobs.delete_transcription(session=session, settings=settings, job=job)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
