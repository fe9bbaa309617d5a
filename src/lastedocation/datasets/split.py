"""Train/validation split by a key, so that no group (e.g. one `qid` thread) lands
in both parts. Deterministic: the groups are ordered by key, shuffled with the
seed, and taken into validation until it holds the wanted share of rows.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lastedocation.errors import InvalidInput


@dataclass(frozen=True)
class SplitResult:
    train_rows: int
    validation_rows: int
    train_groups: int
    validation_groups: int


def _group_of(record: dict[str, Any], key: str | None) -> str:
    if key is None:
        return f"row:{record['row']}"
    meta = record.get("meta", {})
    if key not in meta:
        raise InvalidInput(
            f"row {record['row']} has no field `{key}` to split by",
            field="key",
            row=record["row"],
        )
    return orjson.dumps(meta[key]).decode()


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            yield orjson.loads(line)


def split_records(
    records_path: Path,
    out_dir: Path,
    *,
    key: str | None,
    validation_fraction: float,
    seed: int,
) -> SplitResult:
    """Write train.jsonl and validation.jsonl into `out_dir` (two streaming passes)."""
    if not 0 < validation_fraction < 1:
        raise InvalidInput(
            f"validation_fraction must be between 0 and 1, got {validation_fraction}",
            field="validation_fraction",
        )
    sizes: Counter[str] = Counter(_group_of(r, key) for r in _records(records_path))
    if len(sizes) < 2:
        raise InvalidInput(
            f"cannot split by `{key}`: all rows share one value", field="key", groups=len(sizes)
        )
    groups = sorted(sizes)
    random.Random(seed).shuffle(groups)
    target = validation_fraction * sum(sizes.values())
    validation: set[str] = set()
    taken = 0
    for group in groups:
        if taken >= target or len(validation) == len(groups) - 1:
            break
        validation.add(group)
        taken += sizes[group]
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "validation": 0}
    with (
        (out_dir / "train.jsonl").open("wb") as train,
        (out_dir / "validation.jsonl").open("wb") as valid,
    ):
        for record in _records(records_path):
            part = "validation" if _group_of(record, key) in validation else "train"
            (valid if part == "validation" else train).write(orjson.dumps(record) + b"\n")
            counts[part] += 1
    return SplitResult(
        counts["train"], counts["validation"], len(groups) - len(validation), len(validation)
    )
