"""SIGKILL the trainer at seeded random moments, some of them while a checkpoint
is being written: every checkpoint left behind verifies, no partial folder
survives a restart, and the run ends with every step exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lastedocation.training import checkpoint as ckpt
from lastedocation.training.events import effective_steps, read_events
from tests.training.conftest import RunFactory

KILLS = 10
STEPS = 150


def _start(run_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lastedocation.training", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _last_step(run_dir: Path) -> int:
    metrics = effective_steps(list(read_events(run_dir / "events.jsonl")))
    return metrics[-1]["step"] if metrics else 0


def _wait(process: subprocess.Popen[bytes], until: object, timeout: float = 120) -> bool:
    """Poll `until()` every half millisecond; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if until():  # type: ignore[operator]
            return True
        time.sleep(0.0005)
    raise AssertionError("the trainer made no progress")


@pytest.mark.slow
def test_sigkill_anywhere_loses_nothing(make_run: RunFactory) -> None:
    run_dir = make_run(
        "chaos",
        data={"max_rows": 200},
        training={"max_steps": STEPS, "save_every": 3, "eval_every": 25, "keep_last": 2},
    )
    root = run_dir / "checkpoints"
    rng = random.Random(20261130)
    kills = during_save = 0
    while kills < KILLS:
        process = _start(run_dir)
        if kills % 2:  # kill the moment a checkpoint folder is being written
            hit = _wait(process, lambda: any(p.suffix == ".tmp" for p in root.glob("*.tmp")))
            during_save += hit
        else:  # kill a few steps in, at a random moment of a step
            target = _last_step(run_dir) + rng.randint(1, 12)
            hit = _wait(process, lambda t=target: _last_step(run_dir) >= t)  # type: ignore[misc]
            time.sleep(rng.random() * 0.03)
        if not hit:
            break  # it finished before we struck
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        for _, folder in ckpt.list_checkpoints(root):  # whatever is there is whole
            ckpt.verify(folder)
    assert kills == KILLS and during_save >= 3, (kills, during_save)

    final = _start(run_dir)
    assert final.wait(timeout=300) == 0
    events = list(read_events(run_dir / "events.jsonl"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [m["step"] for m in effective_steps(events)] == list(range(1, STEPS + 1))
    assert events[-1]["type"] == "state" and events[-1]["state"] == "completed"
    assert not list(root.glob("*.tmp"))
    removed = [e for e in events if e["type"] == "log" and "removed partial" in e["message"]]
    assert len(removed) >= 1
    latest = ckpt.latest_valid(root)
    assert latest is not None and latest[1]["step"] == STEPS


@pytest.mark.slow
def test_sigterm_pauses_with_a_checkpoint(make_run: RunFactory) -> None:
    run_dir = make_run("term", training={"max_steps": 5000, "eval_every": 1000})
    process = _start(run_dir)
    assert _wait(process, lambda: _last_step(run_dir) >= 3)
    beat = json.loads((run_dir / "heartbeat").read_text())
    assert beat["pid"] == process.pid and time.time() - beat["time"] < 10
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3
    events = list(read_events(run_dir / "events.jsonl"))
    assert events[-1]["type"] == "state" and events[-1]["state"] == "paused"
    ack = next(e for e in events if e["type"] == "control")
    assert ack["request_id"] == "signal-SIGTERM"
    latest = ckpt.latest_valid(run_dir / "checkpoints")
    assert latest is not None and latest[1]["step"] == events[-1]["step"]
