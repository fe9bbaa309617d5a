"""The studio on PostgreSQL against the studio on SQLite (the baseline), in one run.

* Ingestion: a run's events.jsonl of N events (default 100,000: metrics every step, an
  evaluation every 100 steps, a checkpoint every 500, a log line every 50), written by the
  trainer's own `EventLog`, copied into the database by `runs.service.ingest`, the code the
  supervisor runs. Two ways: 500 new events a tick, as a live run's come (the writing of each
  500 is not timed), and the whole file in one go, as a server catching up after a restart.
  A fresh database for every repeat; the stored rows are counted afterwards.
* Reads: C concurrent `GET /api/v1/runs/{id}` (default 200) against a real `lastedocation
  serve` process on 127.0.0.1 for each database, both servers running at once; the
  wall time of the whole burst and each request's latency (p50, p99).

Every measurement repeats (`--repeats`, default 3; the cheap GET burst `--bursts`, default
7, after one warm-up burst each) in mirrored order (SQLite, PostgreSQL, then PostgreSQL,
SQLite, ...); ratios are PostgreSQL throughput / SQLite throughput (above
1: PostgreSQL is faster), the median of each repeat's paired ratio. PostgreSQL is a private
server (Debian's binaries, `tests/postgres.py`) on a loopback port with fsync off, as in
the tests: the figures compare the studio's code paths on each database, not disks.

Run from the repository root: `.venv/bin/python bench/db_bench.py` (options: `--events`,
`--clients`, `--repeats`, `--bursts`, `--json PATH`). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import ADMIN, PASSWORD, add_account  # noqa: E402
from tests.postgres import Postgres, private_server  # noqa: E402
from tests.server import StudioServer  # noqa: E402

from lastedocation.db import make_engine, migrate, session_factory  # noqa: E402
from lastedocation.runs import service  # noqa: E402
from lastedocation.runs.models import Run, RunEvent  # noqa: E402
from lastedocation.settings import Settings  # noqa: E402
from lastedocation.training.events import EventLog  # noqa: E402

TICK = 500  # events a supervisor tick finds new, in the live case
DATABASES = ("sqlite", "postgresql")


def write_events(path: Path, count: int, on_chunk: Callable[[], None] | None = None) -> int:
    """About `count` events as a trainer writes them (how many: the answer); `on_chunk`
    after every TICK or so."""
    log = EventLog(path)
    step = last = 0
    try:
        while log.seq < count:
            step += 1
            log.emit(
                "metrics",
                step=step,
                total_steps=count,
                loss=2.0 + 1.0 / step,
                lr=3e-4,
                grad_norm=0.8,
                tokens_per_s=1234.5,
                epoch=step / 1000,
            )
            if step % 100 == 0:
                log.emit("eval", step=step, val_loss=2.1, perplexity=8.2, token_accuracy=0.4)
            if step % 500 == 0:
                log.emit("checkpoint", step=step, name=f"step-{step:08d}", best=False)
            if step % 50 == 0:
                log.emit("log", level="info", message=f"گام {step}: همه چیز خوب است")
            if on_chunk is not None and log.seq - last >= TICK:
                last = log.seq
                on_chunk()
    finally:
        log.close()
    return log.seq


class Studio:
    """A data folder and its database (SQLite in the folder, or a fresh PostgreSQL one)."""

    def __init__(self, root: Path, database: str, postgres: Postgres) -> None:
        url = None
        if database == "postgresql":
            url = postgres.create_database(f"bench_{uuid.uuid4().hex[:12]}")
        folder = root / f"{database}-{uuid.uuid4().hex[:6]}"
        self.settings = Settings(data_dir=folder, database_url=url, import_sample_dataset=False)
        self.settings.ensure_dirs()
        self.engine = make_engine(self.settings)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        with self.sessions() as session:
            run = Run(name="bench", state="running", config={}, folder="runs/000001")
            session.add(run)
            session.commit()
            self.run_id = run.id
        self.events = self.settings.data_dir / "runs" / "000001" / "events.jsonl"
        self.events.parent.mkdir(parents=True)

    def ingest(self) -> float:
        """Copy what is new in events.jsonl into the database; seconds taken."""
        began = time.perf_counter()
        with self.sessions() as session:
            run = session.get(Run, self.run_id)
            assert run is not None
            service.ingest(session=session, settings=self.settings, run=run)
        return time.perf_counter() - began

    def stored(self) -> int:
        with self.sessions() as session:
            count = session.scalar(select(func.count()).where(RunEvent.run_id == self.run_id))
            return int(count or 0)

    def close(self) -> None:
        self.engine.dispose()


def ingest_live(root: Path, database: str, postgres: Postgres, events: int) -> float:
    studio = Studio(root, database, postgres)
    spent: list[float] = []
    try:
        written = write_events(
            studio.events, events, on_chunk=lambda: spent.append(studio.ingest())
        )
        spent.append(studio.ingest())
        assert studio.stored() == written, (database, studio.stored(), written)
    finally:
        studio.close()
    return sum(spent)


def ingest_backlog(root: Path, database: str, postgres: Postgres, events: int) -> float:
    studio = Studio(root, database, postgres)
    try:
        written = write_events(studio.events, events)
        spent = studio.ingest()
        assert studio.stored() == written, (database, studio.stored(), written)
    finally:
        studio.close()
    return spent


async def burst(url: str, token: str, run_id: int, clients: int) -> tuple[float, list[float]]:
    """`clients` requests at once; the burst's wall time and each one's latency."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def one() -> float:
            began = time.perf_counter()
            response = await http.get(f"/api/v1/runs/{run_id}")
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text}")
            return time.perf_counter() - began

        began = time.perf_counter()
        latencies = await asyncio.gather(*(one() for _ in range(clients)))
        return time.perf_counter() - began, list(latencies)


