"""The machine's figures (CPU, memory, the data folder's disk, GPUs), refreshed every
few seconds: the same figures as GET /api/v1/system."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from lastedocation.api.deps import SettingsDep
from lastedocation.system import system_figures
from lastedocation.web.deps import PageUser
from lastedocation.web.render import render

router = APIRouter(include_in_schema=False)
REFRESH_S = 5


@router.get("/system", response_class=HTMLResponse)
async def system_page(request: Request, settings: SettingsDep, user: PageUser) -> HTMLResponse:
    # samples 0.1 s of CPU
    figures = await run_in_threadpool(
        functools.partial(system_figures, settings.data_dir, for_admin=user.is_admin)
    )
    context = {"system": figures, "refresh_s": REFRESH_S}
    return render(request, "system/index.html", context, user=user, nav="system")


@router.get("/system/figures", response_class=HTMLResponse)
async def figures(request: Request, settings: SettingsDep, user: PageUser) -> HTMLResponse:
    """The figures alone, for the page's htmx refresh."""
    figures = await run_in_threadpool(
        functools.partial(system_figures, settings.data_dir, for_admin=user.is_admin)
    )
    context = {"system": figures, "refresh_s": REFRESH_S}
    return render(request, "system/_figures.html", context, user=user)
