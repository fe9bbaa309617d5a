"""A model archive is extracted and registered off the event loop: while a real server
imports a 500 MB archive and a 100 MB dataset at once, /healthz keeps answering fast
and a run's live event stream keeps flowing.

/healthz is asked every 20 ms on a fixed schedule, not after the previous answer, so a
stalled loop shows as many late answers rather than one (each latency counts from the
moment the request was due)."""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.runs.models import Run
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer

pytestmark = pytest.mark.slow

MB = 2**20
WEIGHTS = 500 * MB
DATASET = 100_000_000  # bytes: under the default dataset limit of 100 MiB
EVERY = 0.02


@dataclass
class Studio:
    url: str
    data_dir: Path
    run_id: int
    headers: dict[str, str] = field(default_factory=dict)


def _running_run(settings: Settings, owner: int) -> int:
    """A run whose trainer is this test: it writes the run folder's events.jsonl (the
    trainer's whole contract with the server), and has no process to watch."""
    engine = make_engine(settings)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            run = Run(name="live", state="running", config={}, folder="runs/live", owner_id=owner)
            session.add(run)
            session.commit()
            (settings.data_dir / run.folder).mkdir(parents=True)
            return run.id
    finally:
        engine.dispose()


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    data_dir = tmp_path / "studio"
    settings = Settings(data_dir=data_dir, import_sample_dataset=False)
    run_id = _running_run(settings, add_account(settings, ADMIN, role="admin"))
    server = StudioServer(data_dir)
    # latencies of the server as it runs for users: without the coverage tracer that the
    # test run adds to its subprocesses (it doubles the import's CPU time under the GIL)
    for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
        server.env.pop(name, None)
    server.start()
    try:
        with httpx.Client(base_url=server.url) as client:
            sign_in(client)
            yield Studio(server.url, data_dir, run_id, dict(client.headers))
    finally:
        server.stop()
        # the archive, the dataset and their imports (a gigabyte): not kept for later runs
        shutil.rmtree(tmp_path, ignore_errors=True)


class _Weights:
    """A safetensors file of one U8 tensor of `size` bytes, read like a file; the data
    repeats a random MiB, which gzip (with its 32 KiB window) could not shrink either."""

    def __init__(self, size: int) -> None:
        entry = {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}
        header = json.dumps({"w": entry}).encode()
        self.head = struct.pack("<Q", len(header)) + header
        self.length = len(self.head) + size
        self.left = size
        self.block = os.urandom(MB)
        self.at = 0

    def read(self, n: int) -> bytes:
        out = bytearray(self.head[:n])
        self.head = self.head[len(out) :]
        while len(out) < n and self.left:
            take = min(n - len(out), self.left, MB - self.at)
            out += self.block[self.at : self.at + take]
            self.at, self.left = (self.at + take) % MB, self.left - take
        return bytes(out)


def _model_archive(path: Path) -> Path:
    weights = _Weights(WEIGHTS)
    with tarfile.open(path, "w") as tf:
        config = b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'
        info = tarfile.TarInfo("persian-big/config.json")
        info.size = len(config)
        tf.addfile(info, io.BytesIO(config))
        info = tarfile.TarInfo("persian-big/model.safetensors")
        info.size = weights.length
        tf.addfile(info, weights)  # type: ignore[arg-type]
    return path


def _dataset(path: Path) -> Path:
    """Persian question-and-answer rows, DATASET bytes in all."""
    with path.open("wb") as f:
        written, i = 0, 0
        while written < DATASET - 200:
            i += 1
            row = {
                "question": f"پرسش {i}: پایتخت استان شماره {i % 31} ایران کدام شهر است؟",
                "answer": f"پاسخ {i}: مرکز این استان شهری بزرگ و تاریخی است.",
            }
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
            written += f.write(line)
    return path


