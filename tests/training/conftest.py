from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PERCQA
from tests.tiny import merge, write_run

RunFactory = Callable[..., Path]


@pytest.fixture
def make_run(tmp_path: Path) -> RunFactory:
    """A run folder with a config.yaml: a tiny scratch model on a PerCQA slice."""

    def make(name: str = "run", **sections: Any) -> Path:
        data = {"train": str(PERCQA), "max_rows": 240, "split_key": "qid"}
        return write_run(tmp_path / name, **merge({"data": data}, sections))

    return make
