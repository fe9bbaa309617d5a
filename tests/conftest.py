from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PERCQA = ROOT.parent / "shared" / "data" / "percqa" / "train.jsonl"


@pytest.fixture
def percqa() -> Path:
    assert PERCQA.is_file(), f"the shared PerCQA data is missing at {PERCQA}"
    return PERCQA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "studio", import_sample_dataset=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
