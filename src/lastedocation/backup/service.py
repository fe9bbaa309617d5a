"""What the API and the web page show of backups, and the checks on a job an admin asks
for. Both call these, so the page and its JSON never differ.

A target is shown by its name, kind, `where` and policy, never by its secrets nor
the paths of the files that hold them. A restore from here goes into a new data
folder an admin names (under `server_roots`, outside the live data folder, empty
or absent): the running studio is never touched by it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lastedocation.backup import jobs
from lastedocation.backup.engine import Engine
from lastedocation.backup.entries import BackupJob
from lastedocation.backup.remote import BackupFailed, find_program
from lastedocation.backup.targets import BackupTarget
from lastedocation.errors import Conflict, InvalidInput
from lastedocation.paths import PathRefused, server_path
from lastedocation.settings import Settings

# a restic snapshot id: the short form (8 hex digits) up to the whole 64, or "latest"
SNAPSHOT_ID = re.compile(r"^(?:[0-9a-f]{8,64}|latest)$")


def tools() -> dict[str, bool]:
    """Whether the engine's programs are installed on this server."""
    found = {}
    for name in ("restic", "rclone"):
        try:
            find_program(name)
            found[name] = True
        except BackupFailed:
            found[name] = False
    return found


def target_public(session: Session, target: BackupTarget) -> dict[str, Any]:
    """A target as admins see it: where and how, and how its backups stand. Only
    fields named here leave the server (secret files and their paths never do)."""
    return {
        "name": target.name,
        "kind": target.kind,
        "label": target.label,
        "where": target.where,
        "encrypted": target.encrypted,
        "schedule": target.schedule,
        "every_hours": target.every_hours,
        "daily_at": target.daily_at.strftime("%H:%M") if target.daily_at else None,
        "keep_last": target.keep_last,
        "keep_daily": target.keep_daily,
        "keep_weekly": target.keep_weekly,
        "standing": _utc_all(jobs.target_standing(session, target)),
    }


def targets_public(session: Session, targets: list[BackupTarget]) -> list[dict[str, Any]]:
    return [target_public(session, target) for target in targets]


def job_public(job: BackupJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "target": job.target,
        "trigger": job.trigger,
        "state": job.state,
        "progress": job.progress,
        "snapshot_id": job.snapshot_id,
        "files": job.files,
        "bytes_total": job.bytes_total,
        "bytes_sent": job.bytes_sent,
        "duration_s": job.duration_s,
        "message": job.message,
        "problems": job.problems or [],
        "attempt": job.attempt,
        "options": job.options or {},
        "created_at": utc(job.created_at),
        "started_at": utc(job.started_at),
        "finished_at": utc(job.finished_at),
    }


def request_job(
    session: Session,
    *,
    settings: Settings,
    target: BackupTarget,
    kind: str,
    user_id: int | None,
    read_data: bool | None = None,
    snapshot: str | None = None,
    folder: str | None = None,
) -> BackupJob:
    """Queue a job an admin asked for, its options checked first (each refusal names
    the field): a verify may skip reading data back; a restore needs a snapshot and a
    new data folder."""
    options: dict[str, Any] = {}
    if read_data is not None:
        if kind != "verify":
            raise InvalidInput("read_data: only a verify reads the data back", field="read_data")
        options["read_data"] = read_data
    if kind == "verify":
        options.setdefault("read_data", True)
    if kind == "restore":
        if not snapshot:
            raise InvalidInput(
                "snapshot: name the snapshot to restore (an id from the target's snapshots, "
                "or latest)",
                field="snapshot",
            )
        if not SNAPSHOT_ID.match(snapshot):
            raise InvalidInput(
                f"snapshot: {snapshot!r} is not a snapshot id (hexadecimal, 8 to 64 digits) "
                "nor latest",
                field="snapshot",
            )
        if not folder:
            raise InvalidInput(
                "folder: name an empty folder on the server to restore into (it becomes a "
                "new data folder)",
                field="folder",
            )
        options.update(snapshot=snapshot, folder=str(restore_folder(folder, settings)))
    elif snapshot is not None or folder is not None:
        field = "snapshot" if snapshot is not None else "folder"
        raise InvalidInput(f"{field}: only a restore takes a snapshot and a folder", field=field)
    return jobs.queue_job(
        session, kind=kind, target=target, trigger="manual", user_id=user_id, options=options
    )


def restore_folder(raw: str, settings: Settings) -> Path:
    """The folder a restore may write: under the roots admins may name, outside the
    live data folder, and empty or not there yet."""
    folder = server_path(
        raw, roots=settings.server_roots, data_dir=settings.data_dir, field="folder"
    )
    if folder.exists() and not folder.is_dir():
        raise PathRefused(f"folder: {raw} is a file, not a folder", field="folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise Conflict(
            f"folder: {folder} is not empty; restore into an empty or new folder (it becomes "
            "a new data folder; the running studio is never touched)",
            field="folder",
            folder=str(folder),
        )
    return folder


def snapshots(engine: Engine) -> list[dict[str, Any]]:
    """The snapshots the target holds, newest first (asks the target: run in a thread)."""
    found = sorted(engine.snapshots(), key=lambda snap: snap.time, reverse=True)
    return [
        {
            "id": snap.id,
            "short_id": snap.short_id,
            "time": snap.time,
            "hostname": snap.hostname,
            "tags": snap.tags,
        }
        for snap in found
    ]


def system_standing(session: Session, targets: list[BackupTarget]) -> dict[str, Any]:
    """Each target's backups in a few words, for GET /api/v1/system (admins)."""
    found = {}
    for target in targets:
        standing = jobs.target_standing(session, target)
        last, failure = standing["last_backup"], standing["last_failure"]
        found[target.name] = {
            "last_backup_at": utc(last["finished_at"]) if last else None,
            "last_state": "failed" if failure else ("done" if last else None),
            "last_failure": failure["message"] if failure else None,
            "last_failure_at": utc(failure["finished_at"]) if failure else None,
            "running": standing["active_job"] is not None,
            "next_due": utc(standing["next_due"]),
        }
    return found


def needs_attention(session: Session, targets: list[BackupTarget]) -> list[dict[str, Any]]:
    """Targets whose last backup failed, or that have none yet (the dashboard's line)."""
    found = []
    for name, standing in system_standing(session, targets).items():
        if standing["last_state"] != "done":
            found.append({"name": name, **standing})
    return found


def utc(moment: datetime | None) -> datetime | None:
    """SQLite keeps no time zone: every time the studio stores is UTC."""
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


def _utc_all(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, dict):
        return {key: _utc_all(item) for key, item in value.items()}
    return value
