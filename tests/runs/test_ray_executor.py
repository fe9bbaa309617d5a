"""Runs on a real Ray cluster on loopback: a head node and a worker node with resources
of their own (`ray start`, in a temporary folder, stopped by process id at the end), and
a real studio server whose executor is Ray."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from lastedocation.runs.supervisor import WAITING
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PERCQA, add_account, sign_in
from tests.runs.test_runs_api import TINY
from tests.server import StudioServer, free_port

RAY = Path(sys.executable).with_name("ray")
CONFIG: dict[str, Any] = {
    **TINY,
    "training": {**TINY["training"], "max_steps": 400, "eval_every": 50, "save_every": 50},
}


@dataclass
class Cluster:
    address: str  # the head's GCS, for a driver on a node of the cluster
    client_address: str  # Ray Client, for a driver outside it
    worker_port: int  # the worker node's node-manager port: it names that node's raylet


def _ray_start(logs: Path, name: str, node_port: int, *args: str) -> subprocess.Popen[bytes]:
    """`ray start --block`: it stays in the foreground and stops its node on SIGTERM."""
    ports = {
        "--node-manager-port": node_port,
        "--object-manager-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    command = [str(RAY), "start", "--block", *args, *(f"{k}={v}" for k, v in ports.items())]
    with (logs / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )


def _until(
    check: Callable[[], Any], what: str, timeout: float = 90, log: Path | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    output = f"; its log:\n{log.read_text()[-3000:]}" if log is not None else ""
    raise AssertionError(f"gave up waiting for {what}{output}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Ray's sockets live under its temp folder, and a socket path has at most 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="ray-"))
    logs = temp / "logs"
    logs.mkdir()
    common = [
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp}",
        "--object-store-memory=80000000",
        "--disable-usage-stats",
    ]
    port, client_port = free_port(), free_port()
    nodes = [
        _ray_start(
            logs,
            "head",
            free_port(),
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={client_port}",
            "--include-dashboard=false",
            "--num-cpus=1",
            '--resources={"head": 1}',
            *common,
        )
    ]
    try:
        started = "Ray runtime started"
        head = logs / "head.log"
        _until(lambda: started in head.read_text(), "the head node", log=head)
        worker_port = free_port()
        nodes.append(
            _ray_start(
                logs,
                "worker",
                worker_port,
                f"--address=127.0.0.1:{port}",
                "--num-cpus=2",
                '--resources={"worker": 1}',
                *common,
            )
        )
        worker = logs / "worker.log"
        _until(lambda: started in worker.read_text(), "the worker node", log=worker)
        yield Cluster(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", worker_port)
    finally:
        for node in reversed(nodes):  # our own nodes, by process id: never `ray stop`
            node.terminate()
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _studio(tmp_path: Path, address: str) -> Iterator[StudioServer]:
    """A studio server whose trainers run on the cluster at `address`."""
    add_account(Settings(data_dir=tmp_path / "studio"), ADMIN, role="admin")
    server = StudioServer(
        tmp_path / "studio",
        tmp_path / "server.log",
        LASTEDOCATION_EXECUTOR="ray",
        LASTEDOCATION_RAY_ADDRESS=address,
        LASTEDOCATION_RAY_DEVICE="cpu",  # each device is a CPU process on this cluster
        LASTEDOCATION_RAY_RESOURCES='{"worker": 1}',  # the worker has one: one run at a time
        LASTEDOCATION_HEARTBEAT_TIMEOUT_S="120",  # the test freezes a trainer for a while
    ).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _client(server: StudioServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        sign_in(client)
        yield client


def _run(client: httpx.Client, run_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/runs/{run_id}").json())


def _wait(client: httpx.Client, run_id: int, until: Callable[[dict[str, Any]], bool]) -> Any:
    return _until(lambda: (run := _run(client, run_id)) and until(run) and run, f"run {run_id}")


def _trainer(folder: Path) -> psutil.Process | None:
    """The trainer process of the run in `folder` (Ray started it: its pid is not the run's)."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "lastedocation.training" in command and str(folder) in command:
            return process
    return None


def _node_port(trainer: psutil.Process) -> int:
    """The node-manager port of the raylet whose worker started `trainer`."""
    for parent in trainer.parents():
        if parent.name() == "raylet":
            flag = next(a for a in parent.cmdline() if a.startswith("--node_manager_port="))
            return int(flag.split("=")[1])
    raise AssertionError("the trainer was not started by a Ray node")


def _actors(cluster: Cluster) -> list[dict[str, str]]:
    """The named actors alive on the cluster, asked by a driver of its own."""
    code = (
        f"import json, ray; ray.init(address={cluster.address!r}, log_to_driver=False); "
        "print(json.dumps(ray.util.list_named_actors(all_namespaces=True)))"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    return list(json.loads(answer.stdout.strip().splitlines()[-1]))


def _steps(client: httpx.Client, run_id: int) -> list[int]:
    metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
    return [m["step"] for m in metrics["metrics"]]


def _create(client: httpx.Client, dataset: int, config: dict[str, Any] = CONFIG) -> int:
    created = client.post("/api/v1/runs", json={"dataset_id": dataset, **config})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "queued"
    return int(created.json()["id"])


def _dataset(client: httpx.Client) -> int:
    data = b"\n".join(PERCQA.read_bytes().splitlines()[:150]) + b"\n"
    uploaded = client.post("/api/v1/datasets", files={"file": ("p.jsonl", data)})
    assert uploaded.status_code == 201, uploaded.text
    return int(uploaded.json()["id"])


@pytest.fixture
def studio(tmp_path: Path, cluster: Cluster) -> Iterator[StudioServer]:
    with _studio(tmp_path, cluster.address) as server:
        yield server


@pytest.mark.slow
def test_runs_train_on_the_cluster_and_wait_for_its_resources(
    studio: StudioServer, cluster: Cluster
) -> None:
    with _client(studio) as client:
        dataset = _dataset(client)
        first = _create(client, dataset)
        folder = studio.data_dir / "runs" / f"{first:06d}"
        _wait(client, first, lambda r: r["state"] == "running")
        trainer = _until(lambda: _trainer(folder), "the trainer process")
        trainer.suspend()  # (the tiny run is quick: frozen, it waits for the test's steps)
        assert _node_port(trainer) == cluster.worker_port  # placed on the worker node
        assert "ray: on node" in (folder / "trainer.log").read_text()

        # pause and resume: through the control file; the resumed trainer is a new actor
        assert client.post(f"/api/v1/runs/{first}/pause").status_code == 202
        trainer.resume()
        _wait(client, first, lambda r: r["state"] == "paused")
        assert client.post(f"/api/v1/runs/{first}/resume").status_code == 202
        _wait(client, first, lambda r: r["state"] == "running")

        # the trainer dies: interrupted, and resumed from its last checkpoint
        _until(lambda: _trainer(folder), "the resumed trainer").kill()
        interrupted = _wait(client, first, lambda r: r["state"] == "interrupted")
        assert "code -9" in interrupted["message"], interrupted
        assert client.post(f"/api/v1/runs/{first}/resume").status_code == 202
        _wait(client, first, lambda r: r["state"] == "running")
        # frozen (alive, silent) while the rest happens: it holds the worker meanwhile
        trainer = _until(lambda: _trainer(folder), "the trainer")
        trainer.suspend()
        assert _run(client, first)["step"] < CONFIG["training"]["max_steps"]

        # a second run waits for the worker, in the cluster's queue
        second = _create(client, dataset)
        waiting = _wait(client, second, lambda r: r["message"] == WAITING)
        assert waiting["state"] == "starting"

    studio.kill()  # the server dies: the trainer lives on, and the next server re-attaches
    studio.start()
    with _client(studio) as client:
        assert _run(client, first)["state"] == "running"
        assert _run(client, second)["state"] == "starting"
        assert not (studio.data_dir / "runs" / f"{second:06d}" / "heartbeat").exists()
        # a run waiting for resources has no trainer to ask: it pauses at once
        assert client.post(f"/api/v1/runs/{second}/pause").status_code == 202
        _wait(client, second, lambda r: r["state"] == "paused")

        trainer.resume()
        done = _wait(client, first, lambda r: r["state"] not in ("running", "starting"))
        assert done["state"] == "completed", done
        assert _steps(client, first) == list(range(1, CONFIG["training"]["max_steps"] + 1))
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        states = [e["state"] for e in events if e["type"] == "state"]
        assert states.count("completed") == 1 and states.count("paused") == 1

        # the worker is free again: the second run goes there
        assert client.post(f"/api/v1/runs/{second}/resume").status_code == 202
        _wait(client, second, lambda r: r["state"] == "running")
        other = _until(lambda: _trainer(studio.data_dir / "runs" / f"{second:06d}"), "trainer")
        assert _node_port(other) == cluster.worker_port
        assert client.post(f"/api/v1/runs/{second}/stop").status_code == 202
        _wait(client, second, lambda r: r["state"] == "stopped")
    # every actor was let go: the cluster holds nothing for the studio any more
    _until(lambda: _actors(cluster) == [], "the cluster to let go of the actors", timeout=30)


@pytest.mark.slow
def test_a_studio_outside_the_cluster_trains_through_ray_client(
    tmp_path: Path, cluster: Cluster
) -> None:
    with _studio(tmp_path, cluster.client_address) as studio, _client(studio) as client:
        run = _create(client, _dataset(client), TINY)
        done = _wait(client, run, lambda r: r["state"] not in ("queued", "starting", "running"))
        assert done["state"] == "completed", done
        assert _steps(client, run) == list(range(1, TINY["training"]["max_steps"] + 1))
        log = (studio.data_dir / "runs" / f"{run:06d}" / "trainer.log").read_text()
        assert "ray: on node" in log
    _until(lambda: _actors(cluster) == [], "the cluster to let go of the actor", timeout=30)


@pytest.mark.slow
def test_the_executor_on_its_own(tmp_path: Path, cluster: Cluster) -> None:
    """The executor's answers, in this process: a trainer that fails at once (its config
    has no data) and one that can never be placed (it asks for a resource no node has)."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # as make_executor does
    from lastedocation.runs.ray_executor import FIRST_ID, RayExecutor

    failing, waiting = tmp_path / "000001", tmp_path / "000002"
    for folder in (failing, waiting):
        folder.mkdir()
        (folder / "config.yaml").write_text("training:\n  threads: 1\n")
    executor = RayExecutor(address=cluster.address, device="cpu", resources={"worker": 1})
    try:
        pid = executor.start(failing)
        assert pid >= FIRST_ID  # never a local process's id
        code = _until(lambda: executor.poll(pid), "the trainer to fail")
        assert code == 1 and "Field required" in (failing / "events.jsonl").read_text()
        beat = json.loads((failing / "heartbeat").read_text())
        assert beat["pid"] == pid  # the trainer beats with the id the studio knows it by
        # its actor is let go once the code was read (ray.kill answers before it is done)
        _until(lambda: not executor.alive(pid, failing), "the actor to be let go")

        nowhere = RayExecutor(address=cluster.address, device="cpu", resources={"nowhere": 1})
        pid = nowhere.start(waiting)
        time.sleep(1)
        assert nowhere.placed_at(pid) is None and nowhere.alive(pid, waiting)
        later = RayExecutor(address=cluster.address, device="cpu")  # a restarted server
        assert later.alive(pid, waiting) and later.placed_at(pid) is None  # found by name
        later.kill(pid)
        _until(lambda: not RayExecutor(address=cluster.address).alive(pid, waiting), "the kill")
        assert not executor.alive(FIRST_ID - 1, waiting)  # a local pid is not Ray's
    finally:
        executor.release()
