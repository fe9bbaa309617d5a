"""Training data: dataset file -> canonical records -> token ids with a label
mask -> packed (or padded) batches, in a deterministic order.

Labels: the loss is on the answer tokens only. Each conversation is rendered
with the model's chat template; for every assistant turn, the tokens of the
prompt up to and including the assistant header get label -100, the answer and
its end token are learned. Plain text is learned whole.

Packing: examples are placed into sequences of at most `seq_len` tokens
(first fit over a window of open sequences, in seeded random order, so lengths
stay mixed). Attention does not cross examples: each sequence carries segment
ids, and the batch gets a block-diagonal causal mask (4-D, for SDPA) and
position ids that restart at 0 for every example. The first token of every
example is never a target, so no example learns from its neighbour's end.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lastedocation.datasets.formats import FormatSpec
from lastedocation.datasets.scan import ScanOptions, scan_file
from lastedocation.datasets.split import split_records
from lastedocation.training.config import DataConfig

IGNORE = -100
_CANONICAL_KEYS = {"row", "messages", "text", "meta"}
_PACK_WINDOW = 64


class DataError(Exception):
    """The training data cannot be used; the message names the file, row or field."""


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


@dataclass
class Encoded:
    examples: list[Example]
    truncated: int = 0
    skipped_no_target: int = 0
    tokens: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)


def prepare_records(config: DataConfig, work_dir: Path) -> tuple[Path, Path | None]:
    """Canonical train (and validation) records in `work_dir`, validated the way
    the studio validates uploads."""
    work_dir.mkdir(parents=True, exist_ok=True)
    train = _canonical(config.train, work_dir / "all.jsonl", config)
    if config.validation is not None:
        return train, _canonical(config.validation, work_dir / "validation.jsonl", config)
    if config.validation_fraction == 0:
        return train, None
    result = split_records(
        train,
        work_dir / "split",
        key=config.split_key,
        validation_fraction=config.validation_fraction,
        seed=0,
    )
    if result.validation_rows == 0 or result.train_rows == 0:
        raise DataError("the dataset is too small to split off a validation part")
    return work_dir / "split" / "train.jsonl", work_dir / "split" / "validation.jsonl"


def _is_canonical(path: Path) -> bool:
    with path.open("rb") as f:
        first = f.readline()
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and "row" in row and set(row) <= _CANONICAL_KEYS


def _canonical(source: Path, dest: Path, config: DataConfig) -> Path:
    if _is_canonical(source) and not config.normalize and config.max_rows is None:
        return source
    spec = None
    if config.data_format or config.question_field:
        spec = FormatSpec(
            config.data_format or "qa",
            question_field=config.question_field or "question",
            answer_field=config.answer_field or "answer",
        )
    options = ScanOptions(spec=spec, normalize=config.normalize)
    with dest.open("wb") as out:
        result = scan_file(
            source, filename=source.name, options=options, out=out, max_rows=config.max_rows
        )
    report = result.report
    if (
        report.rows_valid == 0
        or report.fatal
        or (report.problems_total and not config.drop_invalid)
    ):
        shown = "; ".join(
            f"row {p.row} {p.field or ''}: {p.message}".replace("  ", " ")
            for p in report.problems[:5]
        )
        raise DataError(
            f"{source.name}: {report.rows_invalid} of {report.rows_seen} rows have problems "
            f"({shown}); fix them or set data.drop_invalid: true"
        )
    return dest


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            yield json.loads(line)


def iter_texts(path: Path) -> Iterator[str]:
    """Every text of the records (for training a tokenizer)."""
    for record in read_records(path):
        if "text" in record:
            yield record["text"]
        for message in record.get("messages", ()):
            yield message["content"]


def encode_record(
    record: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> tuple[Example, bool]:
    """Token ids and labels for one record, and whether it was truncated."""
    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = [*ids, tokenizer.eos_token_id]
        labels = list(ids)
    else:
        ids, labels = _encode_chat(record["messages"], tokenizer)
    truncated = len(ids) > seq_len
    if truncated:
        ids, labels = _truncate(ids, labels, seq_len)
    if labels:
        labels[0] = IGNORE
    return Example(ids, labels), truncated


def _truncate(ids: list[int], labels: list[int], seq_len: int) -> tuple[list[int], list[int]]:
    """Fit `seq_len`, keeping the first answer in view.

    Cutting only the end would drop the answer of a long question, leaving nothing
    to learn. Instead the prompt before the first answer keeps at least half the
    room (its beginning and its end, with the assistant header; the middle goes)
    and the answer gets the rest, cut at its end if it must be.
    """
    first = next((i for i, label in enumerate(labels) if label != IGNORE), len(ids))
    answer = len(ids) - first
    prompt_room = max(seq_len - answer, seq_len // 2) if first else 0
    prompt_room = min(prompt_room, first)
    head = prompt_room // 2
    tail = prompt_room - head
    keep = list(range(head)) + list(range(first - tail, first))
    keep += list(range(first, first + seq_len - len(keep)))
    return [ids[i] for i in keep], [labels[i] for i in keep]


def _encode_chat(
    messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    def render(turns: list[dict[str, str]], prompt: bool) -> str:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)
        assert isinstance(text, str)
        return text

    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render(messages[:i], prompt=True)
            full = render(messages[: i + 1], prompt=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise DataError("the chat template does not render turns as a growing prefix")
            head = tokenizer(prompt[len(done) :], add_special_tokens=False)["input_ids"]
            answer = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
            ids += head + answer
            labels += [IGNORE] * len(head) + answer
            done = full
    rest = render(messages, prompt=False)[len(done) :]
    if rest:
        tail = tokenizer(rest, add_special_tokens=False)["input_ids"]
        ids += tail
        labels += [IGNORE] * len(tail)
    return ids, labels


def encode_file(path: Path, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> Encoded:
    """Encode every record: this is the pre-flight, the same code training uses."""
    encoded = Encoded([])
    for record in read_records(path):
        try:
            example, truncated = encode_record(record, tokenizer, seq_len)
        except Exception as exc:  # a template that rejects a row: name the row
            encoded.problems.append({"row": record.get("row"), "message": str(exc)})
            continue
        if all(label == IGNORE for label in example.labels):
            encoded.skipped_no_target += 1
            continue
        encoded.truncated += truncated
        encoded.tokens += len(example.ids)
        encoded.examples.append(example)
    return encoded


def pack(examples: list[Example], seq_len: int, seed: int) -> list[list[int]]:
    """Groups of example indices, each fitting in `seq_len` tokens."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    bins: list[list[int]] = []
    room: list[int] = []
    open_from = 0
    for index in order:
        size = len(examples[index].ids)
        for b in range(open_from, len(bins)):
            if room[b] >= size:
                bins[b].append(index)
                room[b] -= size
                break
        else:
            bins.append([index])
            room.append(seq_len - size)
        open_from = max(0, len(bins) - _PACK_WINDOW)
    return bins


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    real_tokens: int
    target_tokens: int
    samples: int


