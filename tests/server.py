"""A real `lastedocation serve` process for tests that need one (kill it, restart it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StudioServer:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LASTEDOCATION_DATA_DIR": str(data_dir),
            "LASTEDOCATION_IMPORT_SAMPLE_DATASET": "false",
            "LASTEDOCATION_LOG_LEVEL": "warning",
            "LASTEDOCATION_SUPERVISOR_INTERVAL_S": "0.2",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StudioServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lastedocation.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.kill()
        raise AssertionError("the server did not become ready")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
