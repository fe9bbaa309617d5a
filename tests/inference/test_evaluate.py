"""Evaluating model folders: a fine-tuned tiny model against its starting point."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lastedocation.errors import InvalidInput, NotFound
from lastedocation.inference.evaluate import (
    METRICS,
    compare,
    evaluate_folder,
    generate_answers,
    load_model,
    load_records,
    perplexity,
    split_prompt,
)
from lastedocation.training.data import read_records
from lastedocation.training.events import read_events
from tests.inference.conftest import TrainedRun


def test_fine_tuned_model_beats_its_starting_point_on_held_out_percqa(
    trained: TrainedRun,
) -> None:
    before = evaluate_folder(trained.untrained, trained.held_out, max_new_tokens=12, examples=2)
    after = evaluate_folder(trained.tuned, trained.held_out, max_new_tokens=12, examples=2)

    assert after["perplexity"] < before["perplexity"]
    # an untrained model is about as good as a uniform guess over the vocabulary
    assert before["perplexity"] > 0.5 * 600
    for result in (before, after):
        assert result["rows"] == 40
        assert result["tokens"] > 0
        assert set(METRICS) <= set(result)
        assert all(
            0.0 <= result[name] <= 1.0 for name in METRICS if name not in ("loss", "perplexity")
        )
        held_out = list(load_records(trained.held_out, max_rows=2))
        assert [e["reference"] for e in result["examples"]] == [
            r["messages"][-1]["content"] for r in held_out
        ]
        assert [e["prompt"] for e in result["examples"]] == [
            r["messages"][-2]["content"] for r in held_out
        ]
    # the same tokenizer scores the same target tokens
    assert after["tokens"] == before["tokens"]

    side_by_side = compare(before, after)
    assert side_by_side["perplexity"]["delta"] == pytest.approx(
        after["perplexity"] - before["perplexity"]
    )
    assert side_by_side["perplexity"]["better"] is True
    assert side_by_side["loss"]["better"] is True
    assert set(side_by_side) == set(METRICS)


def test_perplexity_is_the_trainers_validation_loss(trained: TrainedRun) -> None:
    """The same label mask and truncation as training: our numbers match the
    trainer's own evaluations at step 0 (the untrained model) and at the end."""
    evals = {
        e["step"]: e for e in read_events(trained.run_dir / "events.jsonl") if e["type"] == "eval"
    }
    records = list(read_records(trained.run_dir / "data" / "split" / "validation.jsonl"))
    last = max(evals)
    for folder, step in ((trained.untrained, 0), (trained.tuned, last)):
        model, tokenizer = load_model(folder)
        result = perplexity(model, tokenizer, records, seq_len=128, batch_size=3)
        assert result.tokens == evals[step]["tokens"]
        assert result.loss == pytest.approx(evals[step]["val_loss"], rel=1e-4)
        assert result.perplexity == pytest.approx(evals[step]["perplexity"], rel=1e-3)
        assert not model.training


def test_generation_stops_at_eos(trained: TrainedRun) -> None:
    model, tokenizer = load_model(trained.tuned)
    prompt = [{"role": "user", "content": "سلام، بچه‌ام شب‌ها بیدار می‌شود. چه کنم؟"}]
    free = generate_answers(model, tokenizer, [prompt], max_new_tokens=6)[0]
    assert "<|end|>" not in free
    # the greedy first token of the answer, straight from the logits
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = int(model(input_ids=ids).logits[0, -1].argmax())
    assert free != tokenizer.decode([first])  # without a stop, it says more than that
    # make that token the EOS: generation ends right after it
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
    stopped = generate_answers(model, tokenizer, [prompt], max_new_tokens=6)[0]
    assert stopped == tokenizer.decode([first]).strip()


def test_split_prompt_takes_the_turns_before_the_last_answer() -> None:
    messages = [
        {"role": "system", "content": "مودب باش"},
        {"role": "user", "content": "سلام"},
        {"role": "assistant", "content": "سلام، بفرمایید."},
        {"role": "user", "content": "کتاب کجاست؟"},
        {"role": "assistant", "content": "روی میز."},
    ]
    assert split_prompt({"row": 1, "messages": messages}) == (messages[:4], "روی میز.")
    assert split_prompt({"row": 2, "text": "متن ساده"}) is None


def test_compare_knows_which_direction_is_better() -> None:
    base = {"perplexity": 40.0, "loss": 3.7, "token_f1": 0.20, "bleu": 0.10, "rows": 5}
    tuned = {"perplexity": 25.0, "loss": 3.2, "token_f1": 0.25, "bleu": 0.05, "rows": 5}
    result = compare(base, tuned)
    assert set(result) == {"perplexity", "loss", "token_f1", "bleu"}
    assert result["perplexity"] == {"a": 40.0, "b": 25.0, "delta": -15.0, "better": True}
    assert result["token_f1"]["delta"] == pytest.approx(0.05)
    assert result["token_f1"]["better"] is True
    assert result["bleu"]["better"] is False


def test_canonical_records_and_max_rows(trained: TrainedRun) -> None:
    canonical = trained.run_dir / "data" / "split" / "validation.jsonl"
    records = load_records(canonical, max_rows=5)
    assert len(records) == 5
    assert all(split_prompt(r) is not None for r in records)


def test_clear_errors(trained: TrainedRun, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no model at"):
        evaluate_folder(tmp_path / "nothing", trained.held_out)
    with pytest.raises(NotFound, match="no evaluation data"):
        evaluate_folder(trained.tuned, tmp_path / "missing.jsonl")
    pickled = tmp_path / "pickled"
    shutil.copytree(trained.tuned, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(InvalidInput, match=r"no \.safetensors weights"):
        evaluate_folder(pickled, trained.held_out)
    with pytest.raises(InvalidInput, match="max_new_tokens"):
        evaluate_folder(trained.tuned, trained.held_out, max_new_tokens=200)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"colour": "blue"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="evaluation data cannot be used"):
        evaluate_folder(trained.tuned, garbage)
