"""Restore a snapshot into a data folder: all of it, verified, or nothing.

The snapshot is restored into a folder beside the data (`DATA_DIR/backup/restore-*`,
the same file system, so the last step is a rename); restic authenticates every piece
as it reads it and reads every file back (`--verify`). Any error, a corrupt object on
the target included, ends the restore with the data folder untouched and the partial
copy deleted. Only then are the objects moved into place and the database loaded.

A data folder that already holds a studio (accounts, datasets, runs or models) is
refused unless `force` is given; then what was there is moved aside to
`DATA_DIR/backup/replaced-*`, never deleted. The server must not be running on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from lastedocation.backup import snapshot
from lastedocation.backup.engine import Engine
from lastedocation.errors import Conflict, StudioError

KEPT = {"backup", "secret.key", "tmp"}  # never replaced by a restore


class RestoreFailed(StudioError):
    status_code = 502
    code = "restore_failed"


@dataclass
class Restored:
    snapshot_id: str
    files: int
    bytes: int
    database: str
    moved_aside: Path | None
    manifest: dict[str, Any]


def studio_objects(data_dir: Path, database_url: str | None) -> list[str]:
    """What a data folder already holds that a restore would replace (empty: nothing)."""
    found = []
    for name in ("datasets", "runs", "models", "voices"):
        folder = data_dir / name
        if folder.is_dir() and any(folder.iterdir()):
            found.append(name)
    url = make_url(database_url or f"sqlite:///{data_dir / 'studio.db'}")
    if url.get_backend_name() == "sqlite":
        if url.database and Path(url.database).is_file():
            found.append(Path(url.database).name)
    elif _holds_a_studio(url):
        found.append(f"the {url.get_backend_name()} database {url.database}")
    return found


def _holds_a_studio(url: Any) -> bool:
    """Whether a server database already has the studio's tables with accounts in them."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("users"):
                return False
            return bool(connection.execute(text("SELECT count(*) FROM users")).scalar())
    finally:
        engine.dispose()


def restore(
    *,
    engine: Engine,
    snapshot_id: str,
    data_dir: Path,
    database_url: str | None,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Restored:
    """Restore `snapshot_id` into `data_dir` (and the database `database_url` names)."""
    present = studio_objects(data_dir, database_url)
    if present and not force:
        raise Conflict(
            f"{data_dir} already holds a studio ({', '.join(present)}); restore into an "
            "empty data folder, or pass --force to move what is there aside first",
            present=present,
        )
    size = engine.restore_size(snapshot_id)
    work = data_dir / "backup" / f"restore-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        _restore_with_progress(engine, snapshot_id, work, size, on_progress)
        manifest = snapshot.read_manifest(work)
        aside = _move_aside(data_dir, database_url) if present else None
        database = _load_database(work / snapshot.DATABASE, manifest, data_dir, database_url)
        for entry in sorted(work.iterdir()):
            if entry.name in (snapshot.DATABASE, snapshot.MANIFEST):
                continue
            os.replace(entry, data_dir / entry.name)
    except StudioError:
        raise
    except Exception as exc:
        raise RestoreFailed(f"the restore failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Restored(
        snapshot_id=snapshot_id,
        files=int(manifest.get("files", size["files"])),
        bytes=int(manifest.get("bytes", size["bytes"])),
        database=database,
        moved_aside=aside,
        manifest=manifest,
    )


def _restore_with_progress(
    engine: Engine,
    snapshot_id: str,
    work: Path,
    size: dict[str, int],
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """restic 0.14 reports no progress while restoring: count what has arrived."""
    import threading

    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            if on_progress is not None:
                on_progress(_bytes_under(work), size["bytes"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        engine.restore(snapshot_id, work)
    finally:
        done.set()
        watcher.join(timeout=5)
    if on_progress is not None:
        on_progress(size["bytes"], size["bytes"])


def _bytes_under(folder: Path) -> int:
    total = 0
    for path, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # gone or renamed meanwhile
                total += os.lstat(os.path.join(path, name)).st_size
    return total


def _move_aside(data_dir: Path, database_url: str | None) -> Path:
    aside = data_dir / "backup" / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(parents=True)
    for entry in sorted(data_dir.iterdir()):
        if entry.name not in KEPT:
            os.replace(entry, aside / entry.name)
    return aside


def _load_database(
    folder: Path, manifest: dict[str, Any], data_dir: Path, database_url: str | None
) -> str:
    kind = manifest.get("database")
    url = make_url(database_url or f"sqlite:///{data_dir / 'studio.db'}")
    backend = url.get_backend_name()
    if kind == "sqlite" and backend == "sqlite":
        target = Path(url.database or data_dir / "studio.db")
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        check = sqlite3.connect(folder / "studio.db")
        try:
            result = check.execute("PRAGMA integrity_check").fetchone()
        finally:
            check.close()
        if not result or result[0] != "ok":
            raise RestoreFailed(f"the snapshot's database fails SQLite's integrity check: {result}")
        os.replace(folder / "studio.db", target)
        return "sqlite"
    if kind == "postgresql" and backend == "postgresql":
        pg_restore = shutil.which("pg_restore")
        if pg_restore is None:
            raise RestoreFailed("pg_restore is not installed (apt-get install postgresql-client)")
        libpq, env = snapshot.libpq_url(url)
        done = subprocess.run(
            [
                pg_restore,
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--dbname",
                libpq,
                str(folder / "studio.pgdump"),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            env=env,
        )
        if done.returncode != 0:
            raise RestoreFailed(f"pg_restore failed: {done.stderr.strip()[-500:]}")
        return "postgresql"
    raise RestoreFailed(
        f"the snapshot holds a {kind} database and this studio uses {backend}: restore it "
        f"with a {kind} database_url"
    )
