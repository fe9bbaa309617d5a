"""Server paths, for the few places an admin may name one.

Members never name a path on the server: datasets, runs and models are named by
id. An admin may name a folder or file (a model folder to register or train from,
a validation file, a Hub cache) only under the roots the operator allows in
`server_roots` (LASTEDOCATION_SERVER_ROOTS), and never inside the studio's data
folder, whose objects have owners and are named by id. Every path is resolved
(symlinks included) before it is checked, and the resolved path is what is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from lastedocation.errors import InvalidInput

_HOW = "LASTEDOCATION_SERVER_ROOTS lists the folders admins may name"


class PathRefused(InvalidInput):
    """A server path that may not be used; `field` names where it was given."""


def server_path(
    raw: str | Path,
    *,
    roots: list[Path],
    data_dir: Path,
    field: str,
    kind: Literal["file", "folder", "any"] = "any",
) -> Path:
    """The resolved path, if it lies under one of `roots` and outside `data_dir`."""
    text = str(raw)
    if "\x00" in text or not text.strip():
        raise PathRefused(f"{field}: not a path", field=field)
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise PathRefused(f"{field}: give an absolute path on the server", field=field)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop, an unreadable parent
        raise PathRefused(f"{field}: {text} cannot be resolved", field=field) from None
    if resolved.is_relative_to(data_dir.resolve()):
        raise PathRefused(
            f"{field}: {text} is inside the studio's data folder; name datasets and models "
            "by id instead",
            field=field,
        )
    if not any(resolved.is_relative_to(root.expanduser().resolve()) for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "none are set"
        raise PathRefused(
            f"{field}: {text} is outside the folders admins may name ({allowed}; {_HOW})",
            field=field,
        )
    if kind == "file" and not resolved.is_file():
        raise PathRefused(f"{field}: no file at {text}", field=field)
    if kind == "folder" and not resolved.is_dir():
        raise PathRefused(f"{field}: no folder at {text}", field=field)
    return resolved


DATA_DIR_MARK = "<data folder>"


def hide_data_dir(value: Any, data_dir: Path) -> Any:
    """`value` (a string, or lists and dicts of them) with the data folder's absolute
    path replaced by a mark: messages from libraries (a tokenizer that cannot load, a
    trainer's traceback) name files by their path, and members are never shown the
    server's paths."""
    if isinstance(value, str):
        for folder in {str(data_dir.resolve()), str(data_dir)}:
            value = value.replace(folder, DATA_DIR_MARK)
        return value
    if isinstance(value, dict):
        return {key: hide_data_dir(item, data_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [hide_data_dir(item, data_dir) for item in value]
    return value
