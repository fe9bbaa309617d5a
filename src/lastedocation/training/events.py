"""The run's event log, heartbeat and control file.

`events.jsonl` is append-only, one JSON object a line, with a `seq` that only
grows (across restarts too). Types:

    state       {"state": starting|running|paused|stopped|completed|failed, ...}
    log         {"level", "message"}
    preflight   examples, tokens, truncation counts
    metrics     a training step: step, loss, lr, grad_norm, tokens_per_s, ...
    eval        step, val_loss, perplexity, token_accuracy, best
    checkpoint  step, name, best
    control     an acknowledged request: action, request_id
    rewind      {"to_step": k}: the run resumed from the checkpoint at step k;
                metrics and evals after step k that came before this event are void

`effective_steps` applies rewinds, so a consumer sees each step exactly once.
The heartbeat file is rewritten every few seconds by a thread, so it keeps
beating while the main thread evaluates or saves.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HEARTBEAT_SECONDS = 2.0


class EventLog:
    """Appends events with a growing `seq`; repairs a line cut by a crash."""

    def __init__(self, path: Path, observer: Callable[[dict[str, Any]], None] | None = None):
        self.path = path
        self.observer = observer
        self.seq = _repair_and_last_seq(path)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, type_: str, *, sync: bool = False, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self.seq += 1
            event = {"seq": self.seq, "time": round(time.time(), 3), "type": type_, **fields}
            self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        if self.observer is not None:
            self.observer(event)
        return event

    def close(self) -> None:
        self._file.close()


class SilentEventLog(EventLog):
    """The event log of a process that is not the main one of a torchrun run: it
    writes nothing (the main process tells the story once)."""

    def __init__(self) -> None:
        self.seq = 0
        self.observer = None

    def emit(self, type_: str, *, sync: bool = False, **fields: Any) -> dict[str, Any]:
        return {"type": type_, **fields}

    def close(self) -> None:
        pass


def _repair_and_last_seq(path: Path) -> int:
    """The last complete event's seq; a partial last line (killed mid-write) is cut."""
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)
        last = data[:end].rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return int(json.loads(last)["seq"]) if last else 0


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield json.loads(line)


def effective_steps(events: list[dict[str, Any]], kind: str = "metrics") -> list[dict[str, Any]]:
    """Events of `kind` (metrics or eval) with rewinds applied: each step once."""
    kept: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "rewind":
            kept = [e for e in kept if e["step"] <= event["to_step"]]
        elif event["type"] == kind:
            kept.append(event)
    return kept


class Heartbeat:
    """A daemon thread that rewrites RUN_DIR/heartbeat with pid, time and step."""

    def __init__(
        self, path: Path, interval: float = HEARTBEAT_SECONDS, pid: int | None = None
    ) -> None:
        self.path = path
        self.interval = interval
        self.pid = pid if pid is not None else os.getpid()  # under torchrun: torchrun's
        given = os.environ.get("LASTEDOCATION_TRAINER_ID")
        if given:  # a cluster executor knows the trainer by its id, not a pid on some node
            self.pid = int(given)
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        payload = {"pid": self.pid, "time": time.time(), "step": self.step}
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()


class Control:
    """Reads RUN_DIR/control ({"action": pause|stop|checkpoint, "request_id": ...}).

    A request is acted on once: acknowledged ids are remembered, including
    those acknowledged by an earlier process of the same run (from the events).
    """

    ACTIONS = ("pause", "stop", "checkpoint")

    def __init__(self, path: Path, events_path: Path) -> None:
        self.path = path
        self.handled = {e["request_id"] for e in read_events(events_path) if e["type"] == "control"}
        self._mtime = 0.0

    def poll(self) -> dict[str, str] | None:
        """A new request, or None. Cheap: reads the file only when it changed."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            request = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # being written; read again at the next step
        action, request_id = request.get("action"), str(request.get("request_id", ""))
        if action not in self.ACTIONS or not request_id or request_id in self.handled:
            return None
        self.handled.add(request_id)
        return {"action": action, "request_id": request_id}


def write_control(run_dir: Path, action: str, request_id: str) -> None:
    """What the server (or a script) calls to ask a running trainer for something."""
    tmp = run_dir / "control.tmp"
    tmp.write_text(json.dumps({"action": action, "request_id": request_id}), encoding="utf-8")
    os.replace(tmp, run_dir / "control")
