"""The real trainer on a tiny model: it learns, pauses and resumes exactly, and
writes a model that plain Transformers loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lastedocation.training.events import effective_steps, read_events, write_control
from lastedocation.training.model_source import ModelSourceError, download_from_hub
from lastedocation.training.recipe import train_run
from tests.training.conftest import RunFactory


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return list(read_events(run_dir / "events.jsonl"))


def _resume_in_new_process(run_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lastedocation.training", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_scratch_model_learns_and_loads_with_plain_transformers(make_run: RunFactory) -> None:
    run_dir = make_run(
        "learn",
        data={"max_rows": 600},
        training={"max_steps": 80, "eval_every": 20, "batch_size": 8, "seq_len": 192},
    )
    outcome = train_run(run_dir)
    assert (outcome.state, outcome.step, outcome.exit_code) == ("completed", 80, 0)
    evals = effective_steps(_events(run_dir), "eval")
    first, last = evals[0]["val_loss"], evals[-1]["val_loss"]
    assert evals[0]["step"] == 0 and last < first - 1.0, (first, last)  # measured ~6.4 -> ~5.3
    preflight = next(e for e in _events(run_dir) if e["type"] == "preflight")
    assert preflight["examples"] > 400 and preflight["truncated"] >= 0
    metrics = effective_steps(_events(run_dir))
    assert [m["step"] for m in metrics] == list(range(1, 81))
    assert all(m["tokens_per_s"] > 0 and m["rss_mb"] > 0 for m in metrics)

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(run_dir / "base").chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "سلام"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", [5, 13])
def test_pause_and_resume_in_a_new_process_is_exact(make_run: RunFactory, pause_at: int) -> None:
    # gpt2 has dropout, so this also checks that the RNG state is restored
    settings: dict[str, Any] = {
        "data": {"max_rows": 120},
        "model": {"preset": "gpt2-tiny"},
        "training": {"max_steps": 20, "grad_accum": 2, "eval_every": 7, "batch_size": 3},
    }
    whole = make_run("whole", **settings)
    assert train_run(whole).state == "completed"

    paused = make_run("paused", **settings)

    def pause(event: dict[str, Any]) -> None:
        if event["type"] == "metrics" and event["step"] == pause_at:
            write_control(paused, "pause", "req-1")

    outcome = train_run(paused, observer=pause)
    assert (outcome.state, outcome.step, outcome.exit_code) == ("paused", pause_at, 3)
    _resume_in_new_process(paused)

    expected, got = _events(whole), _events(paused)
    per_epoch = next(e for e in expected if e["type"] == "metrics" and e["step"] == 1)
    assert 0 < per_epoch["epoch"] < 1  # several steps per epoch: 5 is mid-epoch
    for kind, fields in (("metrics", ("loss", "grad_norm", "lr")), ("eval", ("val_loss",))):
        want = [[e["step"], *(e[f] for f in fields)] for e in effective_steps(expected, kind)]
        have = [[e["step"], *(e[f] for f in fields)] for e in effective_steps(got, kind)]
        assert have == want  # bitwise: floats compared exactly
    acks = [e for e in got if e["type"] == "control"]
    assert [(a["action"], a["request_id"], a["step"]) for a in acks] == [
        ("pause", "req-1", pause_at)
    ]
    states = [e["state"] for e in got if e["type"] == "state"]
    assert states == ["starting", "running", "paused", "starting", "running", "completed"]
    a = AutoModelForCausalLM.from_pretrained(whole / "model").state_dict()
    b = AutoModelForCausalLM.from_pretrained(paused / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_stop_and_checkpoint_now(make_run: RunFactory) -> None:
    run_dir = make_run("stop", training={"max_steps": 30, "eval_every": 100})

    def control(event: dict[str, Any]) -> None:
        if event["type"] == "metrics" and event["step"] == 3:
            write_control(run_dir, "checkpoint", "c-1")
        if event["type"] == "metrics" and event["step"] == 6:
            write_control(run_dir, "stop", "s-1")

    outcome = train_run(run_dir, observer=control)
    assert (outcome.state, outcome.step) == ("stopped", 6)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000006"]
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_bad_data_fails_with_a_named_row(make_run: RunFactory, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": "a"}\n', encoding="utf-8")
    run_dir = make_run("bad", data={"train": str(bad), "max_rows": None})
    outcome = train_run(run_dir)
    assert outcome.state == "failed" and outcome.exit_code == 1
    failure = [e for e in _events(run_dir) if e["type"] == "state"][-1]
    assert "row 2" in failure["message"] and "`answer` is missing" in failure["message"]


def test_hub_download_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match=r"model\.source: local"):
        download_from_hub("someone/persian-model", None, None)


def test_trainer_imports_no_web_or_database_code() -> None:
    code = (
        "import sys, lastedocation.training.recipe, lastedocation.training.__main__,"
        " lastedocation.training.whisper;"
        "bad = {'fastapi', 'sqlalchemy', 'starlette', 'uvicorn'} & set(sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_restart_before_the_first_checkpoint_voids_the_earlier_steps(
    make_run: RunFactory,
) -> None:
    """A trainer that dies before its first checkpoint starts again at step 0: the
    steps the dead one logged must not count twice."""
    run_dir = make_run("early", training={"max_steps": 6, "save_every": 100, "eval_every": 100})

    def crash(event: dict[str, Any]) -> None:
        if event["type"] == "metrics" and event["step"] == 3:
            raise RuntimeError("simulated crash")

    assert train_run(run_dir, observer=crash).state == "failed"
    assert not list((run_dir / "checkpoints").glob("step-*"))
    assert train_run(run_dir).state == "completed"
    events = _events(run_dir)
    assert [m["step"] for m in effective_steps(events)] == [1, 2, 3, 4, 5, 6]
    assert any(e["type"] == "rewind" and e["to_step"] == 0 for e in events)
