"""What a transcription request names and sends, checked before any work starts: the
model (by name or id, a speech model the user may use, with a faster-whisper form) and
the audio file (not empty, and, for a job that waits in a queue, decodable at first
sight), so that a client hears about its mistake at once, as a 4xx naming it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from lastedocation.auth.models import User
from lastedocation.datasets.models import StudioFact
from lastedocation.errors import AudioInvalid, InvalidInput, NotFound
from lastedocation.models import registry
from lastedocation.models.entries import ModelEntry
from lastedocation.settings import Settings
from lastedocation.speech import models as speech_models
from lastedocation.speech.audio import _clock

OPENAI_DEFAULT = "whisper-1"  # what OpenAI's clients send: the studio's default model


def resolve_speech_model(
    *, session: Session, settings: Settings, user: User | None, name: str
) -> ModelEntry:
    """A speech model by name or id; `whisper-1` is the studio's default speech model."""
    wanted = name.strip() or OPENAI_DEFAULT
    if wanted == OPENAI_DEFAULT:
        if settings.default_speech_model:
            wanted = settings.default_speech_model
        else:
            fact = session.get(StudioFact, speech_models._FACT)
            entry = session.get(ModelEntry, int(fact.value)) if fact is not None else None
            if entry is None:
                raise NotFound(
                    f"{OPENAI_DEFAULT} means the studio's default speech model, and there is "
                    "none: the bundled whisper-base is not registered. Name a speech model, "
                    "or set LASTEDOCATION_DEFAULT_SPEECH_MODEL",
                    model=name,
                )
            wanted = str(entry.id)
    entry = registry.resolve_model(session=session, user=user, name=wanted)
    return speech_models.require_speech(entry)


def model_folder(settings: Settings, entry: ModelEntry) -> Path:
    folder = speech_models.ctranslate2_folder(settings, entry)
    if not (folder / "model.bin").is_file():
        raise InvalidInput(
            f"speech model {entry.name!r} has no faster-whisper (CTranslate2) form to "
            "transcribe with: convert it first",
            field="model",
            model=entry.name,
        )
    return folder


def refuse_empty(path: Path, *, name: str) -> None:
    if path.stat().st_size == 0:
        raise AudioInvalid(f"{name} is empty (0 bytes)", problem="empty", field="file")


def probe(path: Path, *, max_seconds: float, name: str) -> None:
    """Refuse what is plainly not usable audio before queueing it: an empty file, no
    audio stream, a codec that cannot decode, or a container that says it is too long.
    Cheap (the first frame only): the job decodes the whole file later."""
    import av

    refuse_empty(path, name=name)
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise AudioInvalid(f"{name} holds no audio stream", problem="undecodable")
            stream = container.streams.audio[0]
            duration = container.duration / av.time_base if container.duration else None
            if duration is not None and duration > max_seconds:
                raise AudioInvalid(
                    f"{name} is {_clock(duration)} long, longer than the limit of "
                    f"{_clock(max_seconds)} (LASTEDOCATION_MAX_AUDIO_SECONDS)",
                    problem="too_long",
                    limit_s=max_seconds,
                )
            next(iter(container.decode(stream)), None)
    except (av.FFmpegError, ValueError, OSError) as exc:  # type: ignore[attr-defined]
        raise AudioInvalid(
            f"{name} could not be decoded as audio; send wav, mp3, ogg/opus, webm, m4a or flac",
            problem="undecodable",
            field="file",
        ) from exc
