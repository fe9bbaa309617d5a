"""Text to speech over HTTP: OpenAI's `POST /v1/audio/speech`, and the voices under
`/api/v1/speech/voices` (everyone lists them; admins add and remove them).

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="ldt_...")
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="سلام، دنیا.", response_format="wav"
    ) as answer:
        answer.stream_to_file("hello.wav")

The answer streams: the first sentence's audio is sent before the next sentence is
synthesised (see speech/audio_stream.py for each format). Synthesis runs in worker
threads; the event loop only moves bytes. Everything that can be wrong with a request
(model, voice, input, format, speed) is found before the first byte, and answered in
OpenAI's error shape with `param` naming the field.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lastedocation.api.deps import CurrentUser, SettingsDep, StreamingUser, error_responses
from lastedocation.api.routes.openai_compat import OPENAI_ERRORS, OpenAIRoute
from lastedocation.auth.models import User
from lastedocation.errors import Forbidden, InvalidInput
from lastedocation.speech import tts, voices
from lastedocation.speech.audio import MEDIA_TYPES, OutputFormat
from lastedocation.speech.audio_stream import encode_stream, out_rate
from lastedocation.speech.text import MAX_INPUT_CHARS

log = logging.getLogger("lastedocation.api")

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
voices_router = APIRouter(prefix="/speech/voices", tags=["speech"], responses=error_responses(401))


class SpeechCreate(BaseModel):
    """`POST /v1/audio/speech`, as OpenAI's clients send it."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1,
        max_length=100,
        description='"tts-1" or "tts-1-hd" (the default voice), or an engine: "espeak", '
        '"mms", "piper".',
    )
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, description="Text to read.")
    voice: str = Field(
        min_length=1,
        max_length=100,
        description="A voice id from GET /api/v1/speech/voices; OpenAI's names (alloy, "
        "nova, ...) mean the default Persian voice.",
    )
    response_format: OutputFormat = Field(
        default="wav", description="wav (the default here), mp3, opus, flac or pcm (24 kHz)."
    )
    speed: float = Field(default=1.0, ge=tts.MIN_SPEED, le=tts.MAX_SPEED)
    instructions: str | None = Field(
        default=None, max_length=4096, description="Accepted for OpenAI's clients; not used."
    )
    stream_format: Literal["audio"] = "audio"


class VoicePublic(BaseModel):
    id: str
    engine: str
    name: str
    language: str
    sample_rate: int
    licence: str = Field(description="The voice's licence: MMS-TTS voices are non-commercial.")
    note: str


