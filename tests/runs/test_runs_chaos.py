"""Chaos against a real server: kill the server, kill or freeze the trainer, cut
the event stream — runs carry on and nothing is lost or repeated."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lastedocation.settings import Settings
from tests.conftest import ADMIN, PERCQA, add_account, sign_in
from tests.server import StudioServer

CONFIG: dict[str, Any] = {
    "model": {"vocab_size": 500},
    "data": {"split_key": "qid"},
    "training": {
        "seq_len": 96,
        "batch_size": 4,
        "max_steps": 120,
        "eval_every": 40,
        "save_every": 10,
        "threads": 1,
    },
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StudioServer]:
    add_account(Settings(data_dir=tmp_path / "studio"), ADMIN, role="admin")
    studio = StudioServer(tmp_path / "studio").start()
    try:
        yield studio
    finally:
        studio.stop()


@contextlib.contextmanager
def _client(server: StudioServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        sign_in(client)
        yield client


def _start_run(client: httpx.Client, max_steps: int = 120) -> int:
    data = b"\n".join(PERCQA.read_bytes().splitlines()[:150]) + b"\n"
    dataset = client.post("/api/v1/datasets", files={"file": ("p.jsonl", data)})
    assert dataset.status_code == 201, dataset.text
    config = {**CONFIG, "training": {**CONFIG["training"], "max_steps": max_steps}}
    run = client.post("/api/v1/runs", json={"dataset_id": dataset.json()["id"], **config})
    assert run.status_code == 201, run.text
    return int(run.json()["id"])


def _wait(client: httpx.Client, run_id: int, until: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if until(run):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting; run is {run}")


def _trainer_pid(server: StudioServer, run_id: int) -> int:
    beat = json.loads((server.data_dir / "runs" / f"{run_id:06d}" / "heartbeat").read_text())
    return int(beat["pid"])


def _steps(client: httpx.Client, run_id: int) -> list[int]:
    metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
    return [m["step"] for m in metrics["metrics"]]


@pytest.mark.slow
def test_server_killed_mid_run_reattaches_and_loses_no_step(server: StudioServer) -> None:
    with _client(server) as client:
        run_id = _start_run(client, max_steps=150)
        _wait(client, run_id, lambda r: r["state"] == "running" and r["step"] >= 5)
        trainer = _trainer_pid(server, run_id)
    server.kill()
    time.sleep(1.0)
    os.kill(trainer, 0)  # the trainer outlives the server
    server.start()
    with _client(server) as client:
        done = _wait(client, run_id, lambda r: r["state"] not in ("running", "starting"))
        assert done["state"] == "completed", done
        assert _steps(client, run_id) == list(range(1, 151))


@pytest.mark.slow
def test_frozen_trainer_is_interrupted_then_resumes(server: StudioServer) -> None:
    with _client(server) as client:
        run_id = _start_run(client, max_steps=100)
        _wait(client, run_id, lambda r: r["state"] == "running" and r["step"] >= 12)
        trainer = _trainer_pid(server, run_id)
        os.kill(trainer, signal.SIGSTOP)  # hung: alive, but no heartbeat
        frozen_at = time.monotonic()
        interrupted = _wait(client, run_id, lambda r: r["state"] == "interrupted", timeout=30)
        waited = time.monotonic() - frozen_at
        assert waited < 3 * 2.0 + 3.0, waited  # three heartbeat intervals, plus a tick
        assert "heartbeat" in interrupted["message"]
        with pytest.raises(ProcessLookupError):  # killed and reaped
            for _ in range(50):
                os.kill(trainer, 0)
                time.sleep(0.1)
        assert client.post(f"/api/v1/runs/{run_id}/resume").status_code == 202
        done = _wait(client, run_id, lambda r: r["state"] in ("completed", "failed", "interrupted"))
        assert done["state"] == "completed", done
        assert _steps(client, run_id) == list(range(1, 101))


def _read_events(
    url: str, last_id: int, stop_after: int | None, auth: dict[str, str]
) -> list[dict[str, Any]]:
    """Read the SSE stream from `last_id`; hang up after `stop_after` events."""
    got: list[dict[str, Any]] = []
    headers = {**auth, "Last-Event-ID": str(last_id)} if last_id else dict(auth)
    with httpx.stream("GET", url, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "data" in fields:
                event = json.loads(fields["data"])
                assert int(fields["id"]) == event["seq"]
                got.append(event)
                if stop_after is not None and len(got) >= stop_after:
                    return got
            fields = {}
    return got


@pytest.mark.slow
def test_sse_reconnects_with_last_event_id_without_gap_or_duplicate(server: StudioServer) -> None:
    with _client(server) as client:
        run_id = _start_run(client, max_steps=60)
        auth = {"Authorization": client.headers["Authorization"]}
    url = f"{server.url}/api/v1/runs/{run_id}/events"
    received: list[dict[str, Any]] = []
    for cut in (3, 10, 25, 7):  # hang up after this many events, then reconnect
        last = received[-1]["seq"] if received else 0
        received += _read_events(url, last, cut, auth)
    last = received[-1]["seq"]
    received += _read_events(url, last, None, auth)  # to the end of the run
    seqs = [e["seq"] for e in received]
    assert seqs == list(range(1, len(seqs) + 1))
    assert received[-1]["type"] == "state" and received[-1]["state"] == "completed"


@pytest.mark.slow
def test_many_streams_at_once_do_not_exhaust_the_database_pool(server: StudioServer) -> None:
    # each stream used to hold a pooled connection for its whole life: 16 deadlocked with the default pool
    with _client(server) as client:
        run_id = _start_run(client, max_steps=40)
        auth = {"Authorization": client.headers["Authorization"]}
        url = f"{server.url}/api/v1/runs/{run_id}/events"
        with concurrent.futures.ThreadPoolExecutor(max_workers=80) as pool:
            streams = [pool.submit(_read_events, url, 0, None, auth) for _ in range(80)]
            received = [future.result(timeout=90) for future in streams]
        assert client.get(f"/api/v1/runs/{run_id}").json()["state"] == "completed"
    for events in received:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "state" and events[-1]["state"] == "completed"
