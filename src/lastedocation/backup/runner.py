"""Runs backup jobs: a worker thread and a scheduler inside the server, or one job
in the foreground for the CLI. Both take the same lock in the data folder, so the
server's schedule and an operator's `lastedocation backup now` never overlap.

A backup job: reach the target (a clear error within seconds if it is down), stage
the studio (snapshot.py), create the repository if the target has none, back up
(restic sends only chunks the target lacks), then apply the retention policy. A job
the server was running when it stopped is marked failed on the next start; restic's
own snapshot is written last, so a killed backup leaves no snapshot that looks whole,
and its lock is removed before the next one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from lastedocation import __version__
from lastedocation.backup import jobs, restore, snapshot
from lastedocation.backup.engine import Cancelled, Engine
from lastedocation.backup.entries import BackupJob, now
from lastedocation.backup.targets import BackupTarget, find
from lastedocation.errors import Conflict, StudioError
from lastedocation.settings import Settings

log = logging.getLogger("lastedocation.backup")
INTERRUPTED = "interrupted: the server stopped while it ran"
_PACK = re.compile(r"\b([0-9a-f]{64})\b")

Listener = Callable[[dict[str, Any]], None]


class Busy(Conflict):
    code = "backup_busy"


@contextmanager
def data_folder_lock(settings: Settings) -> Iterator[None]:
    """One backup job at a time per data folder, across processes."""
    folder = snapshot.backup_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                "another backup job is running on this data folder (the server's, or "
                "one from the command line); try again when it ends"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def engine_for(settings: Settings, target: BackupTarget) -> Engine:
    """The engine for `target`, its index cache in the data folder's backup state."""
    return Engine(target, cache_dir=snapshot.backup_dir(settings) / "cache")


