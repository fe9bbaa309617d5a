"""Rendering pages: one Jinja2 environment, the request's language, theme and user.

Every template gets `_` (translate), `lang` (a `Language`: `lang.number`,
`lang.datetime`, `lang.dir`), `theme`, `user` (or None), `csrf` (the token that
unsafe requests repeat) and `nav` (the current section).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lastedocation import __version__
from lastedocation.auth import browser
from lastedocation.auth.browser import CSRF_COOKIE
from lastedocation.auth.models import User
from lastedocation.web.i18n import LANGUAGES, Language, pick

TEMPLATES = Path(__file__).parent / "templates"
THEMES = ("light", "dark")
LANG_COOKIE, THEME_COOKIE = "ldt_lang", "ldt_theme"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def language(request: Request) -> Language:
    return pick(request.cookies.get(LANG_COOKIE))


def theme(request: Request) -> str:
    chosen = request.cookies.get(THEME_COOKIE)
    return chosen if chosen in THEMES else "light"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
    nav: str = "",
) -> HTMLResponse:
    lang = language(request)
    csrf = browser.csrf_token(
        key=request.app.state.signing_key,
        session_cookie=request.cookies.get(browser.SESSION_COOKIE),
        csrf_cookie=request.cookies.get(CSRF_COOKIE),
    )
    page = environment.get_template(template).render(
        {
            "request": request,
            "_": lang.gettext,
            "ngettext": lang.ngettext,
            "lang": lang,
            # between figures: a middle dot reads like the Persian zero (۰)
            "sep": "، " if lang.code == "fa" else " · ",
            "languages": LANGUAGES,
            "theme": theme(request),
            "user": user,
            "csrf": csrf,
            "nav": nav,
            "version": __version__,
            "assets_missing": request.app.state.assets_missing,
            **(context or {}),
        }
    )
    response = HTMLResponse(page, status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != csrf:  # a first page, or a new session
        secure = request.url.scheme == "https"
        response.set_cookie(CSRF_COOKIE, csrf, samesite="strict", secure=secure)
    return response
