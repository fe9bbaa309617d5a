"""Stream a multipart upload to a file on disk, enforcing the size limit as the
body arrives: the request is refused with 413 as soon as the file passes the
limit (or at once, when Content-Length already says it will), and nothing of
it is held in memory beyond one chunk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from lastedocation.errors import InvalidInput, PayloadTooLarge

# The OpenAPI request body of a route that takes one file (its parser is ours, so
# FastAPI cannot infer it).
FILE_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}

# Room for the multipart boundaries and headers around the file itself.
_ENVELOPE = 64 * 1024
_MAX_FIELD_BYTES = 4096
_MAX_REPEATS = 16  # values kept of one repeated field (e.g. timestamp_granularities[])


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_field: bytes = b""
    header_value: bytes = b""
    name: str = ""
    filename: str | None = None
    out: IO[bytes] | None = None
    value: bytearray = field(default_factory=bytearray)
    size: int = 0


@dataclass
class Upload:
    path: Path
    filename: str
    size: int
    fields: dict[str, str]  # a field sent more than once: its last value
    repeated: dict[str, list[str]] = field(default_factory=dict)  # every value, in order


def _disposition(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    for key, value in headers:
        if key.lower() == b"content-disposition":
            message = Message()
            message["content-disposition"] = value.decode("utf-8", "replace")
            name = message.get_param("name", header="content-disposition")
            filename = message.get_filename()
            return (str(name) if name else ""), filename
    return "", None


async def receive_upload(
    request: Request,
    *,
    dest: Path,
    limit: int,
    file_field: str = "file",
    setting: str = "LASTEDOCATION_MAX_UPLOAD_MB",
) -> Upload:
    """Write the `file_field` part of a multipart request to `dest`; past `limit`, a 413
    that names the `setting` that sets it."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidInput(
            "send the file as multipart/form-data in a field named `file`", field="file"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _ENVELOPE:
        raise PayloadTooLarge(
            f"the upload is {int(declared):,} bytes; the limit is {limit:,} bytes ({setting})",
            limit_bytes=limit,
        )
    part = _Part()
    found: dict[str, object] = {}
    fields: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers.append((part.header_field, part.header_value))
        part.header_field = part.header_value = b""

    def on_headers_finished() -> None:
        part.name, part.filename = _disposition(part.headers)
        if part.name == file_field and part.filename is not None and "file" not in found:
            part.out = dest.open("wb")
            found["file"] = part.filename

    def on_part_data(data: bytes, start: int, end: int) -> None:
        size = end - start
        part.size += size
        if part.out is not None:
            if part.size > limit:
                raise PayloadTooLarge(
                    f"the file passes the limit of {limit:,} bytes ({setting})",
                    limit_bytes=limit,
                )
            part.out.write(data[start:end])
        elif part.size <= _MAX_FIELD_BYTES:
            part.value += data[start:end]

    def on_part_end() -> None:
        if part.out is not None:
            part.out.close()
            found["size"] = part.size
        elif part.name and part.filename is None:
            fields[part.name] = part.value.decode("utf-8", "replace")
            if len(repeated.setdefault(part.name, [])) < _MAX_REPEATS:
                repeated[part.name].append(fields[part.name])
        part.headers, part.out, part.value, part.size = [], None, bytearray(), 0

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (PayloadTooLarge, InvalidInput):
        raise
    except Exception as exc:  # the multipart parser's own errors: a malformed body
        raise InvalidInput(f"the multipart body is malformed: {exc}", field="file") from exc
    finally:
        if part.out is not None and not part.out.closed:
            part.out.close()
    if "file" not in found:
        dest.unlink(missing_ok=True)
        raise InvalidInput("the request has no file in a field named `file`", field="file")
    if "size" not in found:
        raise InvalidInput("the upload ended before the file was complete", field="file")
    return Upload(dest, str(found["file"]), int(os.path.getsize(dest)), fields, repeated)
