"""The CLI over the same services: exit codes, reports, import into the data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lastedocation.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _studio_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LASTEDOCATION_DATA_DIR", str(tmp_path / "studio"))
    return tmp_path / "studio"


def test_validate_percqa_has_no_errors(percqa: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(percqa), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["report"]
    assert report["rows_valid"] == 9638 and report["problems_total"] == 0


def test_validate_fails_with_a_named_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": "a"}\n', encoding="utf-8")
    result = runner.invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code == 1
    assert "the field `answer` is missing" in result.output


def test_import_then_refuse_invalid(percqa: Path, tmp_path: Path, _studio_dir: Path) -> None:
    result = runner.invoke(app, ["data", "import", str(percqa), "--name", "PerCQA"])
    assert result.exit_code == 0, result.output
    assert "imported as dataset 1" in result.output
    (folder,) = (_studio_dir / "datasets").iterdir()
    assert (folder / "records.jsonl").read_bytes().count(b"\n") == 9638

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": 5, "answer": []}\n')
    refused = runner.invoke(app, ["data", "import", str(bad)])
    assert refused.exit_code == 1
    assert "`answer` must be text, got list" in refused.output
    dropped = runner.invoke(app, ["data", "import", str(bad), "--drop-invalid", "--json"])
    assert dropped.exit_code == 0, dropped.output
    assert json.loads(dropped.output)["report"]["rows_invalid"] == 1


def test_stats_and_preview(percqa: Path) -> None:
    stats = runner.invoke(app, ["data", "stats", str(percqa), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["fields"]["answer"]["chars"]["percentiles"]["p50"] == 84
    table = runner.invoke(app, ["data", "stats", str(percqa)])
    assert "exact duplicates: 5" in table.output
    preview = runner.invoke(
        app, ["data", "preview", str(percqa), "--offset", "2", "--limit", "2", "--json"]
    )
    assert preview.exit_code == 0, preview.output
    rows = json.loads(preview.output)
    first = json.loads(percqa.read_text(encoding="utf-8").splitlines()[2])
    assert [r["row"] for r in rows] == [3, 4]
    assert rows[0]["messages"][1]["content"] == first["answer"]


def test_help_reads_well() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output and "data" in result.output
    assert runner.invoke(app, ["data", "validate", "/no/such/file.jsonl"]).exit_code == 2
