"""Background transcriptions through the studio API, against the real app served by
uvicorn (in a thread) with the bundled Whisper base: a job streams its segments over SSE
and stops when cancelled, a short one runs to the end and downloads in every format,
another member sees none of it, and a server killed mid-job marks the job failed when it
starts again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
import pytest

from lastedocation.api import create_app
from lastedocation.settings import Settings
from lastedocation.speech.audio import SAMPLE_RATE, decode, encode
from lastedocation.speech.transcriptions import jobs_dir
from tests.api.test_audio_transcriptions import serve
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer
from tests.speech.test_stt import MAX_CER, normalize

JOBS = "/api/v1/speech/transcriptions"
ENDED = ("done", "failed", "cancelled")


@dataclass
class Studio:
    settings: Settings
    admin: httpx.Client
    mina: httpx.Client
    babak: httpx.Client

    def leftovers(self) -> list[str]:
        folder = jobs_dir(self.settings)
        audio = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return audio + [p.name for p in self.settings.tmp_dir.iterdir()]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("jobs") / "studio",
        import_sample_dataset=False,
        bundled_speech_model=True,
        max_audio_seconds=120,
        max_queued_transcriptions=2,
    )
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    add_account(settings, "mina")
    add_account(settings, "babak")
    server, thread, url = serve(app)
    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(3)]
    try:
        for client, name in zip(clients, (ADMIN, "mina", "babak"), strict=True):
            sign_in(client, name)
        yield Studio(settings, *clients)
    finally:
        for client in clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()


def joined(clips: list[tuple[Path, str]], repeat: int = 1) -> bytes:
    """The clips one after another, half a second apart, as one 16 kHz wav."""
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    pieces = [decode(path, max_seconds=60).samples for path, _ in clips] * repeat
    return encode(np.concatenate([x for p in pieces for x in (p, gap)]), SAMPLE_RATE, "wav")


@pytest.fixture(scope="module")
def long_audio(persian_clips: list[tuple[Path, str]]) -> bytes:
    return joined(persian_clips, repeat=3)  # about 80 s: three of Whisper's 30 s windows


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The server-sent events of a streamed response, as they arrive."""
    block: dict[str, str] = {}
    for line in response.iter_lines():
        if line:
            field, _, value = line.partition(": ")
            block[field] = value
            continue
        if "data" in block:
            event = json.loads(block["data"])
            assert int(block["id"]) == event["seq"] and block["event"] == event["type"]
            yield event
        block = {}


