"""A real S3-compatible server on loopback (`rclone serve s3`, the same binary the
studio uses as its transport), and targets that point at it or at a folder."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

from lastedocation.api import create_app
from lastedocation.backup import jobs
from lastedocation.backup.engine import Engine
from lastedocation.backup.entries import BackupJob
from lastedocation.backup.remote import find_program
from lastedocation.backup.runner import Backups
from lastedocation.backup.targets import BackupTarget
from lastedocation.settings import Settings

ACCESS_KEY = "AKIALASTEDOCATION01"
SECRET_KEY = "a-secret-the-studio-only-hands-to-rclone"


@dataclass
class S3Server:
    endpoint: str
    served: Path  # the bucket folders, as files on disk (to flip a byte, to grep)
    secret_file: Path

    def target(self, name: str = "s3", bucket: str = "studio", **fields: object) -> BackupTarget:
        (self.served / bucket).mkdir(exist_ok=True)
        return BackupTarget(
            name=name,
            kind="s3",
            provider="Rclone",
            endpoint=self.endpoint,
            path=f"{bucket}/lastedocation",
            access_key_id=ACCESS_KEY,
            secret_access_key_file=self.secret_file,
            timeout_s=10,
            **fields,  # type: ignore[arg-type]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    served = root / "served"
    served.mkdir()
    port = free_port()
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            find_program("rclone"),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{ACCESS_KEY},{SECRET_KEY}",
            str(served),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RCLONE_CONFIG": os.devnull},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:  # pragma: no cover - the server never came up
        proc.kill()
        raise RuntimeError((root / "serve.log").read_text())
    try:
        yield S3Server(
            endpoint=f"http://127.0.0.1:{port}",
            served=served,
            secret_file=secret_file(root, "s3.secret", SECRET_KEY),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@dataclass
class Studio:
    """A studio made by the real app (the sample dataset imported) and its backup jobs,
    run in the foreground as the CLI runs them."""

    app: FastAPI
    backups: Backups

    @property
    def settings(self) -> Settings:
        return self.backups.settings

    def with_targets(self, *targets: BackupTarget) -> Studio:
        """The same studio with other targets (settings are read-only once built)."""
        settings = self.settings.model_copy(update={"backup_targets": list(targets)})
        return Studio(self.app, Backups(settings=settings, sessions=self.app.state.sessions))

    def engine(self, name: str) -> Engine:
        return self.backups.engine(self.backups.target(name))

    def run(self, kind: str, target: str, **options: object) -> BackupJob:
        with self.app.state.sessions() as session:
            job = jobs.queue_job(
                session,
                kind=kind,
                target=self.backups.target(target),
                trigger="manual",
                options=options,
            )
        return self.backups.run(job.id)

    def add_file(self, relative: str, data: bytes) -> Path:
        path = self.settings.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@contextmanager
def make_studio(data_dir: Path, *targets: BackupTarget) -> Iterator[Studio]:
    settings = Settings(data_dir=data_dir, backup_targets=list(targets), bundled_speech_model=False)
    app = create_app(settings)
    try:
        yield Studio(app, Backups(settings=settings, sessions=app.state.sessions))
    finally:
        app.state.engine.dispose()


def random_bytes(seed: int, size: int) -> bytes:
    """Incompressible, deduplication-proof content (a checkpoint's weights, say)."""
    return random.Random(seed).randbytes(size)
