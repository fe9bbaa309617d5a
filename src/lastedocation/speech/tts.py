"""Text to speech: one interface over three engines, and audio sentence by sentence.

    speaker = cache.get(voice)                       # loaded once, kept (LRU)
    for samples in stream(text, speaker, speed=1.2):  # float32, voice.sample_rate
        send(samples)                                 # the first sentence plays while
                                                      # the next is synthesised

A `Voice` says what a client may see (id, engine, name, language, sample rate,
licence, note); a `Speaker` is a loaded voice that turns one sentence into samples.
The engines (`engines/`): espeak-ng (always there where the binary is), MMS-TTS
through transformers' VitsModel, and Piper voices through piper-tts. Which voices
exist is `voices.py`'s business.

Nothing here imports web or database code; synthesis blocks, so callers run it in
worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from lastedocation.errors import StudioError
from lastedocation.speech.text import MAX_INPUT_CHARS, prepare

if TYPE_CHECKING:
    from lastedocation.settings import Settings

log = logging.getLogger("lastedocation.speech")

EngineName = Literal["espeak", "mms", "piper"]
ENGINES: tuple[EngineName, ...] = ("espeak", "mms", "piper")
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # as OpenAI's `speed`


class SpeechUnavailable(StudioError):
    """An engine that cannot run on this server (a missing binary or package, a voice
    whose files no longer load); the message says what the operator must do."""

    status_code = 503
    code = "speech_unavailable"


@dataclass(frozen=True)
class Voice:
    """A voice as clients see it; `folder` (the model files) is the server's own."""

    id: str
    engine: EngineName
    name: str
    language: str
    sample_rate: int
    licence: str
    note: str = ""
    folder: Path | None = None


class Speaker(Protocol):
    """A loaded voice. `synthesize` may be called from several threads at once."""

    voice: Voice

    def synthesize(self, sentence: str, *, speed: float = 1.0) -> np.ndarray:
        """Mono float32 samples in [-1, 1] at `voice.sample_rate` (empty: nothing the
        voice can read, e.g. only Latin letters for a voice that knows none)."""
        ...


def stream(
    text: str,
    speaker: Speaker,
    *,
    speed: float = 1.0,
    cancel: threading.Event | None = None,
    limit: int = MAX_INPUT_CHARS,
) -> Iterator[np.ndarray]:
    """The audio of `text`, one array per sentence, each synthesised only when asked
    for. The text is checked and prepared here, before the first sentence, so a bad
    input fails at the call and not in the middle of an answer. `cancel` stops it
    between sentences (the listener went away)."""
    sentences = prepare(text, limit=limit)
    return _sentences(sentences, speaker, speed, cancel)


def _sentences(
    sentences: list[str], speaker: Speaker, speed: float, cancel: threading.Event | None
) -> Iterator[np.ndarray]:
    for sentence in sentences:
        if cancel is not None and cancel.is_set():
            return
        samples = speaker.synthesize(sentence, speed=speed)
        if samples.size:
            yield samples


def synthesize(text: str, speaker: Speaker, *, speed: float = 1.0) -> np.ndarray:
    """The whole of `text` as one array (for a file, not for a listener)."""
    parts = list(stream(text, speaker, speed=speed))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def say(
    settings: Settings,
    text: str,
    out: Path,
    *,
    voice: str = "alloy",
    model: str = "tts-1",
    speed: float = 1.0,
) -> Voice:
    """Read `text` aloud into the file `out`, its format from the suffix (.wav, .mp3,
    .opus, .flac, .pcm): what `lastedocation speech say` does. Written sentence by
    sentence; returns the voice used (its licence is the caller's to show)."""
    from lastedocation.errors import InvalidInput
    from lastedocation.speech.audio import OUTPUT_FORMATS
    from lastedocation.speech.audio_stream import encode_stream
    from lastedocation.speech.engines import load_speaker
    from lastedocation.speech.voices import resolve

    fmt = out.suffix.lower().lstrip(".") or "wav"
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"{out.name}: name the file .wav, .mp3, .opus, .flac or .pcm", field="out"
        )
    chosen = resolve(settings, model=model, voice=voice)
    speaker = load_speaker(chosen, espeak_timeout_s=settings.espeak_timeout_s)
    audio = stream(text, speaker, speed=speed)
    with out.open("wb") as handle:
        for piece in encode_stream(audio, rate=chosen.sample_rate, fmt=fmt):  # type: ignore[arg-type]
            handle.write(piece)
    return chosen


def _folder_stamp(folder: Path | None) -> int:
    """The newest modification time under `folder`: a voice written again loads afresh."""
    if folder is None or not folder.is_dir():
        return 0
    return max((p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()), default=0)


class SpeakerCache:
    """Loaded voices, the least recently used dropped past `max_voices`. Thread-safe:
    two requests for one voice load it once; a load does not block other voices."""

    def __init__(self, max_voices: int = 2, load: Callable[[Voice], Speaker] | None = None) -> None:
        if max_voices < 1:
            raise ValueError(f"max_voices must be 1 or more, got {max_voices}")
        from lastedocation.speech.engines import load_speaker

        self.max_voices = max_voices
        self._load = load or load_speaker
        self._speakers: OrderedDict[tuple[str, int], Speaker] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, voice: Voice) -> Speaker:
        key = (voice.id, _folder_stamp(voice.folder))
        with self._lock:
            if key in self._speakers:
                self._speakers.move_to_end(key)
                return self._speakers[key]
            loading = self._loading.setdefault(voice.id, threading.Lock())
        with loading:
            with self._lock:
                if key in self._speakers:
                    return self._speakers[key]
            speaker = self._load(voice)  # slow (seconds for a neural voice): no lock held
            with self._lock:
                self._drop_locked(voice.id)  # an older load of a folder written again
                self._speakers[key] = speaker
                while len(self._speakers) > self.max_voices:
                    old, _ = self._speakers.popitem(last=False)
                    log.info("unloaded voice %s (least recently used)", old[0])
            return speaker

    def drop(self, voice_id: str) -> None:
        """Forget a voice (it was removed)."""
        with self._lock:
            self._drop_locked(voice_id)

    def _drop_locked(self, voice_id: str) -> None:
        for key in [k for k in self._speakers if k[0] == voice_id]:
            del self._speakers[key]

    def loaded(self) -> list[str]:
        with self._lock:
            return [voice_id for voice_id, _ in self._speakers]
