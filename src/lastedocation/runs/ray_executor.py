"""Trainers on a Ray cluster: the step past one machine.

Each start is one detached, named Ray actor (namespace "lastedocation", named
"RUN_DIR#ID") that asks the cluster for the run's resources. Ray queues it until a node
has them and then creates it there; the actor starts the same
`python -m lastedocation.training RUN_DIR` as its child and reports on it. The run
folder contract is untouched: the trainer writes events, heartbeat and checkpoints into
its folder and reads its control file, and the server reads and writes the same folder.
So the data folder must be storage that every node mounts at the same path (NFS, CephFS,
a cloud filesystem), and every node has the studio installed (the same version, with
the same Ray). On one machine running its own cluster both hold by themselves.

- pause, resume, stop and checkpoint go through the control file, as with local
  trainers; a run still waiting for resources has no trainer to ask, and the supervisor
  pauses or stops it at once (`placed_at` says it is waiting).
- crashes: the trainer exiting (its actor keeps the exit code for the server), its actor
  dying (Ray kills the worker's process group, and the trainer is in it) and its node
  being lost all read as the trainer being gone, and the supervisor interrupts the run.
- server restarts: the actors are detached, so they and their trainers carry on; the
  next server finds each one by its name (the run's folder and id) and re-attaches.
- The id the studio stores as the run's pid is above any Linux pid, so it is never
  taken for a local process. The trainer is told it (LASTEDOCATION_TRAINER_ID) and
  writes it into its heartbeat: that is how the supervisor tells its beat from an older
  trainer's.

One run trains on one node (torchrun --standalone for several GPUs there). Several
nodes for one run would be torchrun's rendezvous on nodes Ray places together (a
placement group of STRICT_SPREAD bundles, one actor per node starting torchrun with
--nnodes, --node-rank and the first node's address): the trainer and its run folder
stay as they are. Ray Train's TorchTrainer was not chosen: it moves the training loop
into Ray's worker functions and its own checkpoint storage, a second trainer to keep.
That step is not built yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
import ray
import yaml
from ray.exceptions import RayError

from lastedocation.runs.executor import trainer_command

log = logging.getLogger("lastedocation.ray")
NAMESPACE = "lastedocation"
TRAINER_ID_ENV = "LASTEDOCATION_TRAINER_ID"  # read by training/events.py's Heartbeat
FIRST_ID = 1 << 22  # Linux pids stay below 2**22
CALL_S = 10.0  # the longest the supervisor waits on a node (to stop a trainer)
LINGER_S = 10.0  # an ended trainer's actor waits this long for the server to read its code


class TrainerOnNode:
    """The actor's body, on the node Ray placed it on: the trainer is its child."""

    def __init__(self, run_dir: str, devices: int, trainer_id: int) -> None:
        folder = Path(run_dir)
        if not (folder / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{folder} is not on node {socket.gethostname()}: the data folder must be on "
                "storage every node of the cluster mounts at the same path"
            )
        self.node = ray.get_runtime_context().get_node_id()
        self.placed = time.time()
        with (folder / "trainer.log").open("ab") as out:
            out.write(f"ray: on node {self.node} ({socket.gethostname()})\n".encode())
            out.flush()
            # note: not a session of its own: when the actor dies (killed, or its worker
            # crashes), Ray kills the worker's process group, and the trainer with it
            self.process = subprocess.Popen(
                trainer_command(folder, devices),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    "TOKENIZERS_PARALLELISM": "false",
                    TRAINER_ID_ENV: str(trainer_id),
                },
            )
        threading.Thread(target=self._linger, name="trainer-watch", daemon=True).start()

    def _linger(self) -> None:
        """The actor holds the run's resources until it ends. The server ends it once it
        has read the exit code; without a server, it ends itself a little later."""
        self.process.wait()
        time.sleep(LINGER_S)
        ray.kill(ray.get_runtime_context().current_actor)

    def where(self) -> dict[str, Any]:
        return {"node_id": self.node, "host": socket.gethostname(), "placed": self.placed}

    async def ended(self) -> int:
        """Answers once the trainer has exited, with its exit code. (Async: a call
        waiting here holds no thread of the actor.)"""
        while (code := self.process.poll()) is None:
            await asyncio.sleep(0.5)
        return code

    def stop(self) -> int:
        """Kill the trainer and what it started (torchrun's workers); wait for it."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        self.process.kill()
        return self.process.wait(timeout=CALL_S)


_Actor = ray.remote(TrainerOnNode)


@dataclass
class _Trainer:
    actor: Any  # an ActorHandle: Ray types the .remote() of its methods loosely
    where: ray.ObjectRef[dict[str, Any]]  # ready once Ray has placed the actor
    ended: ray.ObjectRef[int]  # ready once the trainer has exited (or the actor died)
    placed: float | None = None
    ended_seen: bool = False

    @classmethod
    def watch(cls, actor: Any) -> _Trainer:
        return cls(actor, actor.where.remote(), actor.ended.remote())


class RayExecutor:
    """Trainers on the Ray cluster at `address` ("auto", "HOST:6379" from a node of the
    cluster, "ray://HOST:10001" through Ray Client). Each of a run's devices asks for a
    GPU (`device="gpu"`) or is a CPU process (a CPU-only cluster); every run also asks
    for the custom `resources` (to keep runs to some nodes, or to so many per node).
    Each call looks at Ray's answers without waiting for them (`ray.wait`, timeout 0),
    so a busy cluster never holds up the supervisor."""

    def __init__(
        self,
        *,
        address: str,
        device: Literal["gpu", "cpu"] = "gpu",
        resources: dict[str, float] | None = None,
    ) -> None:
        self.address = address
        self.device = device
        self.resources = dict(resources or {})
        self._trainers: dict[int, _Trainer] = {}

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        ray.init(
            address=self.address,
            namespace=NAMESPACE,
            log_to_driver=False,  # the trainer's output goes to its trainer.log
            logging_level=logging.WARNING,
            configure_logging=False,
        )

    def start(self, run_dir: Path, devices: int = 1) -> int:
        """Submit the run; Ray queues it until a node has its resources."""
        self._connect()
        trainer_id = FIRST_ID + secrets.randbelow(2**31 - 1 - FIRST_ID)
        actor: Any = _Actor.options(
            name=_name(run_dir, trainer_id),
            namespace=NAMESPACE,
            lifetime="detached",  # outlives this server: the next one re-attaches
            max_restarts=0,  # a lost node interrupts the run; resuming is the user's call
            **self._resources(run_dir, devices),
        ).remote(str(run_dir), devices, trainer_id)
        self._trainers[trainer_id] = _Trainer.watch(actor)
        log.info("run %s submitted to Ray as trainer %s", run_dir.name, trainer_id)
        return trainer_id

    def _resources(self, run_dir: Path, devices: int) -> dict[str, Any]:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        threads = int((config.get("training") or {}).get("threads") or 1)
        wanted: dict[str, Any] = {
            "num_cpus": devices * threads,
            "num_gpus": devices if self.device == "gpu" else 0,
            "resources": self.resources,
        }
        if self.device == "cpu":  # the pre-flight's estimate is of the CPU's memory then
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                preflight = json.loads((run_dir / "preflight.json").read_text("utf-8"))
                wanted["memory"] = int(preflight["memory"]["estimated_bytes"])
        return wanted

    def placed_at(self, pid: int) -> float | None:
        """When Ray placed the trainer, or None while it waits for resources."""
        trainer = self._trainers.get(pid)
        if trainer is None:
            return 0.0
        if trainer.placed is None and _ready(trainer.where):
            try:
                trainer.placed = float(ray.get(trainer.where)["placed"])
            except RayError as exc:  # it died before its trainer started: `alive` says so
                log.warning("the Ray actor of trainer %s failed: %s", pid, exc)
                trainer.placed = time.time()
        return trainer.placed

    def poll(self, pid: int) -> int | None:
        """The trainer's exit code once it ended (and its actor is let go), else None."""
        trainer = self._trainers.get(pid)
        if trainer is None or not _ready(trainer.ended):
            return None
        try:
            code = int(ray.get(trainer.ended))
        except RayError:  # the actor died: `alive` says so
            return None
        self._let_go(pid)
        return code

    def alive(self, pid: int, run_dir: Path) -> bool:
        """Is the trainer's actor there (waiting for resources, or running it)? After a
        server restart this finds the actor by name and re-attaches to it."""
        trainer = self._find(pid, run_dir)
        if trainer is None:
            return False
        if not _ready(trainer.ended):
            return True
        try:
            ray.get(trainer.ended)
        except RayError:  # the actor died, or its node was lost
            self._trainers.pop(pid, None)
            return False
        return True  # it exited: `poll` reads the code

    def _find(self, pid: int, run_dir: Path) -> _Trainer | None:
        if pid in self._trainers:
            return self._trainers[pid]
        if pid < FIRST_ID:
            return None  # a local pid (the executor was switched): not ours
        self._connect()
        try:
            actor = ray.get_actor(_name(run_dir, pid), namespace=NAMESPACE)
        except ValueError:  # no such actor: it ended
            return None
        trainer = self._trainers[pid] = _Trainer.watch(actor)
        log.info("re-attached to trainer %s of run %s on Ray", pid, run_dir.name)
        return trainer

    def kill(self, pid: int) -> None:
        trainer = self._trainers.get(pid)
        if trainer is not None and _ready(trainer.where):
            with contextlib.suppress(RayError):  # the trainer first: no overlap with the next
                ray.get(trainer.actor.stop.remote(), timeout=CALL_S)
        self._let_go(pid)

    def _let_go(self, pid: int) -> None:
        trainer = self._trainers.pop(pid, None)
        if trainer is not None:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(trainer.actor)

    def reap(self) -> None:
        """Let go of the actors whose trainer ended (paused, finished), freeing their
        resources for the next run: one tick after the end is seen, so that `poll`
        reads the exit code of a run still active first."""
        for pid, trainer in list(self._trainers.items()):
            if trainer.ended_seen:
                self._let_go(pid)
            elif _ready(trainer.ended):
                trainer.ended_seen = True

    def release(self) -> None:
        """Let the trainers go on without us (their actors are detached)."""
        self._trainers.clear()
        if ray.is_initialized():
            ray.shutdown()


def _name(run_dir: Path, trainer_id: int) -> str:
    return f"{run_dir}#{trainer_id}"


def _ready(ref: ray.ObjectRef[Any]) -> bool:
    done, _ = ray.wait([ref], timeout=0)
    return bool(done)
