"""Dependencies of the page routes: the signed-in user (from the session cookie) and
the CSRF check for forms."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lastedocation.api.deps import SessionDep
from lastedocation.auth import browser
from lastedocation.auth.models import User
from lastedocation.errors import Unauthorized


class SignInRequired(Exception):
    """A page needs a signed-in user; the app answers with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def signing_key(request: Request) -> bytes:
    key: bytes = request.app.state.signing_key
    return key


def optional_user(request: Request, session: SessionDep) -> User | None:
    cookie = request.cookies.get(browser.SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return browser.user_for_cookie(session=session, key=signing_key(request), cookie=cookie)
    except Unauthorized:
        return None


def page_user(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return user


async def csrf_checked(request: Request) -> None:
    """Forms and htmx requests repeat the CSRF cookie (header or `csrf_token` field)."""
    sent = request.headers.get(browser.CSRF_HEADER)
    if sent is None and request.method not in browser.SAFE_METHODS:
        form = await request.form()  # Starlette caches it for the route
        field = form.get("csrf_token")
        sent = field if isinstance(field, str) else None
        if not isinstance(field, str) or not field:
            await form.close()  # refused below: its uploaded files (temp files) go now
    browser.check_csrf(
        method=request.method,
        key=signing_key(request),
        session_cookie=request.cookies.get(browser.SESSION_COOKIE),
        csrf_cookie=request.cookies.get(browser.CSRF_COOKIE),
        sent=sent,
    )


OptionalUser = Annotated[User | None, Depends(optional_user)]
PageUser = Annotated[User, Depends(page_user)]
CsrfChecked = Depends(csrf_checked)
