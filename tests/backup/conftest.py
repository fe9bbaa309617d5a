"""A real S3-compatible server on loopback (`rclone serve s3`, the same binary the
studio uses as its transport), and targets that point at it or at a folder."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lastedocation.backup.engine import find_program
from lastedocation.backup.targets import BackupTarget

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
        [find_program("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}",
         "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(served)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": os.devnull},
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