class Backups:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        schedule_every_s: float = 30.0,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        """`leading` tells whether this server leads (the supervisor's lease): of several
        servers on one database only the leader runs and schedules backups. None: this
        is the only one."""
        self.settings = settings
        self.sessions = sessions
        self.schedule_every_s = schedule_every_s
        self.leading = leading or (lambda: True)
        self._recovered = False
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._engines: dict[int, Engine] = {}

    @property
    def targets(self) -> list[BackupTarget]:
        return self.settings.backup_targets

    def target(self, name: str | None) -> BackupTarget:
        return find(self.targets, name)

    def engine(self, target: BackupTarget) -> Engine:
        return engine_for(self.settings, target)

    # --- in the server --------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        for name, loop in (("backup-worker", self._work), ("backup-schedule", self._schedule)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        for engine in list(self._engines.values()):
            engine.cancel()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self._threads = []

    def recover(self) -> None:
        """Jobs a stopped server (or a killed CLI) left running end as failed; not while
        a job holds the data folder's lock (the CLI's, running now)."""
        try:
            with data_folder_lock(self.settings), self.sessions() as session:
                for job in session.scalars(
                    select(BackupJob).where(BackupJob.state.in_(("running", "cancelling")))
                ):
                    self._end(session, job, "failed", INTERRUPTED)
                session.commit()
        except Busy:
            return

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.leading():  # another server runs the backups
                    job_id = None
                else:
                    if not self._recovered:  # what the last leader left running
                        self.recover()
                        self._recovered = True
                    job_id = self._claim()
            except Exception:
                log.exception("could not take the next backup job")
                job_id = None
            if job_id is None:
                with self._wake:
                    self._wake.wait(timeout=2.0)
                continue
            self.run(job_id)

    def _schedule(self) -> None:
        while not self._stopping.wait(self.schedule_every_s):
            try:
                if self.leading():
                    self.queue_due()
            except Exception:
                log.exception("the backup schedule could not run")

    def queue_due(self, at: Any = None) -> list[int]:
        """Queue a backup for each target whose schedule (or retry) is due."""
        queued = []
        with self.sessions() as session:
            for target in self.targets:
                standing = jobs.target_standing(session, target, at)
                due = standing["next_due"]
                if due is None or standing["active_job"] is not None or due > (at or now()):
                    continue
                failure = standing["last_failure"]
                attempt = 1
                trigger = "schedule"
                if failure is not None:
                    failed = session.get(BackupJob, failure["job_id"])
                    if failed is not None and failed.trigger in ("schedule", "retry"):
                        attempt, trigger = failed.attempt + 1, "retry"
                        if attempt > len(jobs.RETRY_AFTER_S) + 1:
                            attempt, trigger = 1, "schedule"
                job = jobs.queue_job(
                    session, kind="backup", target=target, trigger=trigger, attempt=attempt
                )
                queued.append(job.id)
        if queued:
            self.wake()
        return queued

    def _claim(self) -> int | None:
        with self.sessions() as session:
            job_id = session.scalar(
                select(BackupJob.id)
                .where(BackupJob.state == "queued")
                .order_by(BackupJob.id)
                .limit(1)
            )
            if job_id is None:
                return None
            taken = session.execute(
                update(BackupJob)
                .where(BackupJob.id == job_id, BackupJob.state == "queued")
                .values(state="running", started_at=now())
            )
            session.commit()
            return job_id if taken.rowcount else None  # type: ignore[attr-defined]

    # --- one job, in the server or the CLI ------------------------------------------

    def run(self, job_id: int, listener: Listener | None = None) -> BackupJob:
        """Run one job (claimed, or queued by the CLI) to its end."""
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            if job.state == "queued":
                job.state, job.started_at = "running", now()
            jobs.add_event(session, job, "state", state="running", progress=0.0)
            session.commit()
            kind, target_name = job.kind, job.target
            options = {**job.options, "trigger": job.trigger}
        progress = _Progress(self, job_id, listener)
        start = time.monotonic()
        state, message, result = "done", None, {}
        try:
            target = self.target(target_name)
            engine = self.engine(target)
            self._engines[job_id] = engine
            watcher = threading.Thread(
                target=self._watch_cancel, args=(job_id, engine), daemon=True
            )
            watcher.start()
            with data_folder_lock(self.settings):
                action = {
                    "backup": self._backup,
                    "verify": self._verify,
                    "prune": self._prune,
                    "restore": self._restore,
                }[kind]
                result = action(engine, target, options, progress)
        except Cancelled:
            state, message = "cancelled", None
        except StudioError as exc:
            state, message = "failed", exc.detail
        except Exception as exc:  # one broken job must not end the worker
            log.exception("backup job %s failed", job_id)
            state, message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self._engines.pop(job_id, None)
        if state == "done" and result.get("problems"):
            state, message = "failed", f"{len(result['problems'])} problem(s) found"
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            for key, value in result.items():
                setattr(job, key, value)
            job.duration_s = round(time.monotonic() - start, 3)
            if job.state == "cancelling" and state == "done":
                state = "cancelled"
            self._end(session, job, state, message)
            session.commit()
            if listener is not None:
                listener({"type": "state", "state": state, "message": message})
            return job

    def _watch_cancel(self, job_id: int, engine: Engine) -> None:
        while job_id in self._engines:
            with self.sessions() as session:
                job = session.get(BackupJob, job_id)
                if job is None or job.state == "cancelling":
                    engine.cancel()
                    return
            if self._stopping.wait(0.5):
                engine.cancel()
                return

    def _end(self, session: Session, job: BackupJob, state: str, message: str | None) -> None:
        job.state, job.message, job.finished_at = state, message, now()
        if state == "done":
            job.progress = 1.0
        jobs.add_event(
            session,
            job,
            "state",
            state=state,
            progress=job.progress,
            message=message,
            snapshot_id=job.snapshot_id,
            problems=job.problems,
        )

    def _backup(
        self, engine: Engine, target: BackupTarget, options: dict[str, Any], progress: _Progress
    ) -> dict[str, Any]:
        progress.step("reaching the target")
        engine.probe()
        progress.step("staging the studio")
        staged = snapshot.stage(self.settings, revision=_revision(self.sessions))
        try:
            progress.step("opening the repository")
            engine.ensure_repository()  # and removes stale locks
            progress.step("sending")
            tags = ["lastedocation", f"version-{__version__}", options.get("trigger", "backup")]
            summary = engine.backup(staged.folder, tags=tags, on_status=progress.restic_status)
        finally:
            _empty(staged.folder)
        result: dict[str, Any] = {
            "snapshot_id": summary["snapshot_id"],
            "files": int(summary.get("total_files_processed", staged.files)),
            "bytes_total": int(summary.get("total_bytes_processed", staged.bytes)),
            "bytes_sent": int(summary.get("data_added", 0)),
            "problems": [],
        }
        notes = [
            f"checkpoint left out (it does not verify): {c}" for c in staged.skipped_checkpoints
        ]
        notes += [
            f"model registered in place, not in the snapshot: {m}" for m in staged.external_models
        ]
        progress.note(notes)
        removed = _apply_retention(engine, target, progress)
        result["options"] = {**options, "notes": notes, "removed": removed}
        return result

    def _verify(
        self, engine: Engine, target: BackupTarget, options: dict[str, Any], progress: _Progress
    ) -> dict[str, Any]:
        progress.step("reaching the target")
        engine.probe()
        engine.unlock()
        progress.step(
            "reading back every object"
            if options.get("read_data", True)
            else "checking the structure"
        )
        found = engine.check(read_data=options.get("read_data", True), on_line=progress.check_line)
        problems = []
        for line in found:
            pack = _PACK.search(line)
            where = f"data/{pack.group(1)[:2]}/{pack.group(1)}" if pack else None
            affected: list[str] = []
            if pack:
                try:
                    affected = engine.files_in_pack(pack.group(1))
                except StudioError:
                    affected = []
            text = f"{where}: {line}" if where else line
            if affected:
                text += "; holds part of " + ", ".join(a.lstrip("/") for a in affected[:10])
            problems.append(text)
        return {"problems": problems}

    def _prune(
        self, engine: Engine, target: BackupTarget, options: dict[str, Any], progress: _Progress
    ) -> dict[str, Any]:
        progress.step("reaching the target")
        engine.probe()
        engine.unlock()
        removed = _apply_retention(engine, target, progress)
        return {"options": {**options, "removed": removed}}

    def _restore(
        self, engine: Engine, target: BackupTarget, options: dict[str, Any], progress: _Progress
    ) -> dict[str, Any]:
        """Restore into a new data folder (an admin's server folder), never the live one."""
        progress.step("reaching the target")
        engine.probe()
        done = restore.restore(
            engine=engine,
            snapshot_id=options["snapshot"],
            data_dir=Path(options["folder"]),
            database_url=None,
            on_progress=progress.bytes,
        )
        return {"snapshot_id": done.snapshot_id, "files": done.files, "bytes_total": done.bytes}


