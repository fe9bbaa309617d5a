"""A transcription written out: plain text, SubRip (srt), WebVTT (vtt), and OpenAI's two
JSON answers (json: the text; verbose_json: language, duration, segments and words).

The same writers serve `POST /v1/audio/transcriptions`, a job's download and the CLI,
so a subtitle file reads the same wherever it came from.
"""

from __future__ import annotations

from typing import Any, Literal

from lastedocation.speech.stt import Segment, joined_text, languages

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
BARE_MEDIA_TYPES = sorted({media.split(";")[0] for media in MEDIA_TYPES.values()})


def clock(seconds: float, *, decimal: str) -> str:
    """`HH:MM:SS,mmm` (srt: decimal ",") or `HH:MM:SS.mmm` (vtt: ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def text(segments: list[Segment]) -> str:
    return joined_text(segments) + "\n"


def srt(segments: list[Segment]) -> str:
    cues = [
        f"{n}\n{clock(s.start, decimal=',')} --> {clock(s.end, decimal=',')}\n{s.text.strip()}\n"
        for n, s in enumerate(_spoken(segments), start=1)
    ]
    return "\n".join(cues)


def vtt(segments: list[Segment]) -> str:
    cues = [
        f"{clock(s.start, decimal='.')} --> {clock(s.end, decimal='.')}\n{s.text.strip()}\n"
        for s in _spoken(segments)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def _spoken(segments: list[Segment]) -> list[Segment]:
    return [s for s in segments if s.text.strip()]  # an empty cue breaks some players


def language_name(code: str) -> str:
    """OpenAI names the language in English words ("persian"), not by its code."""
    return languages().get(code, code)


def verbose(
    segments: list[Segment],
    *,
    language: str,
    duration: float,
    language_probability: float | None = None,
    with_segments: bool = True,
    with_words: bool = False,
) -> dict[str, Any]:
    """OpenAI's verbose_json: `segments` unless only words were asked for, `words` when
    asked for. `language_code` and `language_probability` (of the detection; 1 when the
    language was given) are the studio's additions: OpenAI gives only the name."""
    answer: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(language),
        "language_code": language,
        "language_probability": language_probability,
        "duration": round(duration, 3),
        "text": joined_text(segments),
    }
    if with_segments:
        answer["segments"] = [
            {k: v for k, v in s.to_dict().items() if k != "words"} for s in segments
        ]
    if with_words:
        answer["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in segments
            for w in s.words
        ]
    answer["usage"] = {"type": "duration", "seconds": round(duration, 3)}
    return answer


def render(
    segments: list[Segment],
    fmt: str,
    *,
    language: str,
    duration: float,
    language_probability: float | None = None,
    with_segments: bool = True,
    with_words: bool = False,
) -> str | dict[str, Any]:
    """The transcription in `fmt`: a string for text/srt/vtt, a JSON object otherwise."""
    if fmt == "text":
        return text(segments)
    if fmt == "srt":
        return srt(segments)
    if fmt == "vtt":
        return vtt(segments)
    if fmt == "json":
        return {
            "text": joined_text(segments),
            "usage": {"type": "duration", "seconds": round(duration, 3)},
        }
    return verbose(
        segments,
        language=language,
        duration=duration,
        language_probability=language_probability,
        with_segments=with_segments,
        with_words=with_words,
    )
