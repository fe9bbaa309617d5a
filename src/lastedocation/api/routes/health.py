"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """The database answers and the data folder exists."""
    try:
        ok = request.app.state.ready()
    except Exception as exc:  # any failure means not ready; say which
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    if not ok:
        return JSONResponse({"status": "unavailable", "detail": "no data folder"}, status_code=503)
    return JSONResponse({"status": "ready"})
