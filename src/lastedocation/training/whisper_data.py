"""Speech training data: a speech dataset's records -> clips (audio file, transcript,
label ids) -> a validation split by sentence -> batches in a deterministic order; the
pre-flight that checks every clip before a run is queued; WER and CER.

A speech dataset's folder holds `records.jsonl`, one clip a line:
`{"audio": "audio/000001.wav", "text": "...", "duration_s": 1.2, ...}`, audio paths
relative to the folder. Labels are the transcript as Whisper writes it,
`<|startoftranscript|><|fa|><|transcribe|><|notimestamps|> text <|endoftext|>`; the
loss is on the text and the end token (the prefix is given, not learned).

Split: every clip of one transcript (after normalization) lands on the same side, so
validation measures sentences the model never heard, not a second reading of a
training sentence. Which sentences go where depends only on the seed and the text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lastedocation.inference.metrics import normalize_answer
from lastedocation.training.config import RunConfig
from lastedocation.training.data import IGNORE, DataError

PREFIX = 4  # <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
MAX_LINE_BYTES = 1 << 20  # a record is a file name and a transcript: far below this
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Clip:
    row: int  # 1-based line of records.jsonl, as errors name it
    audio: Path
    text: str
    ids: tuple[int, ...]  # prefix, transcript, <|endoftext|>


def read_records(path: Path, max_rows: int | None = None) -> list[tuple[int, Path, str]]:
    """(row, audio file, transcript) for each record; audio paths stay in the folder."""
    folder = path.parent.resolve()
    out: list[tuple[int, Path, str]] = []
    with path.open("rb") as f:
        for row in range(1, MAX_ROWS + 2):
            if max_rows is not None and len(out) >= max_rows:
                break
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            if len(line) > MAX_LINE_BYTES:
                raise DataError(f"{path.name} row {row}: longer than {MAX_LINE_BYTES:,} bytes")
            if not line.strip():
                continue
            if row > MAX_ROWS:
                raise DataError(f"{path.name} has more than {MAX_ROWS:,} rows")
            out.append(_record(path.name, row, line, folder))
    if not out:
        raise DataError(f"{path.name} has no clips")
    return out


def _record(name: str, row: int, line: bytes, folder: Path) -> tuple[int, Path, str]:
    try:
        record = json.loads(line)
    except ValueError:
        raise DataError(f"{name} row {row}: not a JSON object") from None
    if not isinstance(record, dict):
        raise DataError(f"{name} row {row}: not a JSON object")
    audio, text = record.get("audio"), record.get("text")
    if not isinstance(audio, str) or not audio:
        raise DataError(f"{name} row {row}: `audio` is missing (the clip's file)")
    if not isinstance(text, str):
        raise DataError(f"{name} row {row}: `text` is missing (the clip's transcript)")
    file = (folder / audio).resolve()
    if Path(audio).is_absolute() or not file.is_relative_to(folder):
        raise DataError(f"{name} row {row}: `audio` must name a file inside the dataset")
    if not file.is_file():
        raise DataError(f"{name} row {row}: the audio file {audio} is missing")
    return row, file, text


def prepare_clips(config: RunConfig, tokenizer: Any) -> tuple[list[Clip], list[Clip]]:
    """(train, validation) clips: a validation dataset, or whole sentences held out."""
    data, limit = config.data, config.speech.max_label_tokens
    clips = encode_clips(read_records(data.train, data.max_rows), tokenizer, limit)
    if data.validation is not None:
        return clips, encode_clips(read_records(data.validation), tokenizer, limit)
    if data.validation_fraction == 0:
        return clips, []
    return split_by_sentence(clips, data.validation_fraction, seed=0)


def encode_clips(
    records: list[tuple[int, Path, str]], tokenizer: Any, max_tokens: int
) -> list[Clip]:
    """Each transcript as label ids; a transcript too long for Whisper, or empty, is an
    error naming its row."""
    clips = []
    for row, audio, text in records:
        text = " ".join(text.split())
        if not normalize_answer(text):
            raise DataError(f"row {row}: the transcript of {audio.name} is empty")
        ids = tuple(tokenizer(text).input_ids)
        if len(ids) > max_tokens:
            raise DataError(
                f"row {row}: the transcript of {audio.name} is {len(ids)} tokens with "
                f"Whisper's prefix and end; the limit is {max_tokens} (speech.max_label_tokens)"
            )
        clips.append(Clip(row, audio, text, ids))
    return clips


def split_by_sentence(
    clips: list[Clip], fraction: float, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """(train, validation): whole sentences held out, about `fraction` of the clips."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(normalize_answer(clip.text), []).append(clip)
    order = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}\0{key}".encode()).digest())
    wanted = round(fraction * len(clips))
    held: set[str] = set()
    count = 0
    for key in order:
        if count >= wanted:
            break
        held.add(key)
        count += len(groups[key])
    train = [c for c in clips if normalize_answer(c.text) not in held]
    validation = [c for c in clips if normalize_answer(c.text) in held]
    if not train or not validation:
        raise DataError(
            f"{len(groups)} distinct transcript(s) cannot be split by sentence with "
            f"validation_fraction {fraction}: add sentences, or give a validation dataset"
        )
    return train, validation


