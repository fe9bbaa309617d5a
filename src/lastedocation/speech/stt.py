"""Speech to text with faster-whisper: loaded models kept in a cache, and transcription
as a stream of segments.

    models = SpeechModels(max_models=2)
    model = models.get(ctranslate2_folder)              # loads once, then reused
    result = transcribe(model, audio.samples, Options(language="fa"))
    for segment in result.segments:                     # decoded one at a time
        print(progress(segment, result.duration), segment.text)

Segments are decoded lazily, so a caller streams them as they come and stops between two
of them (a cancelled job simply stops iterating).

Where and how the model computes (`pick_device`): float16 on a GPU. On a CPU, int8 only
where the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8):
without them CTranslate2's int8 kernels are slower than float32 (about 3x on an AVX2
CPU); with them int8 is faster (on this project's 2-core Xeon with AMX and AVX-512 VNNI,
the eight Persian test clips took 9.0 s of CPU time in int8 against 16.4 s in float32,
at a lower error rate). `LASTEDOCATION_WHISPER_COMPUTE_TYPE` overrides the choice.

This module imports no web or database code.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lastedocation.errors import InvalidInput, StudioError

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger("lastedocation.speech")

# CPU flags (Linux /proc/cpuinfo) of int8 dot-product units that make int8 beat float32
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
COMPUTE_SETTING = "LASTEDOCATION_WHISPER_COMPUTE_TYPE"


@dataclass(frozen=True)
class Device:
    """Where models load: `name` is "cuda" or "cpu"; `threads` is the cores available."""

    name: str
    compute_type: str
    threads: int


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags; empty where /proc/cpuinfo is not there (not Linux)."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def available_cores() -> int:
    """The cores this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_compute_type(device: str, setting: str = "auto") -> str:
    """The compute type `setting` means on `device` ("cuda" or "cpu")."""
    if setting != "auto":
        return setting
    if device == "cuda":
        return "float16"
    return "int8" if INT8_FLAGS & cpu_flags() else "float32"


def pick_device(compute_type: str = "auto") -> Device:
    """The device and compute type for faster-whisper; `compute_type` is the setting."""
    import ctranslate2

    name = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = choose_compute_type(name, compute_type)
    supported = sorted(ctranslate2.get_supported_compute_types(name))
    if compute_type not in supported:
        raise StudioError(
            f"{COMPUTE_SETTING}={compute_type} does not run on this machine's {name} "
            f"(it supports {', '.join(supported)}): choose one of those, or auto"
        )
    return Device(name=name, compute_type=compute_type, threads=available_cores())


class SpeechModels:
    """Loaded Whisper models, the least recently used unloaded past `max_models`.

    Thread-safe: requests and jobs share it. Two threads asking for the same model at
    once load it once (the second waits for the first), while other models load freely."""

    def __init__(self, *, max_models: int = 2, compute_type: str = "auto") -> None:
        self.max_models = max_models
        self.device = pick_device(compute_type)
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str, str], WhisperModel] = OrderedDict()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}

    def get(self, folder: Path) -> WhisperModel:
        key = (str(folder.resolve()), self.device.name, self.device.compute_type)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:  # loaded while this thread waited
                    return self._models[key]
            model = load(folder, self.device)
            with self._lock:
                self._models[key] = model
                self._loading.pop(key, None)
                while len(self._models) > self.max_models:  # users keep their reference
                    self._models.popitem(last=False)
            return model

    def loaded(self) -> list[str]:
        """The folders loaded now, least recently used first."""
        with self._lock:
            return [folder for folder, _, _ in self._models]


def load(folder: Path, device: Device) -> WhisperModel:
    """A faster-whisper model from a CTranslate2 folder, never from the network."""
    from faster_whisper import WhisperModel

    if not (folder / "model.bin").is_file():
        raise InvalidInput(
            f"the speech model folder {folder.name!r} has no CTranslate2 weights (model.bin): "
            "give a faster-whisper (CTranslate2) model folder",
            field="model",
        )
    try:
        model = WhisperModel(
            str(folder),
            device=device.name,
            compute_type=device.compute_type,
            cpu_threads=device.threads,
            local_files_only=True,  # a missing file must not turn into a Hub download
        )
    except (RuntimeError, ValueError, OSError) as exc:
        reason = str(exc).replace(str(folder), folder.name)[:300]  # no server path
        raise InvalidInput(
            f"the speech model in {folder.name!r} could not be loaded: {reason}",
            field="model",
        ) from exc
    log.info("loaded speech model %s (%s, %s)", folder, device.name, device.compute_type)
    return model


