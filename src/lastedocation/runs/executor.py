"""Executors start trainer processes. The local one spawns
`python -m lastedocation.training RUN_DIR` (or torchrun running it once per device)
in its own session, so the trainer outlives a server that dies and is re-attached
when the server starts again. runs/ray_executor.py runs them on a Ray cluster."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import psutil

from lastedocation.settings import Settings


class Executor(Protocol):
    def start(self, run_dir: Path, devices: int = 1) -> int: ...
    def poll(self, pid: int) -> int | None: ...
    def alive(self, pid: int, run_dir: Path) -> bool: ...
    def placed_at(self, pid: int) -> float | None: ...
    def kill(self, pid: int) -> None: ...
    def reap(self) -> None: ...
    def release(self) -> None: ...


def trainer_command(run_dir: Path, devices: int) -> list[str]:
    """One process, or torchrun with one process per device."""
    command = [sys.executable, "-m", "lastedocation.training", str(run_dir)]
    if devices > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc-per-node={devices}", *command[1:]]
    return command


def make_executor(settings: Settings) -> Executor:
    """The executor the settings choose. Ray's comes with the `ray` extra and is
    imported only when chosen."""
    if settings.executor == "local":
        return LocalExecutor()
    # read when Ray is imported: its crash handler would print a stack trace on every
    # SIGTERM (the server's normal stop) before passing it on to uvicorn's handler
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        from lastedocation.runs.ray_executor import RayExecutor
    except ImportError as exc:
        raise RuntimeError(
            "executor is ray but Ray is not installed: pip install 'lastedocation[ray]' "
            f"(the same Ray version as the cluster's) ({exc})"
        ) from None
    return RayExecutor(
        address=settings.ray_address, device=settings.ray_device, resources=settings.ray_resources
    )


class LocalExecutor:
    """Trainer processes on this machine."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, run_dir: Path, devices: int = 1) -> int:
        """One process, or torchrun with one process per device (its pid is the run's:
        signals and kills go to its whole process group)."""
        with (run_dir / "trainer.log").open("ab") as log:
            process = subprocess.Popen(
                trainer_command(run_dir, devices),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
        self._children[process.pid] = process
        return process.pid

    def poll(self, pid: int) -> int | None:
        """The exit code of a child that ended (reaping it), else None."""
        process = self._children.get(pid)
        if process is None:
            return None
        code = process.poll()
        if code is not None:
            del self._children[pid]
        return code

    def alive(self, pid: int, run_dir: Path) -> bool:
        """Is `pid` still this run's trainer (and not a reused pid)?"""
        if pid in self._children:
            return self._children[pid].poll() is None
        try:
            process = psutil.Process(pid)
            return process.status() != psutil.STATUS_ZOMBIE and str(run_dir) in process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def placed_at(self, pid: int) -> float | None:
        """When the trainer got its resources (a cluster's executor says None while it
        waits for them); a local trainer has this machine's at once."""
        return 0.0

    def reap(self) -> None:
        """Collect the exit status of every child that ended."""
        for pid in list(self._children):
            if self._children[pid].poll() is not None:
                del self._children[pid]

    def release(self) -> None:
        """Let running trainers go on without us (the server is stopping; the next
        start re-attaches to them by pid and heartbeat)."""
        self.reap()
        for process in self._children.values():
            # note: marks the Popen as done so dropping it does not warn; the
            # trainer is adopted by init when this process exits
            process.returncode = -1
        self._children.clear()

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if pid in self._children:
            self._children[pid].wait(timeout=30)
            del self._children[pid]
