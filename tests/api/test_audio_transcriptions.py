"""`POST /v1/audio/transcriptions` driven by the official `openai` client against the real
app served by uvicorn (in a thread): the bundled Whisper base, Persian clips read by
espeak-ng, every response format, and each kind of bad audio, after which nothing of the
upload is left in the data folder's tmp/."""

from __future__ import annotations

import io
import itertools
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jiwer
import numpy as np
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from lastedocation.api import create_app
from lastedocation.settings import Settings
from lastedocation.speech.audio import SAMPLE_RATE, encode
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import free_port
from tests.speech.conftest import espeak_wav
from tests.speech.test_stt import MAX_CER, normalize

LIMIT_MB = 1
MAX_SECONDS = 20
SENTENCE = "کتاب را روی میز گذاشتم."


@dataclass
class Studio:
    settings: Settings
    url: str
    token: str
    http: httpx.Client

    def client(self, token: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=token if token is not None else self.token,
            max_retries=0,
            timeout=120,
            http_client=self.http,
        )

    def leftovers(self) -> list[str]:
        return [p.name for p in self.settings.tmp_dir.iterdir()]


def serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("stt-api")
    settings = Settings(
        data_dir=root / "studio",
        import_sample_dataset=False,
        bundled_speech_model=True,
        max_audio_upload_mb=LIMIT_MB,
        max_audio_seconds=MAX_SECONDS,
    )
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    server, thread, url = serve(app)
    try:
        with httpx.Client(base_url=url) as http:
            sign_in(http)
            created = http.post("/api/v1/auth/tokens", json={"name": "openai client"})
            assert created.status_code == 201, created.text
        with httpx.Client() as pool:
            yield Studio(settings, url, created.json()["token"], pool)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_wav(SENTENCE, tmp_path_factory.mktemp("clip") / "کتاب.wav")


def _wav(samples: np.ndarray) -> bytes:
    return encode(samples.astype(np.float32), SAMPLE_RATE, "wav")


def test_every_response_format(studio: Studio, clip: Path) -> None:
    client = studio.client()
    whole = client.audio.transcriptions.create(model="whisper-1", file=clip, language="fa")
    assert jiwer.cer(normalize(SENTENCE), normalize(whole.text)) <= MAX_CER, whole.text
    assert whole.usage is not None and whole.usage.type == "duration"

    text = client.audio.transcriptions.create(
        model="whisper-1", file=clip, language="fa", response_format="text"
    )
    assert isinstance(text, str) and text.strip() == whole.text

    srt = client.audio.transcriptions.create(
        model="whisper-1", file=clip, language="fa", response_format="srt"
    )
    lines = srt.split("\n")
    assert lines[0] == "1" and " --> " in lines[1] and lines[1].startswith("00:00:0")
    assert lines[2] == whole.text

    vtt = client.audio.transcriptions.create(
        model="whisper-1", file=clip, language="fa", response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n\n00:00:0") and whole.text in vtt

    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=clip,
        language="fa",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],  # a repeated form field: both count
    )
    extra = verbose.model_extra or {}
    assert extra["task"] == "transcribe" and verbose.language == "persian"
    with wave.open(str(clip)) as audio:
        length = audio.getnframes() / audio.getframerate()
    assert verbose.duration == pytest.approx(length, abs=0.05)
    assert verbose.segments and verbose.words
    segment = verbose.segments[0]
    assert segment.id == 0 and segment.seek == 0 and segment.tokens
    assert segment.temperature == 0.0 and segment.avg_logprob < 0
    assert 0 <= segment.no_speech_prob <= 1 and segment.compression_ratio > 0
    words = verbose.words
    assert all(w.word == w.word.strip() and w.start <= w.end for w in words)
    assert all(a.start <= b.start and a.end <= b.end for a, b in itertools.pairwise(words))
    assert words[0].start >= 0 and words[-1].end <= verbose.duration

    plain = client.audio.transcriptions.create(
        model="whisper-1", file=clip, language="fa", response_format="verbose_json"
    )
    assert plain.words is None and plain.segments
    assert studio.leftovers() == []


