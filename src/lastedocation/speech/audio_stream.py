"""Audio encoded as it is made: one piece of bytes per sentence, so a listener hears the
first sentence while the next is synthesised.

    for data in encode_stream(sentences_audio, rate=22_050, fmt="mp3"):
        send(data)

- wav: a header whose lengths say "unknown" (0xFFFFFFFF, as streaming TTS servers and
  FFmpeg write when they cannot seek back), then 16-bit PCM per sentence.
- pcm: raw 16-bit little-endian mono at 24 kHz, what OpenAI's `pcm` is (resampled
  from the voice's rate as it streams).
- mp3, opus (in Ogg), flac: one encoder (PyAV) for the whole answer, its output taken
  after each sentence. All three stream per sentence: a sentence's bytes leave once
  it is encoded, except what the encoder holds back for the next frame (a few tens
  of milliseconds), which leaves with the next sentence or at the end.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from lastedocation.errors import InvalidInput
from lastedocation.speech.audio import OUTPUT_FORMATS, OutputFormat

PCM_RATE = 24_000  # OpenAI's pcm format
UNKNOWN = 0xFFFFFFFF
_CODECS = {"mp3": ("mp3", "libmp3lame", "s16p"), "opus": ("ogg", "libopus", "s16"),
           "flac": ("flac", "flac", "s16")}  # fmt: skip
_BIT_RATES = {"mp3": 64_000, "opus": 32_000}  # speech, not music


def wav_header(rate: int) -> bytes:
    """A mono 16-bit wav header whose RIFF and data lengths are unknown."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", UNKNOWN))
    )


def pcm16(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


def out_rate(rate: int, fmt: OutputFormat) -> int:
    """The sample rate the answer will have."""
    return {"pcm": PCM_RATE, "opus": 48_000}.get(fmt, rate)


def encode_stream(chunks: Iterable[np.ndarray], *, rate: int, fmt: OutputFormat) -> Iterator[bytes]:
    """Bytes of `fmt` for each chunk of mono float32 samples at `rate`; pieces that the
    encoder is still holding are not yielded empty."""
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"unknown audio format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}",
            field="response_format",
        )
    if fmt == "wav":
        return _wav(chunks, rate)
    if fmt == "pcm":
        return _pcm(chunks, rate)
    return _compressed(chunks, rate, fmt)


def _wav(chunks: Iterable[np.ndarray], rate: int) -> Iterator[bytes]:
    header = wav_header(rate)
    for samples in chunks:
        yield header + pcm16(samples)
        header = b""
    if header:  # no sentence at all: still a valid (empty) file
        yield header


def _pcm(chunks: Iterable[np.ndarray], rate: int) -> Iterator[bytes]:
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
    for samples in chunks:
        data = b"".join(_raw(f) for f in resampler.resample(_frame(samples, rate)))
        if data:
            yield data
    tail = b"".join(_raw(f) for f in resampler.resample(None))
    if tail:
        yield tail


class _Sink(io.RawIOBase):
    """Where the muxer writes; emptied after every sentence. Not seekable, so no muxer
    goes back to patch a length in (flac's STREAMINFO keeps "unknown")."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _compressed(chunks: Iterable[np.ndarray], rate: int, fmt: str) -> Iterator[bytes]:
    import av

    container_format, codec, sample_format = _CODECS[fmt]
    rate_out = out_rate(rate, fmt)  # type: ignore[arg-type]
    sink = _Sink()
    # flush_packets: write each packet through at once; page_duration: an Ogg page per
    # 100 ms rather than per second, so opus leaves with its sentence
    options = {"flush_packets": "1", **({"page_duration": "100000"} if fmt == "opus" else {})}
    container = av.open(sink, mode="w", format=container_format, options=options)
    try:
        stream: Any = container.add_stream(codec, rate=rate_out)  # an AudioStream
        stream.layout = "mono"
        if fmt in _BIT_RATES:  # flac is lossless: no bit rate to set
            stream.bit_rate = _BIT_RATES[fmt]
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate_out)
        for samples in chunks:
            for frame in resampler.resample(_frame(samples, rate)):
                for packet in stream.encode(frame):
                    container.mux(packet)
            data = sink.take()
            if data:
                yield data
        for frame in resampler.resample(None):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    tail = sink.take()
    if tail:
        yield tail


def _frame(samples: np.ndarray, rate: int) -> Any:
    import av

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


def _raw(frame: Any) -> bytes:
    return bytes(frame.to_ndarray().astype("<i2").tobytes())
