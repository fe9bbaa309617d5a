"""One exception tree for the whole studio; each error carries its HTTP status.

    StudioError                 500  something we did not expect
    ├── NotFound                404  no such dataset / run / model (or not yours)
    ├── Conflict                409  the thing exists, or its state forbids this
    ├── InvalidInput            400  the request itself is wrong (bad name, bad option)
    │   ├── DatasetInvalid      422  the file parsed, but no usable row survived
    │   └── AudioInvalid        422  audio that cannot be decoded, or is empty, silent or too long
    ├── PayloadTooLarge         413  an upload over the configured limit
    ├── Unauthorized            401  no valid credentials (sends WWW-Authenticate: Bearer)
    ├── Forbidden               403  signed in, but this needs another role
    └── TooManyRequests         429  too many failed attempts (sends Retry-After)

`detail` is a human sentence that names the problem; `extra` holds structured
facts (row, field, limit) that the API returns beside it; `headers` are HTTP
headers the answer must carry.
"""

from __future__ import annotations

from typing import Any


class StudioError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}

    @property
    def headers(self) -> dict[str, str]:
        return {}


class NotFound(StudioError):
    status_code = 404
    code = "not_found"


class Conflict(StudioError):
    status_code = 409
    code = "conflict"


class InvalidInput(StudioError):
    status_code = 400
    code = "invalid_input"


class DatasetInvalid(InvalidInput):
    status_code = 422
    code = "dataset_invalid"


class AudioInvalid(InvalidInput):
    """`problem` names what is wrong: undecodable, empty, silent, too_long, too_short."""

    status_code = 422
    code = "audio_invalid"

    def __init__(self, detail: str, *, problem: str, **extra: Any) -> None:
        super().__init__(detail, problem=problem, **extra)
        self.problem = problem


class PayloadTooLarge(StudioError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(StudioError):
    status_code = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(StudioError):
    status_code = 403
    code = "forbidden"


class TooManyRequests(StudioError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **extra)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
