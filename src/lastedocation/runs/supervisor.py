"""The supervisor: a thread inside the server that owns the queue.

Every tick it copies new trainer events into the database, notices trainers that
ended (reaping them, so no zombies), marks as interrupted the ones that died or
stopped heartbeating (killing a hung one), and starts queued runs while there
is capacity. On server start it re-attaches to trainers that are still alive.

Several servers may share one database: only the one holding the lease (leadership.py)
does the above; the others serve the API, ready to take over when the lease expires.
Each run is handled under its row lock and a queued run is claimed with a conditional
UPDATE, so even two servers that both believe they lead never start a run twice nor
ingest an event twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.models import registry
from lastedocation.runs import service
from lastedocation.runs.executor import Executor
from lastedocation.runs.leadership import Leadership
from lastedocation.runs.models import Run
from lastedocation.runs.states import ACTIVE, ALLOWED
from lastedocation.settings import Settings

log = logging.getLogger("lastedocation.supervisor")
STARTUP_GRACE_S = 120.0  # importing torch and preparing data happen before the first beat
WAITING = "waiting for the cluster's resources"
RESUME_MARK = "resume-at-start"  # in a run folder: paused by a stopping server, resumed next start


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
        leadership: Leadership | None = None,
    ) -> None:
        """`leadership` None: this server is the only one and always leads."""
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
        self._draining = False  # the server is stopping: start no more runs
        self.leadership = leadership
        self._leading = False

    def start(self) -> None:
        self._users += 1
        if self._thread is None:
            self._stop.clear()
            self._draining = False
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
        if self.leadership is not None and self._leading:
            self._leading = False
            self.leadership.release()  # another server takes over now, not at expiry

    @property
    def leading(self) -> bool:
        """Does this server lead (start trainers, ingest events) as of its last tick?"""
        return self._leading

    def _lead(self) -> bool:
        """Take or renew the lease; True while this server leads."""
        if self.leadership is None:
            self._leading = True
            return True
        try:
            leading = self.leadership.hold()
        except SQLAlchemyError:  # the database is out of reach: lead nothing meanwhile
            log.exception("could not take or renew the supervisor's lease")
            leading = False
        if leading and not self._leading:
            log.info("this server leads: it starts trainers and ingests their events")
        elif self._leading and not leading:
            log.warning("this server no longer leads; another one supervises the runs")
        self._leading = leading
        return leading

    def pause_all(self, timeout_s: float) -> list[int]:
        """The server is stopping and its trainers will not outlive it (a container): start
        no more runs, ask every running trainer to pause (checkpoint, then exit) through the
        control file, as `pause` does, and wait up to `timeout_s` for every trainer to end.
        The runs paused here resume at the next start. Returns their ids."""
        self._draining = True
        paused: list[int] = []
        if self.leadership is not None and not self._leading:
            return paused  # the trainers are the leading server's to pause
        with self.lock, self.sessions() as session:
            active = session.scalars(select(Run).where(Run.state.in_(ACTIVE))).all()
            trainers = {
                run.pid: service.run_folder(self.settings, run) for run in active if run.pid
            }
            for run in active:
                if run.state in ALLOWED["pause"]:
                    service.request(
                        session=session, settings=self.settings, run=run, action="pause"
                    )
                    (service.run_folder(self.settings, run) / RESUME_MARK).touch()
                    paused.append(run.id)
        deadline = time.monotonic() + timeout_s
        while trainers and time.monotonic() < deadline:
            time.sleep(min(self.interval, 0.2))
            with self.lock:
                trainers = {p: f for p, f in trainers.items() if self.executor.alive(p, f)}
        self.tick()  # their last events ("paused") into the database
        return paused

    def resume_paused_at_shutdown(self) -> None:
        """Queue again the runs that `pause_all` paused when the server last stopped (or
        that were interrupted because they did not finish pausing in time)."""
        with self.lock, self.sessions() as session:
            wanted = (*ACTIVE, *ALLOWED["resume"])
            for run in session.scalars(select(Run).where(Run.state.in_(wanted))).all():
                mark = service.run_folder(self.settings, run) / RESUME_MARK
                if not mark.exists():
                    continue
                if run.state in ACTIVE:  # its trainer was killed at the deadline, or lives on
                    self._watch(session, run)
                if run.state in ALLOWED["resume"]:
                    service.request(
                        session=session, settings=self.settings, run=run, action="resume"
                    )
                    mark.unlink()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick must not end supervision
                log.exception("supervisor tick failed")
            self._stop.wait(self.interval)

    def tick(self) -> None:
        self.executor.reap()  # trainers that paused or finished: no zombies, leader or not
        if not self._lead():
            return  # another server supervises; this one serves the API
        with self.lock, self.sessions() as session:
            for run_id in session.scalars(select(Run.id).where(Run.state.in_(ACTIVE))).all():
                run = _locked(session, run_id)
                if run is not None and run.state in ACTIVE:
                    self._watch(session, run)
                    if run.state == "completed":
                        self._register(session, run)
                session.commit()  # the row's lock goes
            self.executor.reap()
            self._start_queued(session)

    def _watch(self, session: Session, run: Run) -> None:
        service.ingest(session=session, settings=self.settings, run=run)
        if run.state not in ACTIVE:
            return
        if run.pid is None:  # claimed by a server that died before it started the trainer
            if _epoch(run.started_at) < time.time() - STARTUP_GRACE_S:
                self._interrupt(session, run, "the server stopped while starting the trainer", None)
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
        elif (placed := self.executor.placed_at(run.pid)) is None:
            self._waiting(session, run, folder)
        elif self._stale(run, folder, placed):
            self.executor.kill(run.pid)
            self._interrupt(session, run, "the trainer stopped heartbeating and was killed", None)
        elif run.message == WAITING:  # the cluster placed it
            run.message = None
            session.commit()

    def _waiting(self, session: Session, run: Run, folder: Path) -> None:
        """The run waits in a cluster's queue for its resources: it is not late; and it
        has no trainer yet, nothing to checkpoint, so a pause or stop happens at once."""
        if run.state in ("pausing", "stopping") and run.pid is not None:
            self.executor.kill(run.pid)
            (folder / "control").unlink(missing_ok=True)  # answered here, not by a trainer
            run.state = "paused" if run.state == "pausing" else "stopped"
            run.pid, run.message = None, None
            if run.state == "stopped":
                run.finished_at = datetime.now(UTC)
        elif run.message != WAITING:
            run.message = WAITING
        else:
            return
        session.commit()

    def _register(self, session: Session, run: Run) -> None:
        """A completed run's model joins the registry (chat, evaluation, export)."""
        try:
            registry.register_run(session=session, settings=self.settings, run=run)
        except Exception as exc:  # the run did complete; say why its model is missing
            session.rollback()
            run.message = f"the model could not be registered: {exc}"
            session.commit()
            log.exception("registering the model of run %s failed", run.id)

    def _stale(self, run: Run, folder: Path, placed: float) -> bool:
        """No beat within the start-up grace (counted from when the trainer got its
        resources), or none for `heartbeat_timeout` since."""
        now = time.time()
        try:
            beat = json.loads((folder / "heartbeat").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            beat = None
        started = max(_epoch(run.started_at), placed)
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
        if self._draining:
            return
        active = session.scalars(select(Run).where(Run.state.in_(ACTIVE))).all()
        free = self.capacity - sum(_devices(run) for run in active)
        queued = session.scalars(select(Run).where(Run.state == "queued").order_by(Run.id)).all()
        for run in queued:
            wanted = _devices(run)
            if wanted > free and (active or wanted <= self.capacity):
                break  # (a run wanting more than the whole machine starts alone)
            if not _claim(session, run):
                continue  # another server started it, or it was stopped meanwhile
            folder = service.run_folder(self.settings, run)
            try:
                run.pid = self.executor.start(folder, devices=wanted)
            except Exception:
                log.exception("starting the trainer of run %s failed", run.id)
                self._interrupt(session, run, "the trainer could not be started", None)
                continue
            session.commit()
            free -= wanted
            active = [*active, run]


def _claim(session: Session, run: Run) -> bool:
    """queued -> starting, committed before the trainer starts: of two servers (or a
    server and a stop request) exactly one wins the conditional UPDATE."""
    claimed = session.connection().execute(
        update(Run)
        .where(Run.id == run.id, Run.state == "queued")
        .values(state="starting", started_at=datetime.now(UTC), exit_code=None, pid=None)
    )
    session.commit()
    if claimed.rowcount != 1:
        return False
    session.refresh(run)
    return True


def _locked(session: Session, run_id: int) -> Run | None:
    """The run's row, read afresh and locked until the next commit (on PostgreSQL; SQLite
    has one writer at a time): a request that changes the run waits for this tick."""
    return session.get(Run, run_id, with_for_update=True, populate_existing=True)


def _epoch(moment: datetime | None) -> float:
    if moment is None:
        return time.time()
    # SQLite gives back naive times, stored in UTC; PostgreSQL gives aware ones
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _devices(run: Run) -> int:
    return int(run.config.get("training", {}).get("devices", 1))