class HealthProbe:
    """GET /healthz every 20 ms on a fixed schedule; `latencies` from when each was due."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, limits=httpx.Limits(max_connections=32))
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.futures: list[Future[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ask(self, due: float) -> float:
        assert self.client.get("/healthz", timeout=30).status_code == 200
        return time.monotonic() - due

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.futures.append(self.pool.submit(self._ask, due))
            due += EVERY
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        latencies = sorted(f.result() for f in self.futures)
        self.pool.shutdown()
        self.client.close()
        return latencies


class LiveRun:
    """Plays the run's trainer (an event every 100 ms) and reads its SSE stream;
    `arrivals` are the times events came through."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.events = studio.data_dir / "runs" / "live" / "events.jsonl"
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._train, daemon=True),
            threading.Thread(target=self._listen, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _train(self) -> None:
        seq, stopping = 0, False
        with self.events.open("a", encoding="utf-8") as f:
            while not stopping:  # the last event wakes the listener up to see the stop
                stopping = self._stop.wait(0.1)
                seq += 1
                event = {"seq": seq, "type": "metrics", "step": seq, "total_steps": 10**6}
                f.write(json.dumps(event) + "\n")
                f.flush()

    def _listen(self) -> None:
        url = f"{self.studio.url}/api/v1/runs/{self.studio.run_id}/events"
        with (
            httpx.Client(headers=self.studio.headers, timeout=30) as client,
            client.stream("GET", url) as stream,
        ):
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    self.arrivals.append(time.monotonic())
                if self._stop.is_set():
                    return

    def stop(self) -> list[float]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.arrivals


def _percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def test_a_big_archive_and_dataset_import_while_the_server_stays_responsive(
    studio: Studio, tmp_path: Path
) -> None:
    archive = _model_archive(tmp_path / "persian-big.tar")
    rows = _dataset(tmp_path / "qa.jsonl")
    live = LiveRun(studio)
    time.sleep(1.0)  # the stream is open and flowing before the imports start
    results: dict[str, Any] = {}

    def upload(path: str, file: Path) -> None:
        """curl sends the file: in this process, 600 MB of multipart encoding would hold
        the GIL that the probe's threads need, and their lateness would blame the server."""
        answer = tmp_path / f"answer-{file.stem}.json"
        auth = f"Authorization: {studio.headers['authorization']}"
        command = ["curl", "-sS", "-o", str(answer), "-w", "%{http_code}", "-H", auth]
        done = subprocess.run(
            [*command, "-F", f"file=@{file}", f"{studio.url}{path}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        results[path] = (int(done.stdout), answer.read_text(encoding="utf-8"))

    # a full collection in this (client) process would pause the probe, and its latencies
    # would blame the server: keep the objects made so far out of the collector's way
    gc.freeze()
    probe = HealthProbe(studio.url)
    started = time.monotonic()
    dataset = threading.Thread(target=upload, args=("/api/v1/datasets", rows))
    dataset.start()
    upload("/api/v1/models/import/archive", archive)
    dataset.join()
    took = time.monotonic() - started
    latencies = probe.stop()
    gc.unfreeze()
    arrivals = [t for t in live.stop() if started <= t <= started + took]

    (model_status, model), (data_status, imported) = (
        results["/api/v1/models/import/archive"],
        results["/api/v1/datasets"],
    )
    assert model_status == 201, model
    assert json.loads(model)["summary"]["parameters"] == WEIGHTS
    assert data_status == 201, imported
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    gaps = [b - a for a, b in zip([started, *arrivals], [*arrivals, started + took], strict=True)]
    print(
        f"\nimports took {took:.1f} s; /healthz p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms over {len(latencies)} requests; "
        f"{len(arrivals)} live events, longest gap {max(gaps):.2f} s"
    )
    assert p99 < 0.2, f"/healthz p99 was {p99 * 1000:.0f} ms during the imports"
    assert max(gaps) < 1.0, f"the live stream stalled for {max(gaps):.1f} s"
