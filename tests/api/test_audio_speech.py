"""OpenAI's `POST /v1/audio/speech`, driven by the official `openai` client against the
real app served by uvicorn: espeak-ng's voice, and MMS and Piper voices (random
weights, built by tests/speech/test_tts.py) that an admin registers through the API.
Also the voices API (admins only for changes) and the errors, in OpenAI's shape."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
from fastapi import FastAPI

from lastedocation.api import create_app
from lastedocation.settings import Settings
from lastedocation.speech.audio import decode
from tests.api.test_openai_compat import _serve
from tests.conftest import ADMIN, add_account, sign_in
from tests.speech.test_tts import build_piper_voice, build_vits_voice

SENTENCE = "امروز هوا بسیار خوب است و ما با دوستانمان به پارک بزرگ شهر می‌رویم تا بازی کنیم."
THREE = " ".join([SENTENCE] * 3)


@dataclass
class Studio:
    app: FastAPI
    url: str
    admin: httpx.Client
    member: httpx.Client
    token: str  # the admin's API token
    roots: Path

    def client(self, token: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=token or self.token, max_retries=0, timeout=60
        )


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    torch.set_num_threads(1)
    roots = tmp_path_factory.mktemp("voices")
    build_vits_voice(roots / "mms")
    build_piper_voice(roots / "piper")
    settings = Settings(
        data_dir=roots.parent / "studio",
        import_sample_dataset=False,
        bundled_speech_model=False,
        server_roots=[roots],
    )
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    add_account(settings, "mina")
    server, thread, url = _serve(app)
    try:
        with (
            httpx.Client(base_url=url, timeout=60) as admin,
            httpx.Client(base_url=url, timeout=60) as member,
        ):
            sign_in(admin)
            sign_in(member, "mina")
            created = admin.post("/api/v1/auth/tokens", json={"name": "openai client"})
            assert created.status_code == 201, created.text
            yield Studio(app, url, admin, member, created.json()["token"], roots)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def registered(studio: Studio) -> Studio:
    """The MMS and Piper voices, registered by the admin from server folders."""
    for voice_id, engine in (("mms-fa", "mms"), ("piper-fa", "piper")):
        body = {"id": voice_id, "engine": engine, "path": str(studio.roots / engine)}
        answer = studio.admin.post("/api/v1/speech/voices", json=body)
        assert answer.status_code == 201, answer.text
    return studio


def _wav(data: bytes) -> tuple[int, int]:
    """(sample rate, samples) of a streamed wav, whose header gives no length."""
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), len(w.readframes(10**9)) // 2


def test_openai_client_gets_wav(studio: Studio) -> None:
    answer = studio.client().audio.speech.create(
        model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
    )
    assert answer.response.headers["content-type"] == "audio/wav"
    assert answer.response.headers["x-voice-id"] == "espeak-fa"
    rate, samples = _wav(answer.content)
    assert rate == 22_050 and 2.0 < samples / rate < 15.0
    heard = decode(io.BytesIO(answer.content), max_seconds=60)
    assert heard.duration_s == pytest.approx(samples / rate, abs=0.05)


def test_streaming_sends_the_first_sentence_first(registered: Studio) -> None:
    """Time to first audio against the whole answer, for a text of three sentences."""
    figures = {}
    client = registered.client()
    for model, voice in (("tts-1", "alloy"), ("mms", "mms-fa")):
        client.audio.speech.create(model=model, voice=voice, input="سلام")  # loaded, connected
        started = time.perf_counter()
        with client.audio.speech.with_streaming_response.create(
            model=model, voice=voice, input=THREE, response_format="wav"
        ) as response:
            pieces = []
            first_at = 0.0
            for piece in response.iter_bytes():
                if not pieces:
                    first_at = time.perf_counter() - started
                pieces.append(piece)
        total = time.perf_counter() - started
        rate, samples = _wav(b"".join(pieces))
        figures[voice] = (first_at, total)
        print(
            f"\n{voice}: first audio after {first_at * 1000:.0f} ms, all after {total * 1000:.0f} ms"
        )
        assert _wav(pieces[0])[0] == rate and samples / rate > 3.0
        assert first_at < total
    first_at, total = figures["mms-fa"]
    assert first_at < 0.75 * total  # about a third: one sentence of three


@pytest.mark.parametrize(
    ("fmt", "media"),
    [("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("flac", "audio/flac"), ("pcm", "audio/L16")],
)
def test_other_formats(registered: Studio, fmt: str, media: str) -> None:
    answer = registered.client().audio.speech.create(
        model="piper", voice="piper-fa", input=SENTENCE, response_format=fmt, speed=1.5
    )  # type: ignore[call-overload]
    assert answer.response.headers["content-type"] == media
    data = answer.content
    if fmt == "pcm":
        assert answer.response.headers["x-sample-rate"] == "24000"
        assert len(data) % 2 == 0 and 0.5 < len(data) / 2 / 24_000 < 20
        return
    assert decode(io.BytesIO(data), max_seconds=60).duration_s > 0.5


def test_model_names_an_engine(registered: Studio) -> None:
    client = registered.client()
    mms = client.audio.speech.create(model="mms", voice="alloy", input=SENTENCE)
    assert mms.response.headers["x-voice-id"] == "mms-fa"
    rate, samples = _wav(mms.content)
    assert rate == 16_000 and samples > 0
    espeak = client.audio.speech.create(model="espeak", voice="espeak-fa", input="سلام")
    assert espeak.response.headers["x-voice-id"] == "espeak-fa"


@pytest.mark.parametrize(
    ("changes", "param", "message"),
    [
        ({"input": ""}, "input", "at least 1 character"),
        ({"input": " \n "}, "input", "input is empty"),
        ({"input": "ا" * 4097}, "input", "at most 4096 characters"),
        ({"voice": "nobody"}, "voice", "voice 'nobody' is unknown"),
        ({"model": "tts-9"}, "model", "model 'tts-9' is unknown"),
        ({"model": "piper", "voice": "espeak-fa"}, "voice", "is a espeak voice"),
        ({"response_format": "aac"}, "response_format", "response_format"),
        ({"speed": 5}, "speed", "less than or equal to 4"),
        ({"model": "mms", "voice": "mms-fa", "input": "Python"}, "input", "can read none"),
    ],
)
def test_bad_requests_name_the_field(
    registered: Studio, changes: dict[str, object], param: str, message: str
) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "سلام", **changes}
    with pytest.raises(openai.BadRequestError) as caught:
        registered.client().audio.speech.create(**body)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert message in error["message"]


def test_a_wrong_token_is_refused(studio: Studio) -> None:
    with pytest.raises(openai.AuthenticationError):
        studio.client("ldt_wrong").audio.speech.create(model="tts-1", voice="alloy", input="سلام")


def test_voices_are_listed_with_their_licences(registered: Studio) -> None:
    listed = registered.member.get("/api/v1/speech/voices")
    assert listed.status_code == 200
    by_id = {v["id"]: v for v in listed.json()}
    assert list(by_id) == ["espeak-fa", "mms-fa", "piper-fa"]
    assert by_id["mms-fa"]["licence"] == "CC-BY-NC-4.0"
    assert "non-commercial" in by_id["mms-fa"]["note"]
    assert by_id["espeak-fa"] == {
        "id": "espeak-fa", "engine": "espeak", "name": "eSpeak NG Persian", "language": "fa",
        "sample_rate": 22_050, "licence": "GPL-3.0-or-later", "note": by_id["espeak-fa"]["note"],
    }  # fmt: skip
    assert "folder" not in by_id["piper-fa"]  # the server's paths stay on the server


def test_only_admins_change_voices(registered: Studio, tmp_path: Path) -> None:
    body = {"id": "mine", "engine": "piper", "path": str(registered.roots / "piper")}
    refused = registered.member.post("/api/v1/speech/voices", json=body)
    assert refused.status_code == 403
    assert registered.member.delete("/api/v1/speech/voices/piper-fa").status_code == 403

    outside = registered.admin.post("/api/v1/speech/voices", json={**body, "path": str(tmp_path)})
    assert outside.status_code == 400 and outside.json()["field"] == "path"
    assert "outside the folders admins may name" in outside.json()["detail"]
    both = registered.admin.post("/api/v1/speech/voices", json={**body, "repo_id": "a/b"})
    assert both.status_code == 400
    unknown = registered.admin.post("/api/v1/speech/voices", json={**body, "engine": "espeak"})
    assert unknown.status_code == 422

    added = registered.admin.post("/api/v1/speech/voices", json=body)
    assert added.status_code == 201 and added.json()["id"] == "mine"
    assert registered.admin.post("/api/v1/speech/voices", json=body).status_code == 409
    assert registered.admin.delete("/api/v1/speech/voices/mine").status_code == 204
    assert registered.admin.delete("/api/v1/speech/voices/mine").status_code == 404
    assert registered.admin.delete("/api/v1/speech/voices/espeak-fa").status_code == 400
    with pytest.raises(openai.BadRequestError):
        registered.client().audio.speech.create(model="piper", voice="mine", input="سلام")
