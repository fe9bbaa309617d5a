"""Splitting by a key keeps every group on one side, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lastedocation.datasets.split import split_records
from lastedocation.errors import InvalidInput


def _records(tmp_path: Path) -> Path:
    path = tmp_path / "records.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(200):
            f.write(json.dumps({"row": i + 1, "text": "x", "meta": {"g": i % 37}}) + "\n")
    return path


def _groups(path: Path) -> set[int]:
    return {json.loads(line)["meta"]["g"] for line in path.read_text().splitlines()}


def test_no_group_in_both_parts_and_same_seed_same_split(tmp_path: Path) -> None:
    records = _records(tmp_path)
    first = split_records(records, tmp_path / "a", key="g", validation_fraction=0.2, seed=3)
    again = split_records(records, tmp_path / "b", key="g", validation_fraction=0.2, seed=3)
    split_records(records, tmp_path / "c", key="g", validation_fraction=0.2, seed=4)
    assert first == again
    assert first.train_rows + first.validation_rows == 200
    assert 30 <= first.validation_rows <= 50
    train, valid = _groups(tmp_path / "a/train.jsonl"), _groups(tmp_path / "a/validation.jsonl")
    assert not train & valid and len(train | valid) == 37
    assert (tmp_path / "a/validation.jsonl").read_bytes() == (
        tmp_path / "b/validation.jsonl"
    ).read_bytes()
    assert _groups(tmp_path / "c/validation.jsonl") != valid  # another seed, another split


def test_missing_key_names_the_row(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="row 1 has no field `nope`"):
        split_records(
            _records(tmp_path), tmp_path / "x", key="nope", validation_fraction=0.1, seed=0
        )


def test_fraction_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="validation_fraction"):
        split_records(_records(tmp_path), tmp_path / "x", key="g", validation_fraction=1.5, seed=0)
