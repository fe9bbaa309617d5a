"""The supervisor: a thread inside the server that owns the queue.

Every tick it copies new trainer events into the database, notices trainers that
ended (reaping them, so no zombies), marks as interrupted the ones that died or
stopped heartbeating (killing a hung one), and starts queued runs while there
is capacity. On server start it re-attaches to trainers that are still alive.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.models import registry
from lastedocation.runs import service
from lastedocation.runs.executor import Executor
from lastedocation.runs.models import Run
from lastedocation.runs.states import ACTIVE
from lastedocation.settings import Settings

log = logging.getLogger("lastedocation.supervisor")
STARTUP_GRACE_S = 120.0  # importing torch and preparing data happen before the first beat


class Supervisor:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        executor: Executor,
        capacity: int,
        interval: float = 0.5,
        heartbeat_timeout: float = 6.0,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.executor = executor
        self.capacity = capacity
        self.interval = interval
        self.heartbeat_timeout = heartbeat_timeout
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._users = 0  # the app's lifespans running now (tests may nest them)

    def start(self) -> None:
        self._users += 1
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop supervising; trainers keep running and are re-attached next start."""
        self._users -= 1
        if self._users > 0 or self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self.executor.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick must not end supervision
                log.exception("supervisor tick failed")
            self._stop.wait(self.interval)

    def tick(self) -> None:
        with self.lock, self.sessions() as session:
            active = list(session.scalars(select(Run).where(Run.state.in_(ACTIVE))))
            for run in active:
                self._watch(session, run)
                if run.state == "completed":
                    self._register(session, run)
            self.executor.reap()  # trainers that paused or finished: no zombies
            self._start_queued(session)

    def _watch(self, session: Session, run: Run) -> None:
        service.ingest(session=session, settings=self.settings, run=run)
        if run.state not in ACTIVE or run.pid is None:
            return
        folder = service.run_folder(self.settings, run)
        code = self.executor.poll(run.pid)
        if code is not None:
            service.ingest(session=session, settings=self.settings, run=run)
            if run.state in ACTIVE:
                self._interrupt(session, run, f"the trainer exited with code {code}", code)
        elif not self.executor.alive(run.pid, folder):
            service.ingest(session=session, settings=self.settings, run=run)
            if run.state in ACTIVE:
                self._interrupt(session, run, "the trainer process is gone", None)
        elif self._stale(run, folder):
            self.executor.kill(run.pid)
            self._interrupt(session, run, "the trainer stopped heartbeating and was killed", None)

    def _register(self, session: Session, run: Run) -> None:
        """A completed run's model joins the registry (chat, evaluation, export)."""
        try:
            registry.register_run(session=session, settings=self.settings, run=run)
        except Exception as exc:  # the run did complete; say why its model is missing
            session.rollback()
            run.message = f"the model could not be registered: {exc}"
            session.commit()
            log.exception("registering the model of run %s failed", run.id)

    def _stale(self, run: Run, folder: Path) -> bool:
        now = time.time()
        try:
            beat = json.loads((folder / "heartbeat").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            beat = None
        started = run.started_at.replace(tzinfo=UTC).timestamp() if run.started_at else now
        if beat is None or beat.get("pid") != run.pid:  # this process has not beaten yet
            return now - started > STARTUP_GRACE_S
        return now - float(beat["time"]) > self.heartbeat_timeout

    def _interrupt(self, session: Session, run: Run, message: str, code: int | None) -> None:
        run.state, run.message, run.exit_code, run.pid = "interrupted", message, code, None
        session.commit()
        log.warning("run %s interrupted: %s", run.id, message)

    def _start_queued(self, session: Session) -> None:
        """Start queued runs, oldest first, while their devices fit (a run asking for
        two GPUs takes two of the capacity); the oldest waits rather than be overtaken."""
        active = session.scalars(select(Run).where(Run.state.in_(ACTIVE))).all()
        free = self.capacity - sum(_devices(run) for run in active)
        queued = session.scalars(select(Run).where(Run.state == "queued").order_by(Run.id)).all()
        for run in queued:
            wanted = _devices(run)
            if wanted > free and (active or wanted <= self.capacity):
                break  # (a run wanting more than the whole machine starts alone)
            folder = service.run_folder(self.settings, run)
            run.pid = self.executor.start(folder, devices=wanted)
            run.state, run.started_at, run.exit_code = "starting", datetime.now(UTC), None
            session.commit()
            free -= wanted
            active = [*active, run]


def _devices(run: Run) -> int:
    return int(run.config.get("training", {}).get("devices", 1))
