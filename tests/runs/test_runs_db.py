"""The runs service on SQLite and on PostgreSQL: the supervisor ingests a real trainer's
events while the API reads them; one lease holder at a time; a queued run is started
once even by two supervisors that both believe they lead; 200 reads at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.runs import service
from lastedocation.runs.executor import LocalExecutor
from lastedocation.runs.leadership import Leadership
from lastedocation.runs.models import Run, RunEvent
from lastedocation.runs.supervisor import Supervisor
from lastedocation.settings import Settings
from lastedocation.training.events import EventLog
from tests.conftest import ADMIN, add_account, sign_in
from tests.runs.test_runs_api import TINY, fast_settings, signed_in, upload_percqa, wait_for
from tests.server import free_port

__all__ = ["fast_settings"]  # the fixture, imported for this module's tests
pytestmark = pytest.mark.databases


@pytest.mark.slow
def test_events_are_ingested_once_while_the_api_reads(fast_settings: Settings) -> None:
    steps = 60
    with signed_in(fast_settings) as client:
        dataset = upload_percqa(client)
        training = {**TINY["training"], "max_steps": steps, "eval_every": 20}
        created = client.post(
            "/api/v1/runs", json={"dataset_id": dataset, **TINY, "training": training}
        )
        run_id = created.json()["id"]
        problems: list[str] = []
        done = threading.Event()

        def read() -> None:  # what a page or script sees at any moment is a clean prefix
            last = 0
            while not done.is_set():
                step = client.get(f"/api/v1/runs/{run_id}").json()["step"]
                metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True})
                seen = [m["step"] for m in metrics.json()["metrics"]]
                if step < last or seen != list(range(1, len(seen) + 1)):
                    problems.append(f"step {step} after {last}; metrics {seen[:3]}..{seen[-3:]}")
                last = step

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            finished = wait_for(client, run_id, {"completed", "failed", "interrupted"})
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert finished["state"] == "completed", finished
        assert problems == []
        metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
        assert [m["step"] for m in metrics["metrics"]] == list(range(1, steps + 1))
        lines = (fast_settings.runs_dir / f"{run_id:06d}" / "events.jsonl").read_bytes()
        with client.app.state.sessions() as session:  # type: ignore[attr-defined]
            stored = session.scalar(select(func.count()).where(RunEvent.run_id == run_id))
        assert stored == lines.count(b"\n")  # every event once


def test_a_rewind_in_the_middle_of_one_batch_voids_the_steps_before_it(
    settings: Settings,
) -> None:
    """Events are stored together; a rewind (a resume from a checkpoint) among them still
    voids the steps written before it, in the same batch or an earlier one."""
    engine = make_engine(settings)
    sessions = session_factory(engine)
    try:
        migrate(engine)
        with sessions() as session:
            run = Run(name="r", state="running", config={}, folder="runs/000001")
            session.add(run)
            session.commit()
            (settings.data_dir / run.folder).mkdir(parents=True)
            log = EventLog(settings.data_dir / run.folder / "events.jsonl")
            for step in (1, 2, 3, 4):
                log.emit("metrics", step=step, total_steps=6, loss=1.0)
            assert service.ingest(session=session, settings=settings, run=run) == 4
            for step in (5, 6):
                log.emit("metrics", step=step, total_steps=6, loss=1.0)
            log.emit("rewind", to_step=2)  # steps 3..6 are void
            for step in (3, 4, 5, 6):
                log.emit("metrics", step=step, total_steps=6, loss=0.5)
            log.close()
            assert service.ingest(session=session, settings=settings, run=run) == 7
            metrics = service.metrics_history(session=session, run_id=run.id)["metrics"]
            assert [(m["step"], m["loss"]) for m in metrics] == [
                (1, 1.0), (2, 1.0), (3, 0.5), (4, 0.5), (5, 0.5), (6, 0.5),
            ]  # fmt: skip
            assert run.step == 6 and run.last_seq == 11
    finally:
        engine.dispose()


def test_one_lease_holder_at_a_time(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        migrate(engine)
        first, second = Leadership(engine, ttl_s=0.5), Leadership(engine, ttl_s=0.5)
        assert first.hold() and not second.hold()
        assert first.hold() and second.leader() == first.holder  # renewed
        time.sleep(0.7)  # the first stopped renewing (killed, hung)
        assert second.leader() is None
        assert second.hold() and not first.hold()
        second.release()  # a planned stop: no need to wait for the expiry
        assert first.hold()

        contenders = [Leadership(engine, ttl_s=30, name="race") for _ in range(8)]
        start = threading.Barrier(len(contenders))

        def contend(leadership: Leadership) -> bool:
            start.wait()
            return leadership.hold()

        with ThreadPoolExecutor(len(contenders)) as pool:
            assert list(pool.map(contend, contenders)).count(True) == 1
    finally:
        engine.dispose()


class StandInExecutor(LocalExecutor):
    """Starts a sleeping process in place of a trainer (its command line names the run
    folder, as a trainer's does, so liveness checks treat it as one) and counts starts."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[Path] = []

    def start(self, run_dir: Path, devices: int = 1) -> int:
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)", str(run_dir)]
        process = subprocess.Popen(sleeper, start_new_session=True)
        self._children[process.pid] = process
        self.started.append(run_dir)
        return process.pid


def test_two_supervisors_start_each_queued_run_once(settings: Settings) -> None:
    engine = make_engine(settings)
    sessions = session_factory(engine)
    migrate(engine)
    with sessions() as session:
        for number in range(1, 9):
            (settings.runs_dir / f"{number:06d}").mkdir(parents=True)
            session.add(Run(name="r", state="queued", config={}, folder=f"runs/{number:06d}"))
        session.commit()
    executors = [StandInExecutor(), StandInExecutor()]
    # no leadership: both lead, as a hung leader does for a moment after its lease expired
    supervisors = [
        Supervisor(settings=settings, sessions=sessions, executor=e, capacity=8, interval=0.01)
        for e in executors
    ]
    pids: list[int] = []
    try:
        for supervisor in supervisors:
            supervisor.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _queued(sessions) > 0:
            time.sleep(0.05)
        time.sleep(0.3)
        pids = [pid for e in executors for pid in e._children]
        for supervisor in supervisors:
            supervisor.stop()
        started = [folder.name for e in executors for folder in e.started]
        assert sorted(started) == [f"{n:06d}" for n in range(1, 9)]  # each once
        with sessions() as session:
            runs = session.scalars(select(Run)).all()
            assert {run.state for run in runs} == {"starting"}
            assert sorted(run.pid for run in runs if run.pid) == sorted(pids)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        engine.dispose()


def _queued(sessions: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).where(Run.state == "queued")) or 0)


def test_two_hundred_reads_at_once(app: FastAPI, settings: Settings) -> None:
    """More requests at once than the database pool has connections and the server has
    worker threads: each waits its turn, none fails (they used to deadlock until the
    pool timed out, and answered 500)."""
    add_account(settings, ADMIN, role="admin")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        break
                time.sleep(0.1)
            sign_in(client)
            token = client.headers["Authorization"]
        with app.state.sessions() as session:
            run = Run(name="r", state="completed", config={}, folder="runs/000001")
            session.add(run)
            session.commit()
            run_id = run.id
        statuses = asyncio.run(_burst(f"http://127.0.0.1:{port}", token, f"/api/v1/runs/{run_id}"))
        assert statuses == [200] * 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def _burst(url: str, token: str, path: str, clients: int = 200) -> list[int]:
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": token}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=25) as http:
        answers = await asyncio.gather(*(http.get(path) for _ in range(clients)))
    return [answer.status_code for answer in answers]
