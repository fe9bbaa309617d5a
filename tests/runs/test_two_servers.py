"""Two studio servers on one PostgreSQL database, as `uvicorn --workers 2` or two
replicas would be: one leads (starts trainers, ingests their events), both serve the
API. Killed, the leader is replaced within seconds; no run starts twice and no event is
lost or stored twice."""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account
from tests.postgres import Postgres
from tests.runs.test_runs_chaos import _client, _start_run, _steps, _wait
from tests.server import StudioServer

LEASE_S = 2.0
LONG = 300  # steps: still training when the follower takes over
ENDED = ("completed", "failed", "stopped", "interrupted")


def _leader_pid(engine: Engine) -> int | None:
    """The process id of the server holding the supervisor's lease now."""
    with engine.connect() as connection:
        holder = connection.execute(
            text(
                "SELECT holder FROM leases WHERE name = 'supervisor' "
                "AND expires_at >= extract(epoch FROM clock_timestamp())"
            )
        ).scalar()
    return None if holder is None else int(holder.split(":")[1])


def _trainer_starts(folder: Path) -> list[str]:
    """The states a run's trainers announced, in order: one `starting` per process."""
    lines = (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    return [e["state"] for e in events if e["type"] == "state"]


@pytest.mark.slow
def test_the_follower_takes_over_a_killed_leader(tmp_path: Path, postgres: Postgres) -> None:
    url = postgres.create_database(f"two_{uuid.uuid4().hex[:12]}")
    data_dir = tmp_path / "studio"
    env = {
        "LASTEDOCATION_DATABASE_URL": url,
        "LASTEDOCATION_LEADER_LEASE_S": str(LEASE_S),
        "LASTEDOCATION_MAX_CONCURRENT_RUNS": "1",
    }
    servers = [StudioServer(data_dir, tmp_path / f"server{n}.log", **env) for n in (1, 2)]
    engine = create_engine(url)
    try:
        # at once, on an empty database: both migrate it, one after the other
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(StudioServer.start, servers))
        add_account(Settings(data_dir=data_dir, database_url=url), ADMIN, role="admin")
        pids = [server.process.pid for server in servers if server.process]
        leader_pid = _wait_for_leader(engine, set(pids))
        leader, follower = servers if leader_pid == pids[0] else servers[::-1]

        with _client(follower) as client:  # everything through the server that follows
            long_run = _start_run(client, max_steps=LONG)
            short_run = _start_run(client, max_steps=20)
            _wait(client, long_run, lambda r: r["state"] == "running" and r["step"] >= 3)
            assert client.get(f"/api/v1/runs/{short_run}").json()["state"] == "queued"
        with _client(leader) as client:  # the same runs, read through the leader
            assert client.get(f"/api/v1/runs/{short_run}").json()["state"] == "queued"

        leader.kill()  # SIGKILL: no goodbye, the lease simply stops being renewed
        killed = time.monotonic()
        trainer = json.loads((data_dir / "runs" / f"{long_run:06d}" / "heartbeat").read_text())
        os.kill(trainer["pid"], 0)  # the leader's trainer lives on, for the follower to adopt
        with engine.connect() as connection:
            ingested = connection.execute(text(f"SELECT step FROM runs WHERE id = {long_run}"))
            assert ingested.scalar_one() < LONG  # the rest is the follower's to ingest
        _wait_for_leader(engine, set(pids) - {leader_pid})
        assert time.monotonic() - killed < LEASE_S + 3

        with _client(follower) as client:
            for run_id, steps in ((long_run, LONG), (short_run, 20)):
                done = _wait(client, run_id, lambda r: r["state"] in ENDED)
                assert done["state"] == "completed", done
                assert _steps(client, run_id) == list(range(1, steps + 1))
                folder = data_dir / "runs" / f"{run_id:06d}"
                assert _trainer_starts(folder) == ["starting", "running", "completed"]
                with engine.connect() as connection:
                    stored = connection.execute(
                        text("SELECT count(*) FROM run_events WHERE run_id = :id"), {"id": run_id}
                    ).scalar()
                lines = (folder / "events.jsonl").read_bytes().count(b"\n")
                assert stored == lines  # every event once
    finally:
        for server in servers:
            server.stop()
        engine.dispose()


def _wait_for_leader(engine: Engine, among: set[int], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _leader_pid(engine)
        if pid in among:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"none of {among} took the lease")