@dataclass(frozen=True)
class Options:
    """How to transcribe. `language` None detects it. Each 30 s window is decoded at
    `temperature` (0: greedy/beam) first; with `temperature_fallback` (the default, as
    OpenAI's API does at temperature 0), a window that decodes into a repetition loop
    (gzip compression ratio over 2.4) is decoded again at higher temperatures. Low
    confidence alone does not trigger a retry: on a CPU that would decode most windows
    of uncertain Persian six times over, for little gain (measured on espeak-ng clips).
    """

    language: str | None = "fa"
    temperature: float = 0.0
    temperature_fallback: bool = True
    vad: bool = True
    word_timestamps: bool = False
    initial_prompt: str | None = None
    beam_size: int = 5

    def temperatures(self) -> list[float]:
        if not self.temperature_fallback:
            return [self.temperature]
        steps = round((1.0 - self.temperature) / 0.2)
        return [round(self.temperature + 0.2 * n, 2) for n in range(steps + 1)]


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """One decoded segment, with the fields of OpenAI's verbose_json segments."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        words = [Word(**w) for w in data.get("words") or []]
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "words"}
        return cls(**fields, words=words)


@dataclass
class Transcription:
    """The language (given or detected, with its probability), the audio's duration in
    seconds, and the segments, decoded as they are read."""

    language: str
    language_probability: float
    duration: float
    segments: Iterator[Segment]


@cache
def languages() -> dict[str, str]:
    """Whisper's language codes and their English names ("fa": "persian")."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


def check_language(code: str | None, *, field: str = "language") -> str | None:
    """A Whisper language code, or None for "detect it" ("auto" or nothing)."""
    if code is None or code.strip().lower() in ("", "auto"):
        return None
    code = code.strip().lower()
    if code not in languages():
        raise InvalidInput(
            f"language {code!r} is not one Whisper knows: give an ISO-639-1 code such as "
            "fa, en or ar, or auto to detect it",
            field=field,
        )
    return code


def library_options(options: Options | None = None) -> dict[str, Any]:
    """What `transcribe` passes to faster-whisper besides the audio and the language."""
    options = options or Options()
    return {
        "task": "transcribe",
        "beam_size": options.beam_size,
        "temperature": options.temperatures(),
        # retry a window only when it loops: Whisper base on a CPU in float32 fell into
        # "ه ب ال ه ب ال ..." on one clip in eight, a character error rate of 2.8
        "log_prob_threshold": None,
        "compression_ratio_threshold": 2.4,
        "vad_filter": options.vad,
        # With the VAD on, what reaches Whisper is speech already; Whisper's own guess
        # (no_speech_prob over 0.6 with a low log-probability) then drops real Persian
        # sentences that the base model is merely unsure of (one in eight of the test clips).
        "no_speech_threshold": None if options.vad else 0.6,
        "word_timestamps": options.word_timestamps,
        "initial_prompt": options.initial_prompt or None,
    }


def transcribe(model: WhisperModel, samples: np.ndarray, options: Options) -> Transcription:
    """Start transcribing 16 kHz mono float32 `samples`. This call already runs the voice
    activity detection and the language detection (seconds on a CPU): call it from a
    worker thread. The segments come as they are decoded."""
    if options.language is not None and options.language not in model.supported_languages:
        raise InvalidInput(
            f"this speech model does not know language {options.language!r}", field="language"
        )
    pieces, info = model.transcribe(samples, language=options.language, **library_options(options))
    return Transcription(
        language=info.language,
        language_probability=float(info.language_probability),
        duration=float(info.duration),
        segments=_segments(pieces, info.duration),
    )


def _segments(pieces: Any, duration: float) -> Iterator[Segment]:
    for piece in pieces:
        words = [
            Word(
                word=w.word,
                start=round(float(w.start), 3),
                end=round(float(min(w.end, duration)), 3),
                probability=round(float(w.probability), 4),
            )
            for w in piece.words or []
        ]
        yield Segment(
            id=int(piece.id) - 1,  # faster-whisper counts from 1; OpenAI from 0
            seek=int(piece.seek),
            start=round(float(piece.start), 3),
            end=round(float(min(piece.end, duration)), 3),
            text=piece.text,
            tokens=[int(t) for t in piece.tokens],
            temperature=float(piece.temperature or 0.0),
            avg_logprob=float(piece.avg_logprob),
            compression_ratio=float(piece.compression_ratio),
            no_speech_prob=float(piece.no_speech_prob),
            words=words,
        )


def progress(segment: Segment, duration: float) -> float:
    """How far the transcription is, 0..1: where the last segment ends in the audio."""
    return 1.0 if duration <= 0 else min(1.0, max(0.0, segment.end / duration))


def joined_text(segments: list[Segment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())
