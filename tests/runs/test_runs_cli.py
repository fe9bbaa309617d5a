"""The CLI against a real studio: login keeps an API token; runs commands use it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from lastedocation.cli import app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PASSWORD, PERCQA, add_account, sign_in
from tests.runs.test_runs_chaos import CONFIG
from tests.server import StudioServer

runner = CliRunner()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StudioServer]:
    monkeypatch.setenv("LASTEDOCATION_CREDENTIALS", str(tmp_path / "credentials.json"))
    add_account(Settings(data_dir=tmp_path / "studio"), ADMIN, role="admin")
    studio = StudioServer(tmp_path / "studio").start()
    try:
        yield studio
    finally:
        studio.stop()


def _cli(*args: str, input: str | None = None, code: int = 0) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.slow
def test_login_then_control_a_run(server: StudioServer, tmp_path: Path) -> None:
    assert "not logged in" in _cli("runs", "list", code=1)
    wrong = _cli(
        "login", "--url", server.url, "--username", ADMIN, input="nope-nope-nope\n", code=1
    )
    assert "error (401)" in wrong
    out = _cli("login", "--url", server.url, "--username", ADMIN, input=f"{PASSWORD}\n")
    assert f"signed in as {ADMIN}" in out
    assert oct((tmp_path / "credentials.json").stat().st_mode & 0o777) == "0o600"

    with httpx.Client(base_url=server.url, timeout=60) as http:
        sign_in(http)
        data = b"\n".join(PERCQA.read_bytes().splitlines()[:120]) + b"\n"
        dataset = http.post("/api/v1/datasets", files={"file": ("p.jsonl", data)}).json()["id"]
        config = {**CONFIG, "training": {**CONFIG["training"], "max_steps": 2000}}
        run_id = str(http.post("/api/v1/runs", json={"dataset_id": dataset, **config}).json()["id"])
        deadline = time.monotonic() + 120
        while http.get(f"/api/v1/runs/{run_id}").json()["step"] < 12:
            assert time.monotonic() < deadline
            time.sleep(0.2)

    assert run_id in _cli("runs", "list")
    assert "running" in _cli("runs", "show", run_id)
    assert "cannot resume a run that is running" in _cli("runs", "resume", run_id, code=1)
    assert "pausing" in _cli("runs", "pause", run_id)
    deadline = time.monotonic() + 120
    while "paused" not in _cli("runs", "show", run_id):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    logs = _cli("runs", "logs", run_id)
    assert "[paused]" in logs and "[running]" in logs
    followed = _cli("runs", "logs", run_id, "-f")  # a paused run: the stream ends
    assert "step 1/2000" in followed and "[paused]" in followed
    step = _cli("runs", "checkpoints", run_id).split()[1]
    assert "queued" in _cli("runs", "restore", run_id, "--step", step, "--new")
    assert "stopped" in _cli("runs", "stop", run_id)
    assert "no run with id 999" in _cli("runs", "show", "999", code=1)