def test_auto_language_names_a_language_with_its_probability(studio: Studio, clip: Path) -> None:
    verbose = studio.client().audio.transcriptions.create(
        model="whisper-base", file=clip, language="auto", response_format="verbose_json"
    )
    extra = verbose.model_extra or {}
    assert verbose.language.isalpha() and len(extra["language_code"]) >= 2
    assert 0.0 < extra["language_probability"] <= 1.0


BAD_AUDIO = {
    "undecodable": (b"this is not audio at all" * 10, "could not be decoded"),
    "empty": (b"", "empty (0 bytes)"),
    "no samples": (_wav(np.zeros(0)), "no sound"),
    "silent": (_wav(np.zeros(SAMPLE_RATE * 2)), "silent"),
    "too long": (
        _wav(0.3 * np.sin(np.arange(SAMPLE_RATE * (MAX_SECONDS + 1)) / 5.0)),
        f"longer than the limit of {MAX_SECONDS} s",
    ),
}


@pytest.mark.parametrize("case", BAD_AUDIO)
def test_bad_audio_is_refused_by_name_and_leaves_nothing(studio: Studio, case: str) -> None:
    body, message = BAD_AUDIO[case]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        studio.client().audio.transcriptions.create(model="whisper-1", file=("a.wav", body))
    error = refused.value.response.json()["error"]
    assert message in error["message"] and error["code"] == "audio_invalid"
    assert error["param"] == "file" and error["type"] == "invalid_request_error"
    assert studio.leftovers() == []


def test_a_file_over_the_limit_is_413_and_leaves_nothing(studio: Studio) -> None:
    body = b"\0" * (LIMIT_MB * 1024 * 1024 + 10_000)  # within the envelope: refused mid-stream
    with pytest.raises(openai.APIStatusError) as refused:
        studio.client().audio.transcriptions.create(model="whisper-1", file=("big.wav", body))
    assert refused.value.status_code == 413
    assert "LASTEDOCATION_MAX_AUDIO_UPLOAD_MB" in refused.value.response.json()["error"]["message"]
    assert studio.leftovers() == []


def test_bad_requests_name_the_field(studio: Studio, clip: Path) -> None:
    client = studio.client()
    with pytest.raises(openai.NotFoundError, match="no model named 'whisper-9'"):
        client.audio.transcriptions.create(model="whisper-9", file=clip)
    with pytest.raises(openai.BadRequestError) as wrong:
        client.audio.transcriptions.create(model="whisper-1", file=clip, language="xx")
    assert wrong.value.response.json()["error"]["param"] == "language"
    with pytest.raises(openai.BadRequestError) as wrong:
        client.audio.transcriptions.create(
            model="whisper-1", file=clip, response_format="srt", timestamp_granularities=["word"]
        )
    assert wrong.value.response.json()["error"]["param"] == "timestamp_granularities"
    with pytest.raises(openai.BadRequestError) as wrong:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=clip,
            response_format="docx",  # type: ignore[arg-type]
        )
    assert wrong.value.response.json()["error"]["param"] == "response_format"
    with pytest.raises(openai.AuthenticationError):
        studio.client("ldt_not-a-token").audio.transcriptions.create(model="whisper-1", file=clip)
    raw = studio.http.post(f"{studio.url}/v1/audio/transcriptions", content=b"x")
    assert raw.status_code in (400, 401)
    assert studio.leftovers() == []


def test_a_form_without_a_file_names_the_field(studio: Studio) -> None:
    answer = studio.http.post(
        f"{studio.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {studio.token}"},
        files={"not-file": ("a.wav", io.BytesIO(b"x"))},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"
    assert studio.leftovers() == []


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_the_studio_hears_what_it_says(studio: Studio, fmt: str) -> None:
    """A Persian sentence read by the studio's own /v1/audio/speech (espeak-ng, a little
    slower than its default) is transcribed by /v1/audio/transcriptions: both through the
    official client, both real models."""
    client = studio.client()
    sentence = "او هر روز صبح چای می‌نوشد."
    spoken = client.audio.speech.create(
        model="tts-1", voice="alloy", input=sentence, response_format=fmt, speed=0.8
    )
    audio = spoken.read()
    assert len(audio) > 1000
    heard = client.audio.transcriptions.create(
        model="whisper-1", file=(f"sentence.{fmt}", audio), language="fa"
    )
    assert jiwer.cer(normalize(sentence), normalize(heard.text)) <= MAX_CER, heard.text
    assert studio.leftovers() == []
