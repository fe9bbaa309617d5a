"""A run config reports every problem at once, naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lastedocation.training.config import ConfigError, load_config, parse_config


def test_all_problems_at_once(tmp_path: Path) -> None:
    raw = {
        "data": {"train": str(tmp_path / "missing.jsonl"), "question_field": "q"},
        "model": {"source": "local"},
        "training": {"lr": -1, "batch_sise": 8, "method": "lora"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    fields = [field for field, _ in caught.value.problems]
    assert fields == ["training.lr", "training.batch_sise"]  # schema problems first
    assert "unknown field" in caught.value.detail

    raw["training"] = {"method": "lora"}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = dict(caught.value.problems)
    assert set(problems) == {"data.train", "data.question_field", "model.path"}
    assert "no file at" in problems["data.train"]


def test_scratch_with_lora_and_qlora_without_gpu(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "a", "answer": "b"}\n')
    with pytest.raises(ConfigError, match="no base to adapt"):
        parse_config({"data": {"train": str(data)}, "training": {"method": "lora"}})
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU; use lora"):
        parse_config(
            {
                "data": {"train": str(data)},
                "model": {"source": "hub", "hub_id": "org/model"},
                "training": {"method": "qlora"},
            }
        )


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"question": "a", "answer": "b"}\n')
    (tmp_path / "run.yaml").write_text("data:\n  train: d.jsonl\n")
    assert load_config(tmp_path / "run.yaml").data.train == tmp_path / "d.jsonl"
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def test_hostile_yaml_is_refused_before_it_expands(tmp_path: Path) -> None:
    """A "billion laughs" document: nine aliases deep it would be 10**9 strings."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        refs = ",".join(["*" + chr(96 + i)] * 10)
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [{refs}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(bomb)
    deep = tmp_path / "deep.yaml"
    deep.write_text("data: " + "[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: " + "x" * (2 * 1024 * 1024) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(huge)
