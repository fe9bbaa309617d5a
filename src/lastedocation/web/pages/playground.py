"""The playground: chat with a registered model, the answer streaming in token by token.

The page lists the models the user may chat with (the registry, as GET /v1/models
lists them); its script talks to the OpenAI-compatible `POST /v1/chat/completions`
with `stream: true`, so the playground and outside clients share one path."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.inference.generate import MAX_STOP_STRINGS
from lastedocation.models import registry
from lastedocation.web.deps import PageUser
from lastedocation.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/playground", response_class=HTMLResponse)
def playground(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser, model: str = ""
) -> HTMLResponse:
    """`?model=ID` (a model page's link) preselects that model."""
    models = registry.list_models(session=session, user=user, kind="text")
    chosen = next((m for m in models if model and str(m.id) == model.strip()), None)
    context = {
        "models": models,
        "selected": chosen.name if chosen else (models[0].name if models else None),
        "missing": model if model and chosen is None else None,
        "max_tokens_limit": settings.max_new_tokens_limit,
        "max_stops": MAX_STOP_STRINGS,
    }
    return render(request, "playground/chat.html", context, user=user, nav="playground")
