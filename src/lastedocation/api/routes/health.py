"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lastedocation.api.deps import CurrentUser, SessionDep, error_responses
from lastedocation.backup import service as backups
from lastedocation.system import system_figures

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (on the event loop itself: no worker thread to wait for)."""
    return {"status": "ok"}


@router.get("/api/v1/system", responses=error_responses(401))
def system(request: Request, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    """Real CPU, memory, disk (of the data folder; its path for admins) and GPU figures;
    for admins also `backup`: each target's last backup, last failure and next one due."""
    settings = request.app.state.settings
    figures = system_figures(settings.data_dir, for_admin=user.is_admin)
    if user.is_admin:
        figures["backup"] = backups.system_standing(session, settings.backup_targets)
    return figures


@router.get(
    "/readyz",
    responses={503: {"description": "The database does not answer or the data folder is gone."}},
)
def readyz(request: Request) -> JSONResponse:
    """The database answers and the data folder exists."""
    try:
        ok = request.app.state.ready()
    except Exception as exc:  # any failure means not ready; say which
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    if not ok:
        return JSONResponse({"status": "unavailable", "detail": "no data folder"}, status_code=503)
    return JSONResponse({"status": "ready"})
