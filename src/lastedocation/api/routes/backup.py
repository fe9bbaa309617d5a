"""Backups under `/api/v1/backup`, for admins only: the targets in the settings and how
their backups stand, the history of jobs, a backup, verify, prune or restore started
now (202; the server's backup worker runs it), its progress live over server-sent
events, cancel, and the snapshots a target holds. Thin: backup/service.py decides,
the worker (backup/runner.py) does the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lastedocation.api.deps import (
    AdminUser,
    ErrorPublic,
    ItemId,
    SessionDep,
    SettingsDep,
    StreamingUser,
    error_responses,
)
from lastedocation.auth.models import User
from lastedocation.backup import jobs, service
from lastedocation.backup.runner import Backups
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.errors import Forbidden
from lastedocation.runs.live import EventStreamResponse

router = APIRouter(prefix="/backup", tags=["backup"], responses=error_responses(401, 403))
_ONE = error_responses(404, 422)
_TARGET_DOWN: dict[int | str, dict[str, Any]] = {
    502: {
        "description": "The target or the engine failed; the answer names the target and why.",
        "model": ErrorPublic,
    }
}


class JobSummary(BaseModel):
    job_id: int
    state: str
    snapshot_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    bytes_total: int
    bytes_sent: int
    duration_s: float | None
    message: str | None
    progress: float


class Standing(BaseModel):
    last_backup: JobSummary | None = Field(description="The last backup that completed")
    last_failure: JobSummary | None = Field(description="A backup that failed after it")
    active_job: JobSummary | None = Field(description="A job on the target queued or running")
    next_due: datetime | None = Field(
        description="When the schedule next backs up (none: no schedule)"
    )


class TargetPublic(BaseModel):
    name: str
    kind: str = Field(description="folder, s3, sftp or drive")
    label: str = Field(description="The kind in words: folder, S3, SFTP, Google Drive")
    where: str = Field(description="Where the snapshots go (no secret)")
    encrypted: bool = Field(description="Encrypted with the operator's passphrase")
    schedule: str | None
    every_hours: float | None
    daily_at: str | None = Field(description="HH:MM, UTC")
    keep_last: int
    keep_daily: int
    keep_weekly: int
    standing: Standing


class BackupOverview(BaseModel):
    targets: list[TargetPublic]
    tools: dict[str, bool] = Field(description="Whether restic and rclone are installed")


class BackupJobPublic(BaseModel):
    id: int
    kind: str = Field(description="backup, verify, prune or restore")
    target: str
    trigger: str = Field(description="manual, schedule, retry or cli")
    state: str = Field(description="queued, running, cancelling, done, failed or cancelled")
    progress: float
    snapshot_id: str | None
    files: int
    bytes_total: int = Field(description="Bytes the snapshot holds")
    bytes_sent: int = Field(description="Bytes the target did not have yet")
    duration_s: float | None
    message: str | None = Field(description="Why it failed")
    problems: list[str] = Field(description="verify: what is missing or corrupt")
    attempt: int
    options: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BackupJobCreate(BaseModel):
    kind: Literal["backup", "verify", "prune", "restore"]
    target: str | None = Field(
        default=None, max_length=40, description="A target's name (default: the only one)"
    )
    read_data: bool | None = Field(
        default=None, description="verify: read every object back (default) or check the structure"
    )
    snapshot: str | None = Field(
        default=None, max_length=64, description="restore: a snapshot id, or latest"
    )
    folder: str | None = Field(
        default=None,
        max_length=4096,
        description="restore: an empty folder on the server, under server_roots; it becomes a "
        "new data folder (the running studio is never touched)",
    )


class SnapshotPublic(BaseModel):
    id: str
    short_id: str
    time: str
    hostname: str
    tags: list[str]


def _backups(request: Request) -> Backups:
    backups: Backups = request.app.state.backups
    return backups


@router.get("", response_model=BackupOverview)
def backup_overview(request: Request, _admin: AdminUser, session: SessionDep) -> Any:
    """The targets in the settings (never their secrets) and how their backups stand."""
    return {
        "targets": service.targets_public(session, _backups(request).targets),
        "tools": service.tools(),
    }


@router.get("/jobs", response_model=list[BackupJobPublic], responses=error_responses(422))
def list_backup_jobs(
    _admin: AdminUser,
    session: SessionDep,
    target: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """Backup jobs, newest first, of every target or of one."""
    return [service.job_public(job) for job in jobs.list_jobs(session, target=target, limit=limit)]


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackupJobPublic,
    responses=error_responses(400, 404, 409, 422),
)
def queue_backup_job(
    body: BackupJobCreate,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Any:
    """Start a backup, verify, prune or restore now; the server's backup worker runs
    it. 409 while the same kind of job on the target is active."""
    backups = _backups(request)
    job = service.request_job(
        session,
        settings=settings,
        target=backups.target(body.target),
        kind=body.kind,
        user_id=admin.id,
        read_data=body.read_data,
        snapshot=body.snapshot,
        folder=body.folder,
    )
    backups.wake()
    return service.job_public(job)


@router.get("/jobs/{job_id}", response_model=BackupJobPublic, responses=_ONE)
def get_backup_job(job_id: ItemId, _admin: AdminUser, session: SessionDep) -> Any:
    return service.job_public(jobs.get_job(session, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=BackupJobPublic,
    responses={**_ONE, **error_responses(409)},
)
def cancel_backup_job(job_id: ItemId, _admin: AdminUser, session: SessionDep) -> Any:
    """A queued job ends at once; a running one stops within a second (a backup cut
    short leaves no snapshot behind)."""
    job = jobs.cancel_job(session, jobs.get_job(session, job_id))
    return service.job_public(job)


def _streaming_admin(user: StreamingUser) -> User:
    """An admin, for the event stream (no database session held while it streams)."""
    if not user.is_admin:
        raise Forbidden("only an admin can do this")
    return user


StreamingAdmin = Annotated[User, Depends(_streaming_admin)]


@router.get(
    "/jobs/{job_id}/events",
    responses={
        200: {
            "description": "Server-sent events until the job ends.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_ONE,
    },
)
async def backup_job_events(
    job_id: ItemId,
    request: Request,
    _admin: StreamingAdmin,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_DB_INT)] = None,
) -> EventStreamResponse:
    """Server-sent events: `state`, `step`, `progress` (bytes and files done),
    `notes`, `retention` and `log`, until the job ends. Event ids are the job's `seq`;
    `Last-Event-ID` resumes right after it."""
    sessions = request.app.state.sessions

    def check() -> None:
        with sessions() as session:
            jobs.get_job(session, job_id)

    await run_in_threadpool(check)  # 404 before the stream starts
    if after is None:
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return EventStreamResponse(
        jobs.stream(sessions, job_id, after), send_timeout_s=settings.sse_send_timeout_s
    )


@router.get(
    "/targets/{name}/snapshots",
    response_model=list[SnapshotPublic],
    responses={**error_responses(404, 422), **_TARGET_DOWN},
)
async def list_snapshots(
    name: Annotated[str, Path(max_length=40)], request: Request, _admin: AdminUser
) -> Any:
    """The snapshots the target holds, newest first (asks the target: 502 naming it and
    the reason when it cannot be reached)."""
    backups = _backups(request)
    target = backups.target(name)
    return await run_in_threadpool(lambda: service.snapshots(backups.engine(target)))
