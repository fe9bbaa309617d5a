"""Sign in, sign out, the first start's set-up, and the language/theme preferences."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lastedocation.api.deps import ClientAddress, LoginLimiterDep, SessionDep
from lastedocation.auth import browser, setup
from lastedocation.auth import service as accounts
from lastedocation.errors import StudioError
from lastedocation.web.deps import CsrfChecked, OptionalUser, signing_key
from lastedocation.web.i18n import LANGUAGES
from lastedocation.web.render import LANG_COOKIE, THEME_COOKIE, THEMES, language, render

router = APIRouter(include_in_schema=False)
YEAR = 365 * 24 * 3600


def _local(path: str | None) -> str:
    """Only paths inside the studio are followed after sign-in (no open redirect)."""
    if not path:
        return "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


def signed_in(request: Request, target: str, cookie: browser.BrowserSession) -> Response:
    response = RedirectResponse(target, status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        browser.SESSION_COOKIE,
        cookie.cookie,
        max_age=cookie.max_age,
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    response.set_cookie(browser.CSRF_COOKIE, cookie.csrf, samesite="strict", secure=secure)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, session: SessionDep, user: OptionalUser, next: str = "/"
) -> Response:
    if setup.setup_needed(session=session):
        return RedirectResponse("/setup", status_code=303)
    if user is not None:
        return RedirectResponse(_local(next), status_code=303)
    return render(request, "auth/login.html", {"next": _local(next), "username": "", "error": None})


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login_submit(
    request: Request,
    session: SessionDep,
    limiter: LoginLimiterDep,
    address: ClientAddress,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    lang = language(request)
    try:
        user = accounts.sign_in(
            session=session, limiter=limiter, address=address, username=username, password=password
        )
    except StudioError as exc:
        if exc.status_code == 401:
            message = lang.gettext("Wrong username or password.")
        else:
            message = lang.gettext("Too many failed attempts; wait a while and try again.")
        context = {"next": _local(next), "username": username, "error": message}
        return render(request, "auth/login.html", context, status_code=exc.status_code)
    cookie = browser.start(session=session, key=signing_key(request), user=user)
    return signed_in(request, _local(next), cookie)


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request, session: SessionDep) -> Response:
    cookie = request.cookies.get(browser.SESSION_COOKIE)
    if cookie:
        browser.end(session=session, key=signing_key(request), cookie=cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(browser.SESSION_COOKIE)
    return response


@router.post("/preferences", dependencies=[CsrfChecked])
def preferences(
    lang: Annotated[str, Form(max_length=8)] = "",
    theme: Annotated[str, Form(max_length=8)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Language and theme, remembered by this browser."""
    response = RedirectResponse(_local(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=YEAR, samesite="lax")
    if theme in THEMES:
        response.set_cookie(THEME_COOKIE, theme, max_age=YEAR, samesite="lax")
    return response


@router.get("/setup", response_class=HTMLResponse)
def setup_page(request: Request, session: SessionDep, token: str = "") -> Response:
    """The page the printed set-up link opens."""
    done = not setup.setup_needed(session=session)
    context = {"done": done, "token": token, "username": "", "error": None}
    return render(request, "auth/setup.html", context)


@router.post("/setup", response_class=HTMLResponse, dependencies=[CsrfChecked])
def setup_submit(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form(max_length=200)],
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    password_again: Annotated[str, Form(max_length=1024)],
) -> Response:
    lang = language(request)
    context = {"done": False, "token": token, "username": username, "error": None}
    if password != password_again:
        context["error"] = lang.gettext("The two passwords differ.")
        return render(request, "auth/setup.html", context, status_code=400)
    try:
        user = setup.complete_setup(
            session=session, token=token, username=username, password=password
        )
    except StudioError as exc:
        context["error"] = exc.detail
        return render(request, "auth/setup.html", context, status_code=exc.status_code)
    cookie = browser.start(session=session, key=signing_key(request), user=user)
    return signed_in(request, "/", cookie)
