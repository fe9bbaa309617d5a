"""`lastedocation train`: headless training; Ctrl-C pauses, --resume finishes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lastedocation.training.events import effective_steps, read_events
from tests.conftest import PERCQA


@pytest.mark.slow
def test_ctrl_c_pauses_and_resume_completes(tmp_path: Path) -> None:
    config = {
        "name": "cli",
        "data": {"train": str(PERCQA), "max_rows": 150, "split_key": "qid"},
        "model": {"vocab_size": 500},
        "training": {"seq_len": 96, "batch_size": 4, "max_steps": 400, "threads": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "lastedocation.cli",
        "train",
        str(path),
        "--run-dir",
        str(run_dir),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    events = run_dir / "events.jsonl"
    deadline = time.monotonic() + 120
    while not effective_steps(list(read_events(events))) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 3, output
    assert "resume with --resume" in output
    paused_at = [e for e in read_events(events) if e["type"] == "state"][-1]["step"]
    assert 0 < paused_at < 400

    (run_dir / "config.yaml").write_text(
        (run_dir / "config.yaml")
        .read_text()
        .replace("max_steps: 400", f"max_steps: {paused_at + 5}")
    )
    done = subprocess.run(
        [sys.executable, "-m", "lastedocation.cli", "train", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed at step" in done.stdout
    steps = [m["step"] for m in effective_steps(list(read_events(events)))]
    assert steps == list(range(1, paused_at + 6))


def test_config_problems_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: nowhere.jsonl\ntraining:\n  lr: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "lastedocation.cli", "train", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "training.lr" in done.stderr
