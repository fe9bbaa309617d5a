"""When the server's schedule wants a backup, and how it retries a failed one."""

from __future__ import annotations

import time as wall
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from lastedocation.backup import jobs
from lastedocation.backup.entries import BackupJob
from lastedocation.backup.runner import Backups
from lastedocation.backup.targets import BackupTarget
from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.settings import Settings

T0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


@pytest.fixture
def backups(tmp_path: Path) -> Iterator[Backups]:
    targets = [
        BackupTarget(name="hourly", kind="folder", path=str(tmp_path / "h"), every_hours=6),
        BackupTarget(name="nightly", kind="folder", path=str(tmp_path / "n"), daily_at=time(3)),
        BackupTarget(name="manual", kind="folder", path=str(tmp_path / "m")),
    ]
    settings = Settings(data_dir=tmp_path / "studio", backup_targets=targets)
    engine = make_engine(settings)
    migrate(engine)
    yield Backups(settings=settings, sessions=session_factory(engine))
    engine.dispose()


def ended(backups: Backups, target: str, state: str, at: datetime, **fields: object) -> int:
    """A job that ran at `at` and ended in `state` (as the worker would leave it)."""
    with backups.sessions() as session:
        job = jobs.queue_job(
            session, kind="backup", target=backups.target(target), trigger="schedule"
        )
        job.state, job.started_at, job.finished_at = state, at, at + timedelta(minutes=1)
        for key, value in fields.items():
            setattr(job, key, value)
        session.commit()
        return job.id


def due(backups: Backups, target: str, at: datetime) -> datetime | None:
    with backups.sessions() as session:
        return jobs.target_standing(session, backups.target(target), at)["next_due"]  # type: ignore[no-any-return]


def test_a_target_never_backed_up_is_due_at_once_and_then_after_its_period(
    backups: Backups,
) -> None:
    assert due(backups, "hourly", T0) == T0
    assert due(backups, "manual", T0) is None  # no schedule: only on demand
    ended(backups, "hourly", "done", T0)
    assert due(backups, "hourly", T0 + timedelta(hours=1)) == T0 + timedelta(hours=6)


def test_a_daily_backup_is_due_at_its_time_and_a_missed_one_runs_at_once(
    backups: Backups,
) -> None:
    # 02:00, never backed up: yesterday's 03:00 was missed, so it is due now
    assert due(backups, "nightly", T0) == T0.replace(hour=3) - timedelta(days=1)
    ended(backups, "nightly", "done", T0.replace(hour=3, minute=1))
    assert due(backups, "nightly", T0.replace(hour=5)) == T0.replace(hour=3) + timedelta(days=1)


def test_a_failed_scheduled_backup_is_retried_with_back_off_then_waits_for_its_slot(
    backups: Backups,
) -> None:
    first = ended(backups, "hourly", "failed", T0)
    finished = T0 + timedelta(minutes=1)
    assert due(backups, "hourly", T0) == finished + timedelta(seconds=60)
    queued = backups.queue_due(at=finished + timedelta(seconds=61))
    with backups.sessions() as session:
        mine = [i for i in queued if session.get(BackupJob, i).target == "hourly"]  # type: ignore[union-attr]
        assert len(mine) == 1
        retry = session.get(BackupJob, mine[0])
        assert retry is not None and retry.trigger == "retry" and retry.attempt == 2
        assert retry.id != first
        retry.state, retry.started_at = "failed", T0 + timedelta(minutes=2)
        retry.finished_at = T0 + timedelta(minutes=3)
        session.commit()
    assert due(backups, "hourly", T0) == T0 + timedelta(minutes=3, seconds=300)
    # the last retry spent: the next try is the regular slot after that failure
    last = ended(backups, "hourly", "failed", T0 + timedelta(minutes=30), attempt=4)
    assert last
    assert due(backups, "hourly", T0) == T0 + timedelta(minutes=30, hours=6)


def test_nothing_is_queued_twice_and_a_manual_failure_waits_for_the_schedule(
    backups: Backups,
) -> None:
    assert sorted(backups.queue_due(at=T0)) == [1, 2]  # hourly and nightly are due
    assert backups.queue_due(at=T0) == []  # both already queued
    with backups.sessions() as session:
        for job in session.query(BackupJob):
            job.state = "done"
            job.started_at = job.finished_at = T0
        manual = jobs.queue_job(
            session, kind="backup", target=backups.target("hourly"), trigger="manual"
        )
        manual.state, manual.started_at, manual.finished_at = "failed", T0, T0
        session.commit()
    assert due(backups, "hourly", T0) == T0 + timedelta(hours=6)


def test_only_the_leading_server_runs_backups_and_a_running_job_is_not_recovered(
    backups: Backups,
) -> None:
    from lastedocation.backup.runner import data_folder_lock

    follower = Backups(settings=backups.settings, sessions=backups.sessions, leading=lambda: False)
    with backups.sessions() as session:
        queued = jobs.queue_job(
            session, kind="backup", target=backups.target("manual"), trigger="manual"
        )
        running = jobs.queue_job(
            session, kind="verify", target=backups.target("manual"), trigger="manual"
        )
        running.state = "running"
        session.commit()
    follower.start()
    try:
        follower.wake()
        wall.sleep(2.5)  # the worker looked more than once
    finally:
        follower.stop()
    with backups.sessions() as session:
        assert jobs.get_job(session, queued.id).state == "queued"  # left to the leader
        assert jobs.get_job(session, running.id).state == "running"
    with data_folder_lock(backups.settings):  # the CLI's job is running now
        backups.recover()
    with backups.sessions() as session:
        assert jobs.get_job(session, running.id).state == "running"
    backups.recover()
    with backups.sessions() as session:
        assert jobs.get_job(session, running.id).state == "failed"