class ClipPlan:
    """Which clips make micro-batch k: each epoch a seeded shuffle, so batch k is the
    same in every process that asks (resume needs only k)."""

    def __init__(self, count: int, batch_size: int, seed: int) -> None:
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.per_epoch = math.ceil(count / batch_size)
        self._epoch, self._order = -1, list(range(count))

    def batch(self, k: int) -> list[int]:
        epoch, index = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            self._order = list(range(self.count))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._epoch = epoch
        return self._order[index * self.batch_size : (index + 1) * self.batch_size]


def label_batch(clips: list[Clip], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs (the ids but the last) and labels (the ids but the first, the
    prefix's masked), right-padded; causal attention keeps the padding out of the rest."""
    width = max(len(c.ids) for c in clips) - 1
    inputs = torch.full((len(clips), width), pad_id, dtype=torch.long)
    labels = torch.full((len(clips), width), IGNORE, dtype=torch.long)
    for i, clip in enumerate(clips):
        ids = torch.tensor(clip.ids)
        inputs[i, : len(ids) - 1] = ids[:-1]
        labels[i, : len(ids) - 1] = ids[1:]
        labels[i, : PREFIX - 1] = IGNORE  # <|lang|><|transcribe|><|notimestamps|> are given
    return inputs, labels


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """WER and CER (jiwer) after Persian normalization (`normalize_answer`: punctuation
    out, Arabic letter forms and digits unified, ZWNJ joined, spaces collapsed)."""
    import jiwer

    refs = [normalize_answer(t) for t in references]
    hyps = [normalize_answer(t) for t in hypotheses]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def check_clips(clips: list[Clip], max_seconds: float) -> list[float]:
    """Every clip decodes, within `max_seconds` (AudioInvalid names the row and file)."""
    from lastedocation.speech.audio import decode

    return [
        decode(c.audio, max_seconds=max_seconds, name=f"row {c.row} ({c.audio.name})").duration_s
        for c in clips
    ]


def summary(train: list[Clip], validation: list[Clip], seconds: list[float]) -> dict[str, Any]:
    """What the pre-flight reports (the text pre-flight's keys, and the audio's)."""
    lengths = sorted(len(c.ids) for c in train)
    ordered = sorted(seconds)
    return {
        "examples": len(train),
        "validation_examples": len(validation),
        "tokens": sum(lengths),
        "truncated": 0,
        "skipped_no_target": 0,
        "token_length": {
            "p50": lengths[len(lengths) // 2],
            "p95": lengths[int(len(lengths) * 0.95)],
            "max": lengths[-1],
        },
        "audio_seconds": round(sum(seconds), 2),
        "audio_length_s": {
            "p50": round(ordered[len(ordered) // 2], 2),
            "max": round(ordered[-1], 2),
        },
        "sentences": len({normalize_answer(c.text) for c in train + validation}),
    }


def check_speech_run(config: RunConfig) -> dict[str, Any]:
    """The pre-flight of a speech run, before it is queued: every transcript tokenizes
    within Whisper's label limit, every audio file decodes within the length limit, the
    split by sentence works, and a memory estimate. Problems raise InvalidInput naming
    the row (AudioInvalid names the file too)."""
    from lastedocation.errors import InvalidInput
    from lastedocation.training.model_source import ModelSourceError
    from lastedocation.training.whisper_model import memory_estimate, shape_of, speech_tokenizer

    try:
        tokenizer = speech_tokenizer(config.model, config.speech.language)
        shape = shape_of(config.model)
    except ModelSourceError as exc:
        raise InvalidInput(f"pre-flight: {exc}", field="model") from None
    except (OSError, ValueError) as exc:  # a folder transformers cannot read
        raise InvalidInput(
            f"pre-flight: the base model's tokenizer or config cannot be loaded: {exc}",
            field="model",
        ) from None
    try:
        train, validation = prepare_clips(config, tokenizer)
    except DataError as exc:
        raise InvalidInput(f"pre-flight: {exc}", field="data") from None
    seconds = check_clips(train + validation, config.speech.max_audio_seconds)
    return {
        **summary(train, validation, seconds),
        "seq_len": config.speech.max_label_tokens,
        "memory": memory_estimate(config, shape),
    }