def serve(root: Path, database: str, postgres: Postgres) -> tuple[StudioServer, str, int]:
    """A real server on a studio with one run (and its events); its URL, a token, the run."""
    studio = Studio(root, database, postgres)
    write_events(studio.events, 2000)
    studio.ingest()
    studio.close()
    add_account(studio.settings, ADMIN, role="admin")
    env = {"LASTEDOCATION_LOG_LEVEL": "error", "LASTEDOCATION_BUNDLED_SPEECH_MODEL": "false"}
    if studio.settings.database_url:
        env["LASTEDOCATION_DATABASE_URL"] = studio.settings.database_url
    server = StudioServer(studio.settings.data_dir, root / f"{database}-server.log", **env)
    server.start()
    login = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD}
    )
    return server, login.json()["access_token"], studio.run_id


def mirrored(repeats: int) -> list[tuple[str, str]]:
    return [DATABASES if i % 2 == 0 else DATABASES[::-1] for i in range(repeats)]


def paired_ratio(sqlite: list[float], postgresql: list[float]) -> float:
    """Median over repeats of PostgreSQL's throughput / SQLite's (times: SQLite / PG)."""
    return statistics.median(s / p for s, p in zip(sqlite, postgresql, strict=True))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=7, help="repeats of the GET burst")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events, "clients": args.clients}

    with private_server() as postgres, tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        for name, measure in (("ingest_live", ingest_live), ("ingest_backlog", ingest_backlog)):
            times: dict[str, list[float]] = {db: [] for db in DATABASES}
            for order in mirrored(args.repeats):
                for database in order:
                    times[database].append(measure(root, database, postgres, args.events))
            results[name] = {
                **{db: statistics.median(times[db]) for db in DATABASES},
                "runs": times,
                "ratio": paired_ratio(times["sqlite"], times["postgresql"]),
            }
            line = ", ".join(
                f"{db} {statistics.median(times[db]):.2f} s "
                f"({args.events / statistics.median(times[db]):,.0f} events/s)"
                for db in DATABASES
            )
            print(f"{name}: {line}; PostgreSQL/SQLite {results[name]['ratio']:.3f}x", flush=True)

        servers = {db: serve(root, db, postgres) for db in DATABASES}
        try:
            walls: dict[str, list[float]] = {db: [] for db in DATABASES}
            latencies: dict[str, list[float]] = {db: [] for db in DATABASES}
            for database in DATABASES:  # a warm-up burst each (connections, caches)
                server, token, run_id = servers[database]
                asyncio.run(burst(server.url, token, run_id, args.clients))
            for order in mirrored(args.bursts):
                for database in order:
                    server, token, run_id = servers[database]
                    wall, each = asyncio.run(burst(server.url, token, run_id, args.clients))
                    walls[database].append(wall)
                    latencies[database].extend(each)
        finally:
            for server, _, _ in servers.values():
                server.stop()
        results["get_run"] = {
            **{
                db: {
                    "wall_s": statistics.median(walls[db]),
                    "p50_ms": 1000 * percentile(latencies[db], 50),
                    "p99_ms": 1000 * percentile(latencies[db], 99),
                }
                for db in DATABASES
            },
            "runs": walls,
            "ratio": paired_ratio(walls["sqlite"], walls["postgresql"]),
        }
        line = ", ".join(
            f"{db} {statistics.median(walls[db]):.2f} s "
            f"(p50 {1000 * percentile(latencies[db], 50):.0f} ms, "
            f"p99 {1000 * percentile(latencies[db], 99):.0f} ms)"
            for db in DATABASES
        )
        ratio = results["get_run"]["ratio"]
        print(
            f"{args.clients} concurrent GET /api/v1/runs/{{id}}: {line}; "
            f"PostgreSQL/SQLite {ratio:.3f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
