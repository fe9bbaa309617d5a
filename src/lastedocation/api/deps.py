"""Dependencies shared by the routes, as `Annotated` aliases, and the error answers
the routes document (`error_responses`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any
from weakref import WeakKeyDictionary

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from lastedocation.auth import browser
from lastedocation.auth import service as auth_service
from lastedocation.auth.models import User
from lastedocation.auth.ratelimit import LoginLimiter
from lastedocation.auth.tokens import TokenSigner
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.errors import Forbidden, Unauthorized
from lastedocation.settings import Settings


class Problem(BaseModel):
    field: str | None = Field(description="The field at fault (dotted path); none: the request.")
    message: str


class ErrorPublic(BaseModel):
    """Every error answer: a stable code, a sentence naming the problem and the fix,
    and structured facts beside them (row, field, limit, ...)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable code: invalid_input, not_found, conflict, ...")
    detail: str
    problems: list[Problem] | None = Field(
        default=None, description="Each problem of an invalid request or config."
    )


_ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "The request is wrong; the answer names the field and the fix."},
    401: {
        "description": "No valid credentials: sign in first.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "Signed in, but this needs another role."},
    404: {"description": "No such item, or it is not yours."},
    409: {"description": "The item exists, or its state forbids this."},
    413: {"description": "The upload passes the size limit."},
    422: {
        "description": "The request does not fit this schema (`problems` lists each field), "
        "or an upload has no usable row."
    },
    429: {
        "description": "Too many failed sign-ins.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` for these error statuses, each with the error body."""
    return {code: {**_ERRORS[code], "model": ErrorPublic} for code in codes}


# An item's id in a path: 1 or more, and small enough for the database (a larger
# number answers 422 naming the limit, not a database error).
ItemId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An access token from /api/v1/auth/login, or an API token (`ldt_...`).",
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class SessionSlots:
    """At most `size` requests hold a database session at once; the others wait on the
    event loop. One semaphore per event loop (tests run apps on several)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._slots:
            self._slots[loop] = asyncio.Semaphore(self.size)
        return self._slots[loop]


async def _session(request: Request) -> AsyncIterator[Session]:
    # A request keeps its session, and from its first query a pooled connection, until it
    # is answered, across several worker threads. Were more requests to hold one than the
    # pool has connections, every worker thread could end up waiting for a connection
    # that only a request waiting for a thread would give back (200 concurrent reads
    # deadlocked so until the pool timed out). So a request first takes a slot, waiting
    # on the event loop rather than in a thread.
    slots: SessionSlots = request.app.state.session_slots
    async with slots():
        session: Session = request.app.state.sessions()
        try:
            yield session
        finally:
            await run_in_threadpool(session.close)


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.signer
    return signer


def _login_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


def _client_address(request: Request) -> str:
    # the peer address; behind a reverse proxy this is the proxy (run uvicorn with
    # --forwarded-allow-ips to have the client's address here instead)
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
SignerDep = Annotated[TokenSigner, Depends(_signer)]
LoginLimiterDep = Annotated[LoginLimiter, Depends(_login_limiter)]
ClientAddress = Annotated[str, Depends(_client_address)]


def _current_user(
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    cookie = request.cookies.get(browser.SESSION_COOKIE)
    if credentials is None and cookie:  # the web UI's pages calling the API
        user = browser.user_for_cookie(
            session=session, key=request.app.state.signing_key, cookie=cookie
        )
        browser.check_csrf(
            method=request.method,
            key=request.app.state.signing_key,
            session_cookie=cookie,
            csrf_cookie=request.cookies.get(browser.CSRF_COOKIE),
            sent=request.headers.get(browser.CSRF_HEADER),
        )
        return user
    if credentials is None:
        raise Unauthorized(
            "sign in first: send `Authorization: Bearer TOKEN` with an access token from "
            "/api/v1/auth/login or an API token"
        )
    return auth_service.user_for_bearer(
        session=session, signer=signer, token=credentials.credentials
    )


CurrentUser = Annotated[User, Depends(_current_user)]


def _streaming_user(
    request: Request,
    signer: SignerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The current user, for long responses (SSE): a session dependency would hold
    its database connection for the whole stream, so this one closes it at once."""
    with request.app.state.sessions() as session:
        return _current_user(request, session, signer, credentials)


StreamingUser = Annotated[User, Depends(_streaming_user)]


def _admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("only an admin can do this")
    return user


AdminUser = Annotated[User, Depends(_admin_user)]
