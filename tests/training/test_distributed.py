"""Several processes under torchrun (gloo on the CPU) train exactly like one process
that accumulates the same micro-batches."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from lastedocation.runs.executor import LocalExecutor
from lastedocation.training.events import effective_steps
from lastedocation.training.recipe import train_run
from tests.training.conftest import RunFactory


def _events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _wait(executor: LocalExecutor, pid: int, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = executor.poll(pid)
        if code is not None:
            return code
        time.sleep(0.2)
    executor.kill(pid)
    raise AssertionError("torchrun did not finish")


@pytest.mark.slow
def test_two_processes_match_one_process_accumulating_the_same_batches(
    make_run: RunFactory,
) -> None:
    training = {"max_steps": 8, "eval_every": 4, "batch_size": 2, "packing": False}
    single = make_run("single", training={**training, "grad_accum": 2})
    double = make_run("double", training={**training, "devices": 2})

    assert train_run(single).state == "completed"
    executor = LocalExecutor()
    pid = executor.start(double, devices=2)
    code = _wait(executor, pid)
    log = (double / "trainer.log").read_text(encoding="utf-8", errors="replace")
    assert code == 0, log[-3000:]

    one, two = _events(single), _events(double)
    assert [e["state"] for e in two if e["type"] == "state"][-1] == "completed"
    losses_one = [m["loss"] for m in effective_steps(one)]
    losses_two = [m["loss"] for m in effective_steps(two)]
    assert len(losses_two) == 8
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    evals_one = [e["val_loss"] for e in effective_steps(one, "eval")]
    evals_two = [e["val_loss"] for e in effective_steps(two, "eval")]
    assert evals_two == pytest.approx(evals_one, rel=1e-4)
    # the main process alone wrote the events, the checkpoints and the model
    assert len({e["seq"] for e in two}) == len(two)
    a = load_file(single / "model" / "model.safetensors")
    b = load_file(double / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    heartbeat = json.loads((double / "heartbeat").read_text(encoding="utf-8"))
    assert heartbeat["pid"] == pid  # torchrun's: the pid the supervisor watches