class VoiceCreate(BaseModel):
    """A voice to register: from the Hub (`repo_id`) or a server folder (`path`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=63, description="The voice's id, e.g. mms-fa.")
    engine: Literal["mms", "piper"]
    repo_id: str | None = Field(
        default=None,
        max_length=200,
        description="e.g. facebook/mms-tts-fas or rhasspy/piper-voices",
    )
    piper_voice: str | None = Field(
        default=None, max_length=120, description="Piper from the Hub: e.g. fa_IR-amir-medium."
    )
    revision: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
    )
    path: str | None = Field(
        default=None, max_length=4096, description="A folder under LASTEDOCATION_SERVER_ROOTS."
    )
    name: str | None = Field(default=None, max_length=100)
    licence: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=500)
    language: str = Field(default="fa", min_length=2, max_length=16)


def _speakers(request: Request) -> tts.SpeakerCache:
    speakers: tts.SpeakerCache = request.app.state.speakers
    return speakers


SpeakersDep = Annotated[tts.SpeakerCache, Depends(_speakers)]


def _admin(user: StreamingUser) -> User:
    """An admin, without a database session held open through a long download."""
    if not user.is_admin:
        raise Forbidden("only an admin can do this")
    return user


StreamingAdmin = Annotated[User, Depends(_admin)]


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={
        200: {
            "description": "The audio, streamed sentence by sentence.",
            "content": {media: {"schema": {"type": "string", "format": "binary"}}
                        for media in sorted(set(MEDIA_TYPES.values()))},
        },
        **{code: OPENAI_ERRORS[code] for code in (400, 401)},
        503: {"description": "The voice's engine cannot run on this server; the answer says why."},
    },
)  # fmt: skip
async def create_speech(
    body: SpeechCreate, user: StreamingUser, settings: SettingsDep, speakers: SpeakersDep
) -> Response:
    """Read `input` aloud. The first sentence's audio is sent before the rest is made."""
    voice = await run_in_threadpool(voices.resolve, settings, model=body.model, voice=body.voice)
    speaker = await run_in_threadpool(speakers.get, voice)
    cancel = threading.Event()
    audio = await run_in_threadpool(
        tts.stream, body.input, speaker, speed=body.speed, cancel=cancel
    )
    first_audio = await run_in_threadpool(next, audio, None)
    if first_audio is None:
        raise InvalidInput(
            f"input: voice {voice.id!r} can read none of this text (it has no letters the "
            "voice knows)",
            field="input",
        )
    fmt = body.response_format
    encoded = encode_stream(itertools.chain([first_audio], audio), rate=voice.sample_rate, fmt=fmt)
    first = await run_in_threadpool(next, encoded)
    headers = {"X-Voice-Id": voice.id, "X-Sample-Rate": str(out_rate(voice.sample_rate, fmt))}
    return StreamingResponse(
        _send(first, encoded, cancel), media_type=MEDIA_TYPES[fmt], headers=headers
    )


async def _send(
    first: bytes, rest: Iterator[bytes], cancel: threading.Event
) -> AsyncIterator[bytes]:
    """The pieces, each made in a worker thread. However the listener ends (all heard,
    gone away), synthesis stops at the next sentence."""
    try:
        yield first
        while True:
            piece = await to_thread.run_sync(next, rest, None, abandon_on_cancel=True)
            if piece is None:
                return
            yield piece
    except Exception:  # the answer has begun: its status cannot change any more
        log.exception("speech synthesis failed in the middle of an answer")
    finally:
        cancel.set()


def _public(voice: tts.Voice) -> VoicePublic:
    return VoicePublic(
        id=voice.id,
        engine=voice.engine,
        name=voice.name,
        language=voice.language,
        sample_rate=voice.sample_rate,
        licence=voice.licence,
        note=voice.note,
    )


@voices_router.get("", response_model=list[VoicePublic])
def list_voices(_user: CurrentUser, settings: SettingsDep) -> Any:
    """The voices `POST /v1/audio/speech` speaks with, with their licences."""
    return [_public(v) for v in voices.list_voices(settings)]


@voices_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=VoicePublic,
    responses={
        **error_responses(400, 403, 404, 409, 413, 422),
        503: {"description": "The Hugging Face Hub cannot be reached; the answer says what to do."},
    },
)
def add_voice(body: VoiceCreate, _admin: StreamingAdmin, settings: SettingsDep) -> Any:
    """Register an MMS or Piper voice (admins): downloaded from the Hub, or copied from
    a server folder under LASTEDOCATION_SERVER_ROOTS. It is tried before it is kept."""
    voice = voices.add_voice(
        settings,
        voice_id=body.id,
        engine=body.engine,
        repo_id=body.repo_id,
        path=body.path,
        piper_voice=body.piper_voice,
        revision=body.revision,
        name=body.name,
        licence=body.licence,
        note=body.note,
        language=body.language,
    )
    return _public(voice)


@voices_router.delete(
    "/{voice_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 403, 404, 422),
)
def remove_voice(
    voice_id: Annotated[str, Path(max_length=63)],
    _admin: StreamingAdmin,
    settings: SettingsDep,
    speakers: SpeakersDep,
) -> Response:
    """Remove a registered voice (admins); espeak-ng's is built in and stays."""
    voices.remove_voice(settings, voice_id)
    speakers.drop(voice_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