class _Progress:
    """Writes a job's progress to its log at most twice a second, and to a listener."""

    def __init__(self, backups: Backups, job_id: int, listener: Listener | None) -> None:
        self.backups, self.job_id, self.listener = backups, job_id, listener
        self._last = 0.0
        self._check_lines = 0

    def event(self, kind: str, *, force: bool = True, **data: Any) -> None:
        if self.listener is not None:
            self.listener({"type": kind, **data})
        moment = time.monotonic()
        if not force and moment - self._last < 0.5:
            return
        self._last = moment
        with self.backups.sessions() as session:
            job = session.get(BackupJob, self.job_id)
            if job is None:
                return
            if "progress" in data:
                job.progress = round(float(data["progress"]), 4)
            jobs.add_event(session, job, kind, **data)
            session.commit()

    def step(self, name: str) -> None:
        self.event("step", step=name)

    def note(self, notes: list[str]) -> None:
        if notes:
            self.event("notes", notes=notes)

    def restic_status(self, status: dict[str, Any]) -> None:
        self.event(
            "progress",
            force=False,
            progress=min(1.0, float(status.get("percent_done", 0.0))),
            bytes_done=int(status.get("bytes_done", 0)),
            bytes_total=int(status.get("total_bytes", 0)),
            files_done=int(status.get("files_done", 0)),
            files_total=int(status.get("total_files", 0)),
            eta_s=status.get("seconds_remaining"),
        )

    def bytes(self, done: int, total: int) -> None:
        self.event(
            "progress",
            force=False,
            progress=min(1.0, done / total) if total else 0.0,
            bytes_done=done,
            bytes_total=total,
        )

    def check_line(self, line: str) -> None:
        text = line.strip()
        if text and self._check_lines < 200 and not text.startswith("["):
            self._check_lines += 1
            self.event("log", force=False, line=text[:500])


def _apply_retention(engine: Engine, target: BackupTarget, progress: _Progress) -> list[str]:
    """Forget snapshots the target's policy does not keep, and prune what only they used."""
    progress.step("applying retention")
    removed = engine.forget(
        keep_last=target.keep_last, keep_daily=target.keep_daily, keep_weekly=target.keep_weekly
    )
    progress.event("retention", removed=removed)
    return removed


def _revision(sessions: sessionmaker[Session]) -> str | None:
    from sqlalchemy import text

    with sessions() as session:
        try:
            revision = session.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception:  # a database the migrations never ran on
            return None
    return str(revision) if revision is not None else None


def _empty(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
