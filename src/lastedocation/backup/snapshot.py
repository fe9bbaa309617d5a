"""A consistent picture of the studio, staged in one folder for the engine to back up.

The staging folder (`DATA_DIR/backup/stage`, always the same path, so restic finds
the previous snapshot and reads only files whose size or mtime changed) holds:

    database/studio.db        SQLite through its online backup API (never a file copy)
    database/studio.pgdump    or PostgreSQL through pg_dump (one consistent transaction)
    datasets/ models/ runs/ voices/ ...   the data folder's objects
    lastedocation-backup.json what this snapshot is: version, schema, counts, sizes

Files are hard links (instant, no space) where the studio never changes a file in place
(datasets, model folders, completed checkpoints, final weights); the few files that
grow (a run's events.jsonl, logs, its config) are copied, so the snapshot holds one
consistent length of each. A checkpoint is included only when it verifies against its
manifest (a `.tmp` one is still being written and never is); a training run keeps
training meanwhile. Left out: the signing key (a restored studio makes a new one, so
old sign-ins end), temporary files, the Hub cache and exports (both can be made
again), queued transcription audio, and the backup's own state.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from lastedocation import __version__
from lastedocation.settings import Settings
from lastedocation.training import checkpoint

MANIFEST = "lastedocation-backup.json"
DATABASE = "database"
SKIPPED_TOP = {
    "backup",
    "tmp",
    "hub-cache",
    "exports",
    "transcriptions",
    "secret.key",
    "studio.db",
    "studio.db-wal",
    "studio.db-shm",
    "studio.db-journal",
}
_LINKED_IN_RUNS = {"model", "adapter"}  # written once, at the end of training


@dataclass
class Staged:
    folder: Path
    files: int = 0
    bytes: int = 0
    linked: int = 0
    skipped_checkpoints: list[str] = field(default_factory=list)
    external_models: list[str] = field(default_factory=list)


def backup_dir(settings: Settings) -> Path:
    """The backup's own state in the data folder (never backed up itself)."""
    return settings.data_dir / "backup"


def stage(settings: Settings, *, revision: str | None) -> Staged:
    """Fill the staging folder with the studio as it is now."""
    into = backup_dir(settings) / "stage"
    shutil.rmtree(into, ignore_errors=True)
    (into / DATABASE).mkdir(parents=True)
    staged = Staged(folder=into)
    database = dump_database(settings, into / DATABASE)
    for dumped in (into / DATABASE).iterdir():
        staged.files += 1
        staged.bytes += dumped.stat().st_size
    verified = _VerifiedCheckpoints(backup_dir(settings) / "verified.json")
    for entry in sorted(settings.data_dir.iterdir()):
        if entry.name in SKIPPED_TOP or entry.name.endswith(".tmp"):
            continue
        _stage_tree(entry, into / entry.name, staged, verified, settings.data_dir)
    verified.save()
    staged.external_models = _external_models(settings)
    manifest = {
        "format": 1,
        "studio_version": __version__,
        "schema_revision": revision,
        "database": database,
        "created": time.time(),
        "files": staged.files,
        "bytes": staged.bytes,
        "skipped_checkpoints": staged.skipped_checkpoints,
        "external_models": staged.external_models,
    }
    (into / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return staged


def dump_database(settings: Settings, into: Path) -> str:
    """A consistent copy of the database in `into`; its kind ("sqlite" or "postgresql")."""
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite":
        source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True, timeout=30)
        copy = sqlite3.connect(into / "studio.db")
        try:
            source.backup(copy)  # the online backup API: a consistent copy of a live file
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
            source.close()
        return "sqlite"
    if url.get_backend_name() == "postgresql":
        dump = shutil.which("pg_dump")
        if dump is None:
            raise RuntimeError("pg_dump is not installed (apt-get install postgresql-client)")
        libpq, env = libpq_url(url)
        # one transaction: a consistent picture while the studio goes on writing
        done = subprocess.run(
            [
                dump,
                "--format=custom",
                "--no-owner",
                "--file",
                str(into / "studio.pgdump"),
                "--dbname",
                libpq,
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.strip()[-500:]}")
        return "postgresql"
    raise RuntimeError(f"backing up a {url.get_backend_name()} database is not supported")


def libpq_url(url: Any) -> tuple[str, dict[str, str]]:
    """The URL for PostgreSQL's own tools, and an environment holding its password
    (never on a command line, where other accounts could read it)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _stage_tree(
    source: Path, target: Path, staged: Staged, verified: _VerifiedCheckpoints, root: Path
) -> None:
    if source.is_symlink():
        return  # the studio makes none; one a person made may point anywhere
    if source.is_file():
        _stage_file(source, target, staged, link=not _grows(source, root))
        return
    if not source.is_dir():
        return
    is_checkpoint = source.parent.name == "checkpoints" and source.name.startswith("step-")
    if is_checkpoint and not verified.ok(source):  # `.tmp` ones never reach here
        staged.skipped_checkpoints.append(str(source.relative_to(root)))
        return
    target.mkdir(parents=True, exist_ok=True)
    try:
        children = sorted(source.iterdir())
    except FileNotFoundError:  # deleted meanwhile (an old checkpoint pruned)
        return
    for child in children:
        if child.name.endswith(".tmp"):
            continue
        _stage_tree(child, target / child.name, staged, verified, root)


def _grows(path: Path, root: Path) -> bool:
    """Whether the studio may still change this file in place: a run's own files,
    except its checkpoints and final weights."""
    parts = path.relative_to(root).parts
    if parts[0] != "runs":
        return False
    return not ({"checkpoints", *_LINKED_IN_RUNS} & set(parts[2:-1]))


def _stage_file(source: Path, target: Path, staged: Staged, *, link: bool) -> None:
    try:
        if link:
            try:
                os.link(source, target)
                staged.linked += 1
            except OSError:  # another file system, or links not allowed: copy it
                shutil.copy2(source, target)
        else:
            shutil.copy2(source, target)
        staged.files += 1
        staged.bytes += target.stat().st_size
    except FileNotFoundError:
        return  # deleted while the backup was taken


def _external_models(settings: Settings) -> list[str]:
    """Models registered in place from a server folder: their files are not in the
    data folder, so the snapshot names them instead of holding them."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("models"):
                return []
            rows = connection.execute(text("SELECT name, folder FROM models")).all()
    finally:
        engine.dispose()
    return [f"{name}: {folder}" for name, folder in rows if Path(folder).is_absolute()]


class _VerifiedCheckpoints:
    """Checkpoints already verified, by a fingerprint of their files' sizes and mtimes:
    a completed checkpoint never changes, so it is hashed once, not at every backup."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.known: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.known = {}
        self.seen: dict[str, str] = {}

    def ok(self, folder: Path) -> bool:
        try:
            stamp = ";".join(
                f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                for p in sorted(folder.iterdir())
            )
        except FileNotFoundError:
            return False
        key = str(folder)
        if self.known.get(key) == stamp:
            self.seen[key] = stamp
            return True
        try:
            checkpoint.verify(folder)
        except (checkpoint.CheckpointError, OSError, KeyError):
            return False
        self.seen[key] = stamp
        return True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.seen), encoding="utf-8")
        os.replace(tmp, self.path)


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError("the snapshot has no readable lastedocation-backup.json") from None
    return manifest
