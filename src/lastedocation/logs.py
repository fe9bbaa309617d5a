"""Log lines as text or JSON, each carrying the id of the request it belongs to.

    configure_logging(level="info", fmt="json")   # where `lastedocation serve` starts

A request's id lives in `REQUEST_ID` (a context variable: the request's task and the
worker threads it calls see it, nothing else does), so every line logged while a request
is served, by any module, carries it without being handed the id. In JSON each line is
one object: time, level, logger, message, request_id, and the fields a call passes in
`extra` (the access line's method, path, route, status, duration_ms).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# what an incoming X-Request-ID may hold: ids a proxy or client makes (uuids, hex, dotted
# or colon-separated trace ids); anything else (a newline, quotes, a megabyte) is replaced
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# the fields of `extra` a JSON line carries (others a library passes are left out)
FIELDS = ("method", "path", "route", "status", "duration_ms", "client")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_MARK = "_lastedocation"  # on the handler configure_logging installed, to replace it later


def request_id(incoming: str | None) -> str:
    """The incoming id when it is sane (bounded, safe characters), else a new one."""
    if incoming is not None and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or "-") on every record the handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    *, level: str = "info", fmt: Literal["text", "json"] = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (stderr) as text or JSON
    lines. Called again, it replaces the handler it installed before; returns it (a test
    removes it from the root logger when done)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler


def _level(name: str) -> int:
    # uvicorn's "trace" is below debug; an unknown name falls back to info
    if name.lower() == "trace":
        return 5
    number = logging.getLevelName(name.upper())
    return number if isinstance(number, int) else logging.INFO
