"""Audio in and out: decode any common file to 16 kHz mono float32, encode speech.

Decoding goes through PyAV (FFmpeg's libraries in-process, no shell pipeline), so wav,
mp3, ogg/opus, webm, m4a and flac all read the same way. Every decode is bounded: the
caller gives the longest duration it accepts, and decoding stops as soon as the audio
passes it, so a long or hostile file costs at most that much memory.

Problems raise `AudioInvalid` with a `problem` a client can act on:
`undecodable` (not audio, or damaged), `empty` (no samples), `silent` (nothing above
the noise floor), `too_long`, `too_short`.

This module imports no web or database code: the trainer uses it too.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from lastedocation.errors import AudioInvalid, InvalidInput

SAMPLE_RATE = 16_000  # what Whisper hears
SILENCE_PEAK = 1e-3  # about -60 dBFS: below this everywhere, a recording holds nothing
OutputFormat = Literal["wav", "mp3", "opus", "flac", "pcm"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("wav", "mp3", "opus", "flac", "pcm")
MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "pcm": "audio/L16",
}


@dataclass(frozen=True)
class Audio:
    """Decoded audio: `samples` are float32 in [-1, 1], mono, at `SAMPLE_RATE`."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    codec: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(
    source: Path | BinaryIO,
    *,
    max_seconds: float,
    min_seconds: float = 0.0,
    allow_silence: bool = False,
    name: str = "the audio",
) -> Audio:
    """Decode `source` (a path or a binary file object) to 16 kHz mono float32.

    `name` is how errors call the file (e.g. its name in an archive)."""
    import av

    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own chatter; failures raise anyway
    max_samples = int(max_seconds * SAMPLE_RATE)
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:  # type: ignore[attr-defined]
        raise AudioInvalid(
            f"{name} could not be decoded as audio ({_reason(exc)}); send wav, mp3, "
            "ogg/opus, webm, m4a or flac",
            problem="undecodable",
        ) from exc
    chunks: list[np.ndarray] = []
    total = 0
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioInvalid(f"{name} holds no audio stream", problem="undecodable")
        stream = streams[0]
        source_rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        codec = str(stream.codec_context.name)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    total = _append(chunks, out, total)
                if total > max_samples:
                    raise AudioInvalid(
                        f"{name} is longer than the limit of {_clock(max_seconds)}",
                        problem="too_long",
                        limit_s=max_seconds,
                    )
            for out in resampler.resample(None):  # flush the resampler's tail
                total = _append(chunks, out, total)
        except av.FFmpegError as exc:  # type: ignore[attr-defined]
            raise AudioInvalid(
                f"{name} is damaged and could not be decoded ({_reason(exc)})",
                problem="undecodable",
            ) from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    samples = samples[:max_samples] if total > max_samples else samples
    if samples.size == 0:
        raise AudioInvalid(f"{name} holds no sound (zero samples)", problem="empty")
    if len(samples) < min_seconds * SAMPLE_RATE:
        raise AudioInvalid(
            f"{name} is {len(samples) / SAMPLE_RATE:.2f} s long, shorter than the "
            f"minimum of {min_seconds:g} s",
            problem="too_short",
            limit_s=min_seconds,
        )
    if not allow_silence and float(np.abs(samples).max()) < SILENCE_PEAK:
        raise AudioInvalid(f"{name} is silent (nothing above -60 dBFS)", problem="silent")
    return Audio(
        samples=samples.astype(np.float32, copy=False),
        source_rate=source_rate,
        source_channels=channels,
        codec=codec,
    )


def _append(chunks: list[np.ndarray], frame: object, total: int) -> int:
    data = frame.to_ndarray()  # type: ignore[attr-defined]
    data = data.reshape(-1).astype(np.float32, copy=False)
    chunks.append(data)
    return total + len(data)


def _reason(exc: Exception) -> str:
    """FFmpeg's own words, without the file name it appends (a server path)."""
    text = getattr(exc, "strerror", None) or str(exc).split(":", 1)[0]
    return str(text).strip()[:200] or type(exc).__name__


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def encode(samples: np.ndarray, rate: int, fmt: OutputFormat) -> bytes:
    """Mono float32 samples as a whole file in `fmt` (pcm: raw 16-bit little-endian)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    if fmt == "pcm":
        return bytes(pcm.tobytes())
    if fmt == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm.tobytes())
        return buffer.getvalue()
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"unknown audio format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}",
            field="response_format",
        )
    return _encode_compressed(pcm, rate, fmt)


_CODECS = {"mp3": ("mp3", "libmp3lame", "s16p"), "opus": ("ogg", "libopus", "s16"),
           "flac": ("flac", "flac", "s16")}  # fmt: skip


_BIT_RATES = {"mp3": 64_000, "opus": 32_000}  # speech, not music


def _encode_compressed(pcm: np.ndarray, rate: int, fmt: str) -> bytes:
    import av

    container_format, codec, sample_format = _CODECS[fmt]
    out_rate = 48_000 if fmt == "opus" else rate  # opus runs at 48 kHz (or 8/12/16/24)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream: Any = container.add_stream(codec, rate=out_rate)  # an AudioStream
        stream.layout = "mono"
        if fmt in _BIT_RATES:
            stream.bit_rate = _BIT_RATES[fmt]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=out_rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
