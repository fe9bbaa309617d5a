"""Speech: speech-to-text and text-to-speech are not built yet; the page says so."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lastedocation.web.deps import PageUser
from lastedocation.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/speech", response_class=HTMLResponse)
def speech_page(request: Request, user: PageUser) -> HTMLResponse:
    return render(request, "speech/index.html", user=user, nav="speech")
