"""Tiny real training runs for tests: a scratch llama on a PerCQA slice, in seconds.

    run_dir = write_run(tmp / "run", data={"train": str(PERCQA), "max_rows": 240})
    run_dir = train_tiny(tmp / "run", data=..., training={"max_steps": 20})

`write_run` only writes the config (for tests that start the trainer themselves);
`train_tiny` also trains and checks the run completed. Sections given are merged
into the defaults key by key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lastedocation.training.recipe import train_run
from tests.conftest import PERCQA

DEFAULTS: dict[str, Any] = {
    "model": {"source": "scratch", "preset": "llama-tiny", "vocab_size": 600},
    "training": {
        "seq_len": 128,
        "batch_size": 4,
        "max_steps": 12,
        "lr": 0.003,
        "eval_every": 6,
        "save_every": 100,
        "threads": 1,
    },
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def write_run(run_dir: Path, **sections: Any) -> Path:
    run_dir.mkdir(parents=True)
    config = merge({"name": run_dir.name, **DEFAULTS}, sections)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return run_dir


def train_tiny(run_dir: Path, **sections: Any) -> Path:
    write_run(run_dir, **sections)
    outcome = train_run(run_dir)
    last = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()[-1]
    assert outcome.state == "completed", last
    return run_dir


def short_answers(
    path: Path, *, rows: int = 300, max_chars: int = 19, subject_as_question: bool = False
) -> Path:
    """PerCQA rows whose answer has at most `max_chars` characters (a model trained on
    them learns to end its turn quickly); optionally the thread's first line as the
    question."""
    kept = []
    with PERCQA.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if len(row["answer"]) > max_chars:
                continue
            if subject_as_question:
                row = {**row, "question": row["question"].split("\n")[0]}
            kept.append(json.dumps(row, ensure_ascii=False) + "\n")
            if len(kept) == rows:
                break
    path.write_text("".join(kept), encoding="utf-8")
    return path
