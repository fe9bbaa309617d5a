"""`docker stop` in miniature: SIGTERM to a real studio server with
LASTEDOCATION_PAUSE_RUNS_ON_SHUTDOWN (as the image sets it). Its running trainer pauses with
a checkpoint before the server exits, a queued run is not started meanwhile, and the next
start resumes the paused run first, which completes with every step exactly once."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from lastedocation.db import make_engine, session_factory
from lastedocation.runs import service
from lastedocation.runs.models import Run
from lastedocation.runs.supervisor import RESUME_MARK
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PERCQA, add_account, sign_in
from tests.server import StudioServer

STEPS = 200
CONFIG: dict[str, Any] = {
    "model": {"vocab_size": 500},
    "data": {"split_key": "qid"},
    # no periodic checkpoint before the end: the one to resume from is the pause's
    "training": {"seq_len": 96, "batch_size": 4, "max_steps": STEPS, "eval_every": 1000,
                 "save_every": 1000, "log_every": 1, "threads": 1},
}  # fmt: skip


def _wait(client: httpx.Client, run_id: int, until: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if until(run):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting; run is {run}")


def _runs(settings: Settings) -> dict[int, Run]:
    """The runs as the database has them (the server is down)."""
    engine = make_engine(settings)
    try:
        with session_factory(engine)() as session:
            runs = session.scalars(select(Run)).all()
            session.expunge_all()
            return {run.id: run for run in runs}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigterm_pauses_trainers_with_a_checkpoint_and_the_next_start_resumes_them(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "studio")
    add_account(settings, ADMIN, role="admin")
    server = StudioServer(
        settings.data_dir,
        log_path=tmp_path / "studio.log",
        LASTEDOCATION_PAUSE_RUNS_ON_SHUTDOWN="true",
        LASTEDOCATION_SHUTDOWN_PAUSE_TIMEOUT_S="60",
        LASTEDOCATION_MAX_CONCURRENT_RUNS="1",
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            sign_in(client)
            data = b"\n".join(PERCQA.read_bytes().splitlines()[:150]) + b"\n"
            dataset = client.post("/api/v1/datasets", files={"file": ("p.jsonl", data)}).json()
            runs = [
                client.post("/api/v1/runs", json={"dataset_id": dataset["id"], **CONFIG}).json()
                for _ in range(2)
            ]
            first, second = (int(run["id"]) for run in runs)
            _wait(client, first, lambda r: r["state"] == "running" and r["step"] >= 5)
            assert client.get(f"/api/v1/runs/{second}").json()["state"] == "queued"
            folder = settings.data_dir / "runs" / f"{first:06d}"
            trainer = int(json.loads((folder / "heartbeat").read_text())["pid"])

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)  # what `docker stop` sends
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM
        code = server.process.wait(timeout=90)
        assert code in (0, -signal.SIGTERM), (tmp_path / "studio.log").read_text()
        assert not psutil.pid_exists(trainer) or (
            psutil.Process(trainer).status() == psutil.STATUS_ZOMBIE
        )
        stored = _runs(settings)
        assert stored[first].state == "paused", stored[first].message
        assert stored[second].state == "queued"  # nothing new started while stopping
        checkpoints = service.list_checkpoints(settings=settings, run=stored[first])
        assert [c["step"] for c in checkpoints] == [stored[first].step]  # the pause's own
        assert 5 <= stored[first].step < STEPS
        assert (folder / RESUME_MARK).exists()

        server.start()  # the container starts again
        with httpx.Client(base_url=server.url, timeout=60) as client:
            sign_in(client)
            # one run at a time: the paused one, the older, goes first; the other still waits
            assert client.get(f"/api/v1/runs/{second}").json()["state"] == "queued"
            assert client.post(f"/api/v1/runs/{second}/stop").status_code == 202
            done = _wait(client, first, lambda r: r["state"] not in ("queued", "starting",
                                                                     "running"))  # fmt: skip
            assert done["state"] == "completed", done
            metrics = client.get(f"/api/v1/runs/{first}/metrics", params={"full": True}).json()
            assert [m["step"] for m in metrics["metrics"]] == list(range(1, STEPS + 1))
            assert not (folder / RESUME_MARK).exists()
    finally:
        server.stop()
