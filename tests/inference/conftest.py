from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.torch import load_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lastedocation.training.events import write_control
from lastedocation.training.recipe import train_run
from lastedocation.training.runtime import set_generation_ids
from tests.conftest import PERCQA
from tests.tiny import write_run

TRAIN_ROWS = 240


@dataclass
class TrainedRun:
    run_dir: Path
    tuned: Path  # the trained model, as the trainer wrote it
    untrained: Path  # the same model at step 0, saved the same way
    held_out: Path  # PerCQA rows of threads the run never saw (Q/A JSONL)


def _untrained_folder(run_dir: Path, dest: Path) -> Path:
    """The run's starting point as a model folder: the base/ config and tokenizer
    with the weights of the step-0 checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "base")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(run_dir / "base"))
    load_model(model, str(run_dir / "checkpoints" / "step-00000000" / "model.safetensors"))
    set_generation_ids(model, tokenizer)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


def _held_out(dest: Path, rows: int) -> Path:
    """PerCQA rows after the first TRAIN_ROWS whose thread (qid) is not among them."""
    seen: set[str] = set()
    kept: list[str] = []
    with PERCQA.open(encoding="utf-8") as f:
        for number, line in enumerate(f):
            qid = json.loads(line)["qid"]
            if number < TRAIN_ROWS:
                seen.add(qid)
            elif qid not in seen:
                kept.append(line)
                if len(kept) == rows:
                    break
    dest.write_text("".join(kept), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A tiny scratch llama trained on the first PerCQA rows (the `make_run` setup
    of tests/training, fp32 so losses are comparable), with its starting point."""
    root = tmp_path_factory.mktemp("inference")
    run_dir = write_run(
        root / "run",
        data={"train": str(PERCQA), "max_rows": TRAIN_ROWS, "split_key": "qid"},
        training={"max_steps": 24, "eval_every": 12, "keep_last": 10, "precision": "fp32"},
    )
    # a checkpoint-now request is answered at the first step boundary: step 0
    write_control(run_dir, "checkpoint", "untrained")
    outcome = train_run(run_dir)
    assert outcome.state == "completed", (run_dir / "events.jsonl").read_text(encoding="utf-8")
    return TrainedRun(
        run_dir=run_dir,
        tuned=run_dir / "model",
        untrained=_untrained_folder(run_dir, root / "untrained"),
        held_out=_held_out(root / "held-out.jsonl", 40),
    )
