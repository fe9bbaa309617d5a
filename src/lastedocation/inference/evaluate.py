"""Evaluate a model folder on held-out chat records: perplexity on the answers,
and quality metrics on the answers it generates.

    result = evaluate_folder(Path("runs/r1/model"), Path("held-out.jsonl"), max_rows=200)
    side_by_side = compare(evaluate_folder(base, data), evaluate_folder(tuned, data))

Perplexity is measured exactly as training measures validation loss: each
record is encoded by `training.data.encode_record` (the model's chat template,
loss on the assistant tokens only, the same truncation), and the mean
cross-entropy is taken over those target tokens. Generation is greedy, one
prompt at a time (no padding, so the answer does not depend on its batch),
and stops at the tokenizer's EOS or after `max_new_tokens`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lastedocation.errors import InvalidInput, NotFound
from lastedocation.inference import metrics
from lastedocation.training.config import DataConfig
from lastedocation.training.data import (
    IGNORE,
    DataError,
    Example,
    collate_padded,
    encode_record,
    prepare_records,
    read_records,
)
from lastedocation.training.model_source import ModelSourceError, load_pretrained

Messages = list[dict[str, str]]
# metric -> True when a lower value is better
METRICS = {
    "loss": True,
    "perplexity": True,
    "exact_match": False,
    "token_f1": False,
    "chrf": False,
    "bleu": False,
    "rouge1": False,
    "rouge2": False,
    "rougeL": False,
}


@dataclass
class Perplexity:
    loss: float  # mean cross-entropy per target token, in nats
    perplexity: float
    tokens: int  # target (assistant) tokens scored


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Iterable[dict[str, Any]],
    *,
    seq_len: int,
    batch_size: int = 8,
) -> Perplexity:
    """Mean token-level NLL over the assistant tokens of `records` (the training mask)."""
    examples: list[Example] = []
    for record in records:
        example, _ = encode_record(record, tokenizer, seq_len)
        if any(label != IGNORE for label in example.labels):
            examples.append(example)
    if not examples:
        raise InvalidInput("no record has an assistant answer to score; give chat records")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # note: similar lengths in one batch waste less compute on padding
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    device = _device(model)
    was_training = model.training
    model.train(False)
    loss_sum, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate_padded(examples, order[start : start + batch_size], pad)
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits.float()
        targets = F.pad(batch.labels, (0, 1), value=IGNORE)[:, 1:].to(device)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        loss_sum += float(loss)
        count += batch.target_tokens
    model.train(was_training)
    mean = loss_sum / count
    return Perplexity(mean, math.exp(min(mean, 50)), count)


def split_prompt(record: dict[str, Any]) -> tuple[Messages, str] | None:
    """The messages before the last assistant turn, and that turn's text (the
    reference); None for a record without an assistant turn (plain text)."""
    messages: Messages = record.get("messages", [])
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i], messages[i]["content"]
    return None


def _fit(ids: list[int], room: int) -> list[int]:
    """Keep the beginning and the end of a prompt that is too long (as training does)."""
    if len(ids) <= room:
        return ids
    head = room // 2
    return ids[:head] + ids[len(ids) - (room - head) :]


@torch.inference_mode()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int = 64,
    max_prompt_tokens: int | None = None,
) -> list[str]:
    """Greedy answers, one per prompt, ending at EOS or after `max_new_tokens`."""
    if tokenizer.eos_token_id is None:
        raise InvalidInput("the tokenizer has no EOS token, so answers would never end")
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    )
    device = _device(model)
    was_training = model.training
    model.train(False)
    answers = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_tokens is not None:
            ids = _fit(ids, max_prompt_tokens)
        input_ids = torch.tensor([ids], device=device)
        output = model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
        )
        new = output[0, input_ids.shape[1] :].tolist()
        answers.append(str(tokenizer.decode(new, skip_special_tokens=True)).strip())
    model.train(was_training)
    return answers


def score(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Every answer metric: exact match and token F1 (means), chrF, BLEU, ROUGE."""
    chrf = metrics.chrf(preds, refs)  # first: it checks there is one prediction per reference
    count = max(len(refs), 1)
    return {
        "exact_match": sum(map(metrics.exact_match, preds, refs)) / count,
        "token_f1": sum(map(metrics.token_f1, preds, refs)) / count,
        "chrf": chrf,
        "bleu": metrics.bleu(preds, refs),
    } | metrics.rouge(preds, refs)


def load_records(path: Path, max_rows: int | None = None) -> list[dict[str, Any]]:
    """Canonical records from any file the studio imports (or from its records)."""
    if not path.is_file():
        raise NotFound(f"no evaluation data at {path}; give a JSONL, JSON or CSV file")
    with tempfile.TemporaryDirectory(prefix="lastedocation-eval-") as work:
        try:
            records_path, _ = prepare_records(
                DataConfig(train=path, validation_fraction=0, max_rows=max_rows), Path(work)
            )
        except DataError as exc:
            raise InvalidInput(f"the evaluation data cannot be used: {exc}") from None
        return list(read_records(records_path))


def load_model(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model folder in Hugging Face format (safetensors weights only), on the
    GPU when there is one."""
    if not (folder / "config.json").is_file():
        raise NotFound(f"no model at {folder}: a Hugging Face model folder has a config.json")
    try:
        model, tokenizer = load_pretrained(folder)
    except ModelSourceError as exc:
        raise InvalidInput(str(exc)) from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)  # type: ignore[arg-type]
    return model, tokenizer


def evaluate_folder(
    folder: Path,
    records_path: Path,
    *,
    max_rows: int | None = None,
    max_new_tokens: int = 64,
    seq_len: int | None = None,
    batch_size: int = 8,
    examples: int = 3,
) -> dict[str, Any]:
    """Perplexity and answer metrics of the model in `folder` on `records_path`.

    `seq_len` (default: the model's context length, at most 2048) bounds each
    record for perplexity and each prompt plus answer for generation.
    """
    if max_new_tokens < 1:
        raise InvalidInput("max_new_tokens must be at least 1")
    model, tokenizer = load_model(folder)
    records = load_records(records_path, max_rows)
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    seq_len = seq_len or min(int(context), 2048)
    if seq_len <= max_new_tokens:
        raise InvalidInput(f"seq_len ({seq_len}) must be larger than max_new_tokens")
    ppl = perplexity(model, tokenizer, records, seq_len=seq_len, batch_size=batch_size)
    pairs = [pair for pair in map(split_prompt, records) if pair is not None]
    preds = generate_answers(
        model,
        tokenizer,
        [prompt for prompt, _ in pairs],
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=seq_len - max_new_tokens,
    )
    refs = [reference for _, reference in pairs]
    shown = [
        {"prompt": prompt[-1]["content"] if prompt else "", "reference": ref, "prediction": pred}
        for (prompt, ref), pred in zip(pairs[:examples], preds, strict=False)
    ]
    return {
        "perplexity": ppl.perplexity,
        "loss": ppl.loss,
        "tokens": ppl.tokens,
        **score(preds, refs),
        "rows": len(records),
        "examples": shown,
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metric by metric, `b` against `a` (e.g. a fine-tuned model against its base):
    both values, the change `b - a`, and whether `b` is better."""
    out: dict[str, dict[str, Any]] = {}
    for name, lower_is_better in METRICS.items():
        if name in a and name in b:
            delta = float(b[name]) - float(a[name])
            out[name] = {
                "a": a[name],
                "b": b[name],
                "delta": delta,
                "better": delta < 0 if lower_is_better else delta > 0,
            }
    return out
