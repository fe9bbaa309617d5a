"""A size limit on every request body that is not a file upload.

    app.add_middleware(BodyLimit, settings=settings, answer=studio_error_handler)

A JSON body or a form is parsed whole in memory (and the validation errors of an
invalid one took 140 times its size), so a body over the limit is never read: it is
refused with 413 at once when Content-Length says it is too large, and otherwise
its bytes are counted as they arrive (a chunked body has no Content-Length) and
reading stops at the first chunk past the limit. The refusal closes the connection,
so the rest of the body is not read either.

File uploads stream to disk under their own limits (`api/upload.py`), so their
routes (`UPLOAD_ROUTES`) have no limit here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lastedocation.errors import PayloadTooLarge, StudioError
from lastedocation.settings import Settings

KB = 1024
UPLOAD_ROUTES = frozenset(
    {
        ("POST", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets/validate"),
        ("POST", "/api/v1/datasets/speech"),  # speech dataset archives, their own limit
        ("POST", "/api/v1/models/import/archive"),
        ("POST", "/models/import/archive"),  # the models page uploads here (with progress)
        ("POST", "/v1/audio/transcriptions"),  # audio: LASTEDOCATION_MAX_AUDIO_UPLOAD_MB
        ("POST", "/api/v1/speech/transcriptions"),
    }
)
CHAT_ROUTE = "/v1/chat/completions"

# How the app answers a StudioError (JSON for the API, a page or fragment for the UI).
Answer = Callable[[Request, StudioError], Awaitable[Response]]


class _Overflow(Exception):
    """The body passed the limit while the app was reading it."""


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over its route's limit, read no further."""

    def __init__(self, app: ASGIApp, *, settings: Settings, answer: Answer) -> None:
        self.app = app
        self.answer = answer
        self.default = (settings.max_body_kb * KB, "LASTEDOCATION_MAX_BODY_KB")
        self.chat = (settings.max_chat_body_kb * KB, "LASTEDOCATION_MAX_CHAT_BODY_KB")

    def limit(self, method: str, path: str) -> tuple[int, str] | None:
        """The route's limit in bytes and the setting that sets it; None for an upload."""
        if (method, path) in UPLOAD_ROUTES:
            return None
        return self.chat if path == CHAT_ROUTE else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit(scope["method"], _route_path(scope)) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        most, setting = limit
        declared = _content_length(scope)
        if declared is not None and declared > most:
            detail = f"the request body is {declared:,} bytes; the limit is {most:,} bytes"
            await self._refuse(scope, receive, send, f"{detail} ({setting})", most)
            return

        received = 0
        over = started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > most:
                    over = True
                    raise _Overflow
            return message

        async def send_unless_over(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app answers its failed read (400); the client gets the 413
            started = True
            await send(message)

        try:
            await self.app(scope, counted, send_unless_over)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            detail = f"the request body passes the limit of {most:,} bytes ({setting})"
            await self._refuse(scope, receive, send, detail, most)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, detail: str, most: int
    ) -> None:
        error = PayloadTooLarge(detail, limit_bytes=most)
        response = await self.answer(Request(scope, receive), error)
        # the server then stops reading: the rest of the body is never received
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the routes see (without the root path a proxy may add in front)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
