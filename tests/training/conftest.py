from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PERCQA

RunFactory = Callable[..., Path]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


@pytest.fixture
def make_run(tmp_path: Path) -> RunFactory:
    """A run folder with a config.yaml: a tiny scratch model on a PerCQA slice."""

    def make(name: str = "run", **sections: Any) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        config = {
            "name": name,
            "data": {"train": str(PERCQA), "max_rows": 240, "split_key": "qid"},
            "model": {"source": "scratch", "preset": "llama-tiny", "vocab_size": 600},
            "training": {
                "seq_len": 128,
                "batch_size": 4,
                "max_steps": 12,
                "lr": 0.003,
                "eval_every": 6,
                "save_every": 100,
                "threads": 1,
            },
        }
        config = _merge(config, sections)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        return run_dir

    return make
