"""Backup jobs as the API, the CLI and the web pages see them: queue, list, cancel,
stream, and each target's standing (last backup, last failure, next one due)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from lastedocation.backup.entries import ACTIVE, ENDED, BackupEvent, BackupJob, now
from lastedocation.backup.targets import BackupTarget
from lastedocation.errors import Conflict, NotFound
from lastedocation.runs.live import polled_events

RETRY_AFTER_S = (60, 300, 900)  # a failed scheduled backup is tried again after these


def queue_job(
    session: Session,
    *,
    kind: str,
    target: BackupTarget,
    trigger: str,
    user_id: int | None = None,
    options: dict[str, Any] | None = None,
    attempt: int = 1,
) -> BackupJob:
    """A new queued job; refused while the same kind of job on the target is active."""
    busy = session.scalar(
        select(BackupJob).where(
            BackupJob.target == target.name, BackupJob.kind == kind, BackupJob.state.in_(ACTIVE)
        )
    )
    if busy is not None:
        raise Conflict(
            f"a {kind} of target {target.name!r} is already {busy.state} (job {busy.id})",
            job_id=busy.id,
        )
    job = BackupJob(
        kind=kind,
        target=target.name,
        trigger=trigger,
        state="queued",
        requested_by=user_id,
        options=options or {},
        problems=[],
        attempt=attempt,
        progress=0.0,
        files=0,
        bytes_total=0,
        bytes_sent=0,
        last_seq=0,
    )
    session.add(job)
    session.flush()
    add_event(session, job, "state", state="queued", progress=0.0)
    session.commit()
    return job


def add_event(session: Session, job: BackupJob, kind: str, **data: Any) -> None:
    """Append to the job's log (not committed); `seq` is taken by one UPDATE."""
    seq = session.execute(
        update(BackupJob)
        .where(BackupJob.id == job.id)
        .values(last_seq=BackupJob.last_seq + 1)
        .returning(BackupJob.last_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(job, "last_seq", seq)
    session.add(
        BackupEvent(job_id=job.id, seq=seq, type=kind, data={"seq": seq, "type": kind, **data})
    )


def get_job(session: Session, job_id: int) -> BackupJob:
    job = session.get(BackupJob, job_id)
    if job is None:
        raise NotFound(f"no backup job with id {job_id}", job_id=job_id)
    return job


def list_jobs(session: Session, *, target: str | None = None, limit: int = 50) -> list[BackupJob]:
    query = select(BackupJob).order_by(BackupJob.id.desc()).limit(limit)
    if target is not None:
        query = query.where(BackupJob.target == target)
    return list(session.scalars(query))


def cancel_job(session: Session, job: BackupJob) -> BackupJob:
    """A queued job ends at once; a running one stops its engine within a second."""
    if job.state in ENDED:
        raise Conflict(f"backup job {job.id} has already ended ({job.state})")
    if job.state == "queued":
        job.state, job.finished_at = "cancelled", now()
        add_event(session, job, "state", state="cancelled", progress=job.progress)
    elif job.state == "running":
        job.state = "cancelling"
        add_event(session, job, "state", state="cancelling", progress=job.progress)
    session.commit()
    return job


def target_standing(
    session: Session, target: BackupTarget, at: datetime | None = None
) -> dict[str, Any]:
    """The last good backup, the last failure after it, what is running and what is due."""
    at = at or now()
    last_ok = session.scalar(
        select(BackupJob)
        .where(
            BackupJob.target == target.name, BackupJob.kind == "backup", BackupJob.state == "done"
        )
        .order_by(BackupJob.id.desc())
        .limit(1)
    )
    failed = session.scalar(
        select(BackupJob)
        .where(
            BackupJob.target == target.name,
            BackupJob.kind == "backup",
            BackupJob.state == "failed",
            BackupJob.id > (last_ok.id if last_ok else 0),
        )
        .order_by(BackupJob.id.desc())
        .limit(1)
    )
    active = session.scalar(
        select(BackupJob)
        .where(BackupJob.target == target.name, BackupJob.state.in_(ACTIVE))
        .order_by(BackupJob.id)
        .limit(1)
    )
    return {
        "last_backup": _summary(last_ok),
        "last_failure": _summary(failed),
        "active_job": _summary(active),
        "next_due": next_due(target, last_ok, failed, at),
    }


def next_due(
    target: BackupTarget, last_ok: BackupJob | None, failed: BackupJob | None, at: datetime
) -> datetime | None:
    """When the schedule next wants a backup (a time in the past: now); a failure after
    the last good backup is retried with back-off first."""
    if target.every_hours is None and target.daily_at is None:
        return None
    last = _aware(last_ok.started_at) if last_ok and last_ok.started_at else None
    scheduled = failed is not None and failed.trigger in ("schedule", "retry")
    if scheduled and failed and failed.finished_at and failed.started_at:
        if failed.attempt <= len(RETRY_AFTER_S):
            wait = timedelta(seconds=RETRY_AFTER_S[failed.attempt - 1])
            return _aware(failed.finished_at) + wait
        # retries spent: the next try is the schedule's next slot after the failure
        last = max(last, _aware(failed.started_at)) if last else _aware(failed.started_at)
    if target.every_hours is not None:
        return at if last is None else last + timedelta(hours=target.every_hours)
    assert target.daily_at is not None
    today = datetime.combine(at.date(), target.daily_at, tzinfo=UTC)
    latest = today if today <= at else today - timedelta(days=1)  # the newest time passed
    if last is None or last < latest:
        return latest
    return latest + timedelta(days=1)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _summary(job: BackupJob | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "job_id": job.id,
        "state": job.state,
        "snapshot_id": job.snapshot_id,
        "finished_at": job.finished_at,
        "started_at": job.started_at,
        "bytes_total": job.bytes_total,
        "bytes_sent": job.bytes_sent,
        "duration_s": job.duration_s,
        "message": job.message,
        "progress": job.progress,
    }


def _events_after(
    sessions: sessionmaker[Session], job_id: int, after: int
) -> tuple[list[dict[str, Any]], bool]:
    with sessions() as session:
        events = list(
            session.scalars(
                select(BackupEvent.data)
                .where(BackupEvent.job_id == job_id, BackupEvent.seq > after)
                .order_by(BackupEvent.seq)
                .limit(500)
            )
        )
        job = session.get(BackupJob, job_id)
        ended = job is None or job.state in ENDED
    return events, ended


def stream(sessions: sessionmaker[Session], job_id: int, after: int) -> AsyncIterator[bytes]:
    """Every event of the job after `after`, then live ones until the job ends."""
    return polled_events(partial(_events_after, sessions, job_id), after)
