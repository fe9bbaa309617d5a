"""One exception tree for the whole studio; each error carries its HTTP status.

    StudioError                 500  something we did not expect
    ├── NotFound                404  no such dataset / run / model (or not yours)
    ├── Conflict                409  the thing exists, or its state forbids this
    ├── InvalidInput            400  the request itself is wrong (bad name, bad option)
    │   └── DatasetInvalid      422  the file parsed, but no usable row survived
    └── PayloadTooLarge         413  an upload over the configured limit

`detail` is a human sentence that names the problem; `extra` holds structured
facts (row, field, limit) that the API returns beside it.
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


class PayloadTooLarge(StudioError):
    status_code = 413
    code = "payload_too_large"
