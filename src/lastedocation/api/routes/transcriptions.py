"""OpenAI's `POST /v1/audio/transcriptions`: the transcription is the answer. Long
files go to background transcriptions instead (transcription_jobs.py), which share the
upload and form helpers here.

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="ldt_...")
    with open("talk.mp3", "rb") as audio:
        answer = client.audio.transcriptions.create(model="whisper-1", file=audio)

Uploads stream to a file under the data folder's tmp/ (413 as soon as they pass
LASTEDOCATION_MAX_AUDIO_UPLOAD_MB), and that file is removed however the request ends.
Decoding and transcribing run in worker threads, never on the event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lastedocation.api.deps import SettingsDep, StreamingUser
from lastedocation.api.routes.openai_compat import OPENAI_ERRORS, OpenAIRoute
from lastedocation.api.upload import receive_upload
from lastedocation.datasets.service import safe_filename
from lastedocation.errors import AudioInvalid, InvalidInput
from lastedocation.inference.schemas import ErrorOut
from lastedocation.settings import MB, Settings
from lastedocation.speech import intake, stt, subtitles
from lastedocation.speech.audio import decode

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
_SETTING = "LASTEDOCATION_MAX_AUDIO_UPLOAD_MB"


def upload_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI body of a multipart upload: the file and the text fields beside it."""
    properties = {"file": {"type": "string", "format": "binary"}, **fields}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    content = {"multipart/form-data": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


MODEL_FIELD = {"type": "string", "default": intake.OPENAI_DEFAULT}
LANGUAGE_FIELD = {"type": "string", "default": "fa", "description": "ISO-639-1 code, or auto"}
PROMPT_FIELD = {"type": "string", "maxLength": 1000}
FLAG_FIELD = {"type": "boolean"}


class AudioForm(BaseModel):
    """The text fields sent beside the file (multipart: every value arrives as text)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default=intake.OPENAI_DEFAULT, min_length=1, max_length=200)
    language: str | None = "fa"
    prompt: str | None = Field(default=None, max_length=1000)
    vad: bool = True

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return stt.check_language(value)


class OpenAIForm(AudioForm):
    """OpenAI's fields, and two of the studio's: `vad` and `temperature_fallback`."""

    response_format: subtitles.ResponseFormat = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    temperature_fallback: bool = True
    granularity: Literal["word", "segment"] | None = Field(
        default=None, alias="timestamp_granularities[]"
    )
    stream: bool = False


F = TypeVar("F", bound=AudioForm)


def parse_form(form: type[F], fields: Mapping[str, str]) -> F:
    try:
        return form.model_validate(dict(fields))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        raise InvalidInput(f"{where}: {message}", field=where) from exc


async def receive_audio(request: Request, settings: Settings) -> tuple[Path, str, dict[str, str]]:
    """The uploaded file (in tmp/), its name and the form's fields; nothing left on error."""
    settings.ensure_dirs()
    dest = settings.tmp_dir / f"audio-{uuid.uuid4().hex}.part"
    try:
        upload = await receive_upload(
            request, dest=dest, limit=settings.max_audio_upload_mb * MB, setting=_SETTING
        )
        fields = dict(upload.fields)
        granularities = upload.repeated.get(_GRANULARITIES, [])
        if "word" in granularities:  # OpenAI's clients send both "word" and "segment"
            fields[_GRANULARITIES] = "word"
        return upload.path, safe_filename(upload.filename), fields
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


_GRANULARITIES = "timestamp_granularities[]"


def about_file(exc: AudioInvalid) -> AudioInvalid:
    exc.extra.setdefault("field", "file")
    return exc


@router.post(
    "/v1/audio/transcriptions",
    openapi_extra=upload_body(
        {
            "model": MODEL_FIELD,
            "language": LANGUAGE_FIELD,
            "prompt": PROMPT_FIELD,
            "response_format": {"type": "string", "enum": list(subtitles.RESPONSE_FORMATS)},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "timestamp_granularities[]": {"type": "string", "enum": ["word", "segment"]},
            "vad": FLAG_FIELD,
            "temperature_fallback": FLAG_FIELD,
        }
    ),
    responses={
        200: {
            "description": "The transcription: JSON for json and verbose_json, text for "
            "text, srt and vtt.",
            "content": {
                media: {"schema": {"type": "object" if "json" in media else "string"}}
                for media in subtitles.BARE_MEDIA_TYPES
            },
        },
        **OPENAI_ERRORS,
        413: {
            "model": ErrorOut,
            "description": "The file passes LASTEDOCATION_MAX_AUDIO_UPLOAD_MB.",
        },
        422: {
            "model": ErrorOut,
            "description": "The audio cannot be decoded, or is empty, silent or too long.",
        },
    },
)
async def create_transcription(
    request: Request, user: StreamingUser, settings: SettingsDep
) -> Response:
    """Transcribe an audio file (multipart field `file`). Persian (`fa`) unless
    `language` says otherwise (`auto` detects it)."""
    path, filename, fields = await receive_audio(request, settings)
    try:
        form = parse_form(OpenAIForm, fields)
        if form.stream:
            raise InvalidInput(
                "streaming is not offered for Whisper models: follow a long file's segments "
                "live with POST /api/v1/speech/transcriptions",
                field="stream",
            )
        if form.granularity == "word" and form.response_format != "verbose_json":
            raise InvalidInput(
                "word timestamps come only with response_format verbose_json",
                field="timestamp_granularities",
            )
        sessions = request.app.state.sessions

        def find() -> Path:
            with sessions() as session:
                entry = intake.resolve_speech_model(
                    session=session, settings=settings, user=user, name=form.model
                )
                return intake.model_folder(settings, entry)

        name = repr(filename)
        try:  # what is plainly not audio is refused first, as the jobs route does
            await run_in_threadpool(
                intake.probe, path, max_seconds=settings.max_audio_seconds, name=name
            )
            folder = await run_in_threadpool(find)
            audio = await run_in_threadpool(
                decode, path, max_seconds=settings.max_audio_seconds, name=name
            )
        except AudioInvalid as exc:
            raise about_file(exc) from None
        path.unlink(missing_ok=True)  # decoded: the file is not needed any longer
        options = stt.Options(
            language=form.language,
            temperature=form.temperature,
            temperature_fallback=form.temperature_fallback,
            vad=form.vad,
            word_timestamps=form.granularity == "word",
            initial_prompt=form.prompt,
        )
        speech_models: stt.SpeechModels = request.app.state.speech_models
        model = await run_in_threadpool(speech_models.get, folder)
        result = await run_in_threadpool(stt.transcribe, model, audio.samples, options)
        del audio
        found: list[stt.Segment] = []
        while (segment := await to_thread.run_sync(next, result.segments, None)) is not None:
            found.append(segment)
            if await request.is_disconnected():
                return Response(status_code=499)  # nobody waits for the rest: stop
        body = subtitles.render(
            found,
            form.response_format,
            language=result.language,
            duration=result.duration,
            language_probability=round(result.language_probability, 4),
            with_words=options.word_timestamps,
        )
    finally:
        path.unlink(missing_ok=True)
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=subtitles.MEDIA_TYPES[form.response_format])
