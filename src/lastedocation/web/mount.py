"""Put the web UI on the app: static files, page routes, and how page errors look."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from html import escape

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from lastedocation.errors import NotFound, StudioError
from lastedocation.web import assets, pages
from lastedocation.web.deps import SignInRequired
from lastedocation.web.render import language, render

log = logging.getLogger("lastedocation.web")
API_PREFIXES = ("/api/", "/v1/", "/openapi.json", "/healthz", "/readyz", "/metrics", "/static/")


def page_routers() -> list[APIRouter]:
    """The `router` of every module in `web/pages/` (one module per section; modules
    named `_...` are helpers)."""
    found = []
    for module in pkgutil.iter_modules(pages.__path__):
        if module.name.startswith("_"):  # a helper of the page modules, not a section
            continue
        loaded = importlib.import_module(f"{pages.__name__}.{module.name}")
        found.append(loaded.router)
    return found


_HTTP_ERROR_CODES = {
    400: "invalid_input",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def is_page(request: Request) -> bool:
    """A browser asking for a page (or an htmx fragment), not an API client."""
    return not request.url.path.startswith(API_PREFIXES)


def error_page(request: Request, exc: StudioError) -> HTMLResponse:
    """A StudioError on a page: the message in the page, in the user's language."""
    lang = language(request)
    titles = {
        400: lang.gettext("The request could not be done"),
        403: lang.gettext("Not allowed"),
        404: lang.gettext("Not found"),
        409: lang.gettext("Not possible now"),
        413: lang.gettext("Too large"),
        422: lang.gettext("The data cannot be used"),
    }
    title = titles.get(exc.status_code, lang.gettext("Something went wrong"))
    message = lang.gettext(exc.detail)
    if request.headers.get("HX-Request"):
        text = f'{escape(title)}: <span dir="auto">{escape(message)}</span>'
        fragment = f'<div class="alert error" role="alert">{text}</div>'

        return HTMLResponse(fragment, status_code=exc.status_code)
    context = {"title": title, "message": message}
    return render(request, "error.html", context, status_code=exc.status_code)


def install(app: FastAPI) -> None:
    assets.VENDOR.mkdir(parents=True, exist_ok=True)
    app.state.assets_missing = assets.missing()  # checked once, not on every page
    if app.state.assets_missing:
        log.warning("web UI files missing from %s: run `make studio`", assets.VENDOR)
    app.mount("/static", StaticFiles(directory=assets.STATIC), name="static")
    for router in page_routers():
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_page(request) and exc.status_code == 404:
            return error_page(request, NotFound(f"there is no page at {request.url.path}"))
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        # the framework's own refusals (no such path, wrong method, unreadable body) in
        # the studio's error shape, so that every error answer fits `ErrorPublic`
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        target = "/login" + (f"?next={exc.next_path}" if exc.next_path != "/" else "")
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
