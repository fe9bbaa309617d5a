"""Each request's id, access log line and metrics, in one pure ASGI middleware.

    app.add_middleware(Observe, metrics=metrics, answer=studio_error_handler)  # outermost

- The id: a sane incoming `X-Request-ID` (a proxy's), else a new one; every log line
  written while the request is served carries it (`logs.REQUEST_ID`), and every answer
  returns it in `X-Request-ID`, errors included.
- Metrics by route template (`/api/v1/runs/{run_id}`, never the raw path: ids would
  make a series per object), and "unmatched" for a path no route serves. Latency is
  measured to the response's start, so an event stream that lasts an hour counts its
  first byte; while a `text/event-stream` answer is open it counts as a live stream.
- An exception no handler answered becomes a 500 answer that names the request id
  (a page or JSON, as the app answers its errors), logged once with its traceback.
  Bodies pass through untouched: nothing here buffers a stream or an upload.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lastedocation.api.limits import Answer
from lastedocation.errors import StudioError
from lastedocation.logs import REQUEST_ID, request_id
from lastedocation.metrics import StudioMetrics

access = logging.getLogger("lastedocation.access")
HEADER = "x-request-id"
UNMATCHED = "unmatched"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Observe:
    def __init__(self, app: ASGIApp, *, metrics: StudioMetrics, answer: Answer) -> None:
        self.app = app
        self.metrics = metrics
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        rid = request_id(_header(scope, HEADER.encode()))
        # not reset afterwards: the server's own line about a failed request, written in
        # this request's task after the app returns, carries the id too
        REQUEST_ID.set(rid)
        status = 0
        stream = None

        async def observed(message: Message) -> None:
            nonlocal status, stream
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER.encode()]
                message["headers"] = [*headers, (HEADER.encode(), rid.encode())]
                route = _route(scope)
                self.metrics.requests.labels(scope["method"], route, str(status)).inc()
                self.metrics.latency.labels(scope["method"], route).observe(
                    time.perf_counter() - began
                )
                if _is_event_stream(message):
                    stream = self.metrics.streams.labels(route)
                    stream.inc()
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception as exc:
            if status:  # the answer had started (a stream broke): the server logs it
                raise
            error = StudioError(f"an unexpected error; the server log has it as request {rid}")
            error.__cause__ = exc  # the app's handler logs the whole chain, once
            try:
                response = await self.answer(Request(scope, receive), error)
            except Exception:  # the error page itself failed (a broken database)
                response = JSONResponse(error.to_dict(), status_code=error.status_code)
            await response(scope, receive, observed)
        finally:
            if stream is not None:
                stream.dec()
            elapsed = time.perf_counter() - began
            # decoded: %0A is a newline, which would forge a line in a text log
            path = _CONTROL.sub(lambda m: repr(m.group())[1:-1], scope.get("path", ""))
            access.info(
                "%s %s %s %.1f ms",
                scope["method"],
                path,
                status,
                elapsed * 1000,
                extra={
                    "method": scope["method"],
                    "path": path,  # no query string: a setup link's token must stay out
                    "route": _route(scope),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )


def _route(scope: Scope) -> str:
    """The template of the route that served the request (prefix included)."""
    # FastAPI hands a request for an included router to that router's own route, whose
    # path lacks the prefix (/runs/{run_id}); its effective context has the whole one.
    # (tests/api/test_metrics.py checks the labels are whole templates.)
    context = scope.get("fastapi", {}).get("effective_route_context")
    for path in (getattr(context, "path_format", None), getattr(scope.get("route"), "path", None)):
        if isinstance(path, str):
            return path
    return UNMATCHED


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_event_stream(message: Message) -> bool:
    for key, value in message.get("headers", []):
        if key == b"content-type":
            return bytes(value).startswith(b"text/event-stream")
    return False
