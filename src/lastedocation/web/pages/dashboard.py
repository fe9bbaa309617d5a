"""The dashboard: active and queued runs with live progress, recent datasets and
models, the machine's figures, and (admins) a line when a backup failed or none was made."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.backup import service as backups
from lastedocation.datasets import service as datasets
from lastedocation.models import registry
from lastedocation.runs import service as runs
from lastedocation.runs.states import ACTIVE
from lastedocation.system import system_figures
from lastedocation.web.deps import PageUser
from lastedocation.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    all_runs = runs.list_runs(session=session, user=user)
    context = {
        "active": [r for r in all_runs if r.state in (*ACTIVE, "queued")],
        "recent_runs": [r for r in all_runs if r.state not in (*ACTIVE, "queued")][:5],
        "datasets": datasets.list_datasets(session=session, user=user)[:5],
        "models": registry.list_models(session=session, user=user)[:5],
        "system": system_figures(settings.data_dir, for_admin=user.is_admin),
        # admins: targets whose last backup failed, or that have none yet
        "backup_alerts": (
            backups.needs_attention(session, settings.backup_targets) if user.is_admin else []
        ),
    }
    return render(request, "dashboard.html", context, user=user, nav="dashboard")
