"""Checkpoints that are complete or absent.

A checkpoint is written into `checkpoints/step-NNNNNNNN.tmp/`, every file is
fsynced, a manifest with the sha256 of every file is written last, the folder
is renamed to `step-NNNNNNNN/` and the parent folder is fsynced. A folder
without the `.tmp` suffix therefore always has all its files; `verify` checks
them against the manifest. Leftover `.tmp` folders (a kill mid-write) are
removed on the next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(Exception):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def write_checkpoint(
    root: Path, step: int, write_files: Callable[[Path], None], meta: dict[str, Any]
) -> Path:
    """Write a checkpoint atomically; `write_files(folder)` writes its content."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{checkpoint_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_files(tmp)
    files = {}
    for path in sorted(tmp.iterdir()):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.name] = _sha256(path)
    manifest = {"step": step, "created": time.time(), "files": files, **meta}
    with (tmp / MANIFEST).open("w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (checkpoint-now at a save step)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    return final


def verify(folder: Path) -> dict[str, Any]:
    """The manifest, after checking every file's sha256; raises CheckpointError."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder.name}: no readable manifest ({exc})") from None
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file() or _sha256(path) != expected:
            raise CheckpointError(f"{folder.name}: {name} is missing or does not match")
    return manifest


def clean_partial(root: Path) -> list[str]:
    """Remove `.tmp` folders left by a process killed while saving."""
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.endswith(".tmp"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies (an unverifiable one is skipped)."""
    for _, path in reversed(list_checkpoints(root)):
        try:
            return path, verify(path)
        except CheckpointError:
            continue
    return None


def prune(root: Path, keep_last: int, keep: set[int]) -> list[int]:
    """Delete all but the newest `keep_last` checkpoints and the steps in `keep`."""
    existing = list_checkpoints(root)
    newest = {step for step, _ in existing[-keep_last:]}
    removed = []
    for step, path in existing:
        if step not in newest and step not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(step)
    return removed