def collate_packed(examples: list[Example], groups: list[list[int]], pad_id: int) -> Batch:
    width = max(sum(len(examples[i].ids) for i in group) for group in groups)
    n = len(groups)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    segments = torch.zeros((n, width), dtype=torch.long)
    samples = 0
    for row, group in enumerate(groups):
        at = 0
        for segment, index in enumerate(group, start=1):
            example = examples[index]
            size = len(example.ids)
            input_ids[row, at : at + size] = torch.tensor(example.ids)
            labels[row, at : at + size] = torch.tensor(example.labels)
            positions[row, at : at + size] = torch.arange(size)
            segments[row, at : at + size] = segment
            at += size
            samples += 1
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same = segments[:, :, None] == segments[:, None, :]
    mask = same & causal & (segments[:, :, None] > 0)
    mask |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty rows
    return Batch(
        input_ids,
        labels,
        mask[:, None, :, :],
        positions,
        int((segments > 0).sum()),
        int((labels != IGNORE).sum()),
        samples,
    )


def collate_padded(examples: list[Example], indices: list[int], pad_id: int) -> Batch:
    width = max(len(examples[i].ids) for i in indices)
    n = len(indices)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for row, index in enumerate(indices):
        example = examples[index]
        size = len(example.ids)
        input_ids[row, :size] = torch.tensor(example.ids)
        labels[row, :size] = torch.tensor(example.labels)
        attention[row, :size] = 1
    return Batch(
        input_ids,
        labels,
        attention,
        None,
        int(attention.sum()),
        int((labels != IGNORE).sum()),
        n,
    )


class BatchPlan:
    """The batches of every epoch in a fixed, seeded order: batch `k` of the run is
    the same whichever process computes it, which is what makes resume exact."""

    def __init__(
        self,
        examples: list[Example],
        *,
        seq_len: int,
        batch_size: int,
        packing: bool,
        pad_id: int,
        seed: int,
    ) -> None:
        self.examples = examples
        self.pad_id = pad_id
        self.packing = packing
        self.seed = seed
        self.items: list[list[int]] = (
            pack(examples, seq_len, seed) if packing else [[i] for i in range(len(examples))]
        )
        self.batch_size = batch_size
        self.per_epoch = max(1, -(-len(self.items) // batch_size))
        self._order: tuple[int, list[int]] = (-1, [])

    def _epoch_order(self, epoch: int) -> list[int]:
        if self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.items), generator=generator).tolist())
        return self._order[1]

    def batch(self, k: int) -> Batch:
        """Batch number `k` of the run (epochs follow each other)."""
        epoch, index = divmod(k, self.per_epoch)
        order = self._epoch_order(epoch)
        chosen = [
            self.items[i] for i in order[index * self.batch_size : (index + 1) * self.batch_size]
        ]
        if self.packing:
            return collate_packed(self.examples, chosen, self.pad_id)
        return collate_padded(self.examples, [group[0] for group in chosen], self.pad_id)

    def eval_batches(self, limit: int | None = None) -> Iterator[Batch]:
        count = self.per_epoch if limit is None else min(limit, self.per_epoch)
        for index in range(count):
            chosen = self.items[index * self.batch_size : (index + 1) * self.batch_size]
            if self.packing:
                yield collate_packed(self.examples, chosen, self.pad_id)
            else:
                yield collate_padded(self.examples, [g[0] for g in chosen], self.pad_id)
