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


def test_users_add_asks_twice_and_the_account_signs_in(_studio_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from lastedocation.api import create_app
    from lastedocation.settings import Settings
    from tests.conftest import PASSWORD, sign_in

    first = runner.invoke(app, ["users", "add", "mina"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert first.exit_code == 1 and "--admin" in first.output  # the first account is an admin
    added = runner.invoke(
        app, ["users", "add", "Shirin", "--admin"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert added.exit_code == 0, added.output
    assert "added admin shirin" in added.output and PASSWORD not in added.output
    mismatch = runner.invoke(app, ["users", "add", "mina"], input=f"{PASSWORD}\nother one!!\n")
    assert mismatch.exit_code != 0
    short = runner.invoke(app, ["users", "add", "mina"], input="short\nshort\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    member = runner.invoke(app, ["users", "add", "mina"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert member.exit_code == 0 and "added member mina" in member.output
    taken = runner.invoke(app, ["users", "add", "MINA"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert taken.exit_code == 1 and "taken" in taken.output
    listed = runner.invoke(app, ["users", "list"])
    assert "shirin" in listed.output and "member" in listed.output

    settings = Settings(data_dir=_studio_dir, import_sample_dataset=False)
    with TestClient(create_app(settings)) as client:
        sign_in(client, "shirin")
        assert client.get("/api/v1/auth/me").json()["role"] == "admin"


def test_import_for_an_owner(percqa: Path, tmp_path: Path) -> None:
    from tests.conftest import PASSWORD

    small = tmp_path / "small.jsonl"
    small.write_bytes(b"\n".join(percqa.read_bytes().splitlines()[:20]) + b"\n")
    runner.invoke(app, ["users", "add", "shirin", "--admin"], input=f"{PASSWORD}\n{PASSWORD}\n")
    unknown = runner.invoke(app, ["data", "import", str(small), "--owner", "nobody"])
    assert unknown.exit_code == 1 and "no account named 'nobody'" in unknown.output
    owned = runner.invoke(app, ["data", "import", str(small), "--owner", "shirin", "--json"])
    assert owned.exit_code == 0, owned.output
