"""The backup page (admins only): each target as a card (where, encrypted or not,
schedule, retention, last backup, last failure, next one due) with its buttons, the
snapshots it holds with a restore form, the history of jobs, and the running job's
progress live.

The cards and the history come from the same service calls as GET /api/v1/backup
and GET /api/v1/backup/jobs; the page's script (`static/js/backup.js`) starts jobs
through the JSON API, follows them over SSE, and reloads the `/backup/targets` and
`/backup/history` fragments when one ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as InPath
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.auth.models import User
from lastedocation.backup import jobs, service
from lastedocation.backup.runner import Backups
from lastedocation.errors import Forbidden, StudioError
from lastedocation.settings import Settings
from lastedocation.web.deps import PageUser
from lastedocation.web.i18n import Language, persian_digits
from lastedocation.web.pages.runs import duration
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)
HISTORY = 30  # jobs the history table shows
TargetName = Annotated[str, InPath(max_length=40)]


def _admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin can manage backups")


def _backups(request: Request) -> Backups:
    backups: Backups = request.app.state.backups
    return backups


def size(lang: Language, count: float | None) -> str:
    """Bytes in the largest unit that keeps the figure at least 1 (KB = 1024 bytes)."""
    if count is None:
        return "—"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{lang.number(count / scale, 1)} {lang.gettext(unit)}"
    return f"{lang.number(count)} {lang.gettext('bytes')}"


def _helpers(request: Request) -> dict[str, Any]:
    lang = language(request)
    return {
        "size": lambda count: size(lang, count),
        "duration": lambda seconds: duration(lang, seconds),
        "digits": lambda text: persian_digits(str(text)) if lang.code == "fa" else str(text),
        "now": datetime.now(UTC),
    }


def _targets(request: Request, session: Session) -> dict[str, Any]:
    return {"targets": service.targets_public(session, _backups(request).targets)}


def _history(session: Session) -> dict[str, Any]:
    return {"history": [service.job_public(job) for job in jobs.list_jobs(session, limit=HISTORY)]}


@router.get("/backup", response_class=HTMLResponse)
def backup_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    _admin(user)
    context = {
        **_helpers(request),
        **_targets(request, session),
        **_history(session),
        "tools": service.tools(),
        "roots": [str(root) for root in settings.server_roots],
    }
    return render(request, "backup/index.html", context, user=user, nav="backup")


@router.get("/backup/targets", response_class=HTMLResponse)
def targets_fragment(request: Request, session: SessionDep, user: PageUser) -> HTMLResponse:
    """The target cards alone, reloaded when a job ends."""
    _admin(user)
    context = {**_helpers(request), **_targets(request, session)}
    return render(request, "backup/_targets.html", context, user=user)


@router.get("/backup/history", response_class=HTMLResponse)
def history_fragment(request: Request, session: SessionDep, user: PageUser) -> HTMLResponse:
    """The history table alone, reloaded when a job starts or ends."""
    _admin(user)
    return render(
        request, "backup/_history.html", {**_helpers(request), **_history(session)}, user=user
    )


@router.get("/backup/targets/{name}/snapshots", response_class=HTMLResponse)
async def snapshots_fragment(
    name: TargetName, request: Request, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    """The snapshots a target holds and the restore form; a target that cannot be
    reached is said in the fragment (the page stays as it was)."""
    _admin(user)
    backups = _backups(request)
    target = backups.target(name)
    found: list[dict[str, Any]] = []
    error = None
    try:
        found = await run_in_threadpool(lambda: service.snapshots(backups.engine(target)))
    except StudioError as exc:  # the target is down, or its secret files cannot be used
        error = exc.detail
    context = {
        **_helpers(request),
        "target": target.name,
        "snapshots": [{**snap, "time": _moment(snap["time"])} for snap in found],
        "error": error,
        "roots": [str(root) for root in settings.server_roots],
        "suggested": _suggested_folder(settings),
    }
    return render(request, "backup/_snapshots.html", context, user=user)


def _moment(text: str) -> datetime | str:
    """restic's RFC 3339 time (nanoseconds, an offset) as a datetime, if it reads."""
    head, _, rest = text.partition(".")
    offset = rest.lstrip("0123456789") if rest else ""
    try:
        return datetime.fromisoformat(head + (offset or ""))
    except ValueError:
        return text


def _suggested_folder(settings: Settings) -> str:
    """A folder name under the first root, as a hint in the restore form."""
    if not settings.server_roots:
        return ""
    return str(settings.server_roots[0] / "restored-studio")