def wait(client: httpx.Client, job_id: int, states: tuple[str, ...] = ENDED) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(f"{JOBS}/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_a_job_streams_segments_live_and_stops_when_cancelled(
    studio: Studio, long_audio: bytes, persian_clips: list[tuple[Path, str]]
) -> None:
    mina = studio.mina
    queued = mina.post(JOBS, files={"file": ("long.wav", long_audio)}, data={"language": "fa"})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["state"] == "queued" and job["owner"] == "mina" and job["model"] == "whisper-base"

    # the one worker is busy with it: the next waits, and one more passes the limit of 2
    short = joined(persian_clips[:1])
    waiting = mina.post(JOBS, files={"file": ("short.wav", short)}).json()
    over = mina.post(JOBS, files={"file": ("short.wav", short)})
    assert over.status_code == 409 and "LASTEDOCATION_MAX_QUEUED_TRANSCRIPTIONS" in over.text
    cancelled = mina.post(f"{JOBS}/{waiting['id']}/cancel")
    assert cancelled.json()["state"] == "cancelled"  # a queued job ends at once

    seen: list[dict[str, Any]] = []
    with mina.stream("GET", f"{JOBS}/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in events(stream):
            seen.append(event)
            if event["type"] == "segment" and _segments(seen) == 1:
                answer = mina.post(f"{JOBS}/{job['id']}/cancel")
                assert answer.status_code == 200 and answer.json()["state"] == "cancelling"
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    assert [e["state"] for e in seen if e["type"] == "state"][:2] == ["queued", "running"]
    assert seen[-1]["type"] == "state" and seen[-1]["state"] == "cancelled"
    segments = [e for e in seen if e["type"] == "segment"]
    # segments come a 30 s window at a time: it stops at the next window, not the end
    assert segments and 0 < segments[-1]["progress"] < 0.75

    ended = mina.get(f"{JOBS}/{job['id']}").json()
    assert ended["state"] == "cancelled" and ended["segment_count"] == len(segments)
    assert ended["language"] == "fa" and ended["duration_s"] > 60
    assert ended["text"] and [s["text"] for s in ended["segments"]] == [
        s["segment"]["text"] for s in segments
    ]
    assert studio.leftovers() == [], "the audio is deleted when the job ends"

    # a client that reconnects with Last-Event-ID gets what it missed, nothing twice
    first = segments[0]["seq"]
    with mina.stream(
        "GET", f"{JOBS}/{job['id']}/events", headers={"Last-Event-ID": str(first)}
    ) as stream:
        again = list(events(stream))
    assert [e["seq"] for e in again] == [e["seq"] for e in seen if e["seq"] > first]

    assert mina.post(f"{JOBS}/{job['id']}/cancel").status_code == 409
    srt = mina.get(f"{JOBS}/{job['id']}/download", params={"format": "srt"})
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:0")
    assert mina.delete(f"{JOBS}/{job['id']}").status_code == 204
    assert mina.get(f"{JOBS}/{job['id']}").status_code == 404


def _segments(seen: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "segment" for e in seen)


def test_a_job_runs_to_the_end_and_only_its_owner_sees_it(
    studio: Studio, persian_clips: list[tuple[Path, str]]
) -> None:
    clips = [persian_clips[1], persian_clips[5]]  # two the base model hears best
    queued = studio.mina.post(
        JOBS,
        files={"file": ("two clips.wav", joined(clips))},
        data={"model": "whisper-1", "language": "fa", "vad": "true", "word_timestamps": "true"},
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    job = wait(studio.mina, job_id)
    assert job["state"] == "done" and job["progress"] == 1.0 and job["message"] is None
    reference = normalize(" ".join(sentence for _, sentence in clips))
    assert jiwer.cer(reference, normalize(job["text"])) <= MAX_CER, job["text"]
    assert job["segments"] and all(s["words"] for s in job["segments"])
    assert studio.leftovers() == []

    downloads = {
        fmt: studio.mina.get(f"{JOBS}/{job_id}/download", params={"format": fmt})
        for fmt in ("txt", "srt", "vtt", "json")
    }
    assert all(d.status_code == 200 for d in downloads.values())
    assert downloads["txt"].text.strip() == job["text"]
    assert downloads["vtt"].text.startswith("WEBVTT")
    assert "two%20clips.srt" in downloads["srt"].headers["content-disposition"]
    assert json.loads(downloads["json"].text)["words"]

    babak = studio.babak
    for method, path in (
        ("GET", f"{JOBS}/{job_id}"),
        ("GET", f"{JOBS}/{job_id}/events"),
        ("GET", f"{JOBS}/{job_id}/download"),
        ("POST", f"{JOBS}/{job_id}/cancel"),
        ("DELETE", f"{JOBS}/{job_id}"),
    ):
        answer = babak.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
    assert babak.get(JOBS).json() == []
    assert job_id in [j["id"] for j in studio.mina.get(JOBS).json()]
    assert job_id in [j["id"] for j in studio.admin.get(JOBS).json()]
    assert studio.admin.get(f"{JOBS}/{job_id}").status_code == 200


def test_bad_jobs_are_refused_before_they_queue(
    studio: Studio, persian_clips: list[tuple[Path, str]]
) -> None:
    mina = studio.mina
    long = encode(np.full(SAMPLE_RATE * 121, 0.1, dtype=np.float32), SAMPLE_RATE, "wav")
    for body, problem in ((b"", "empty"), (b"not audio" * 50, "undecodable"), (long, "too_long")):
        refused = mina.post(JOBS, files={"file": ("a.wav", body)})
        assert refused.status_code == 422, refused.text
        assert refused.json()["problem"] == problem and refused.json()["field"] == "file"
    clip = persian_clips[0][0].read_bytes()
    unknown = mina.post(JOBS, files={"file": ("a.wav", clip)}, data={"model": "nope"})
    assert unknown.status_code == 404 and "no model named 'nope'" in unknown.text
    wrong = mina.post(JOBS, files={"file": ("a.wav", clip)}, data={"language": "xx"})
    assert wrong.status_code == 400 and wrong.json()["field"] == "language"
    assert mina.post(JOBS, data={"language": "fa"}).status_code == 400  # no file
    assert studio.leftovers() == []


def test_a_job_running_when_the_server_dies_fails_on_the_next_start(
    tmp_path: Path, long_audio: bytes
) -> None:
    data_dir = tmp_path / "studio"
    add_account(Settings(data_dir=data_dir), ADMIN, role="admin")
    server = StudioServer(
        data_dir, log_path=tmp_path / "server.log", LASTEDOCATION_BUNDLED_SPEECH_MODEL="true"
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            sign_in(client)
            queued = client.post(JOBS, files={"file": ("long.wav", long_audio)})
            assert queued.status_code == 202, queued.text
            job_id = queued.json()["id"]
            wait(client, job_id, ("running",))
            server.kill()  # no chance to mark anything
            server.start()
            job = client.get(f"{JOBS}/{job_id}").json()
    finally:
        server.stop()
    assert job["state"] == "failed" and job["message"] == "interrupted by a server restart"
    assert not list((data_dir / "transcriptions").iterdir()), "its audio is deleted"
