"""Runs through the API, with the real supervisor and trainer processes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PERCQA, add_account, sign_in

TINY: dict[str, Any] = {
    "model": {"vocab_size": 500},
    "data": {"split_key": "qid"},
    "training": {"seq_len": 96, "batch_size": 4, "max_steps": 30, "eval_every": 10, "threads": 1},
}


def upload_percqa(client: TestClient, rows: int = 150) -> int:
    data = b"\n".join(PERCQA.read_bytes().splitlines()[:rows]) + b"\n"
    response = client.post("/api/v1/datasets", files={"file": ("percqa.jsonl", data)})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def wait_for(
    client: TestClient, run_id: int, states: set[str], timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] in states:
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is still {run['state']}, not {states}")


@pytest.fixture
def fast_settings(tmp_path: Path, database: str | None) -> Settings:
    """A studio that supervises quickly (on PostgreSQL too, for tests marked `databases`)."""
    settings = Settings(
        data_dir=tmp_path / "studio",
        database_url=database,
        import_sample_dataset=False,
        supervisor_interval_s=0.1,
        max_concurrent_runs=1,
        server_roots=[tmp_path],  # admins may name folders here (not the data folder)
    )
    add_account(settings, ADMIN, role="admin")
    return settings


@contextlib.contextmanager
def signed_in(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        sign_in(client)
        yield client


@pytest.mark.slow
def test_run_goes_through_its_states(fast_settings: Settings) -> None:
    with signed_in(fast_settings) as client:
        dataset = upload_percqa(client)
        bad = client.post(
            "/api/v1/runs", json={"dataset_id": dataset, "training": {"lr": -1, "nope": 1}}
        )
        assert bad.status_code == 400 and "training.lr" in bad.json()["detail"]
        assert "training.nope" in bad.json()["detail"]
        created = client.post(
            "/api/v1/runs",
            json={
                "dataset_id": dataset,
                **TINY,
                "training": {**TINY["training"], "max_steps": 400},
            },
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        assert created.json()["state"] == "queued"
        wait_for(client, run_id, {"running"})
        while client.get(f"/api/v1/runs/{run_id}").json()["step"] < 3:
            time.sleep(0.1)
        conflict = client.post(f"/api/v1/runs/{run_id}/resume")
        assert (
            conflict.status_code == 409
            and "allows: pause, stop, checkpoint" in conflict.json()["detail"]
        )
        assert client.post(f"/api/v1/runs/{run_id}/pause").status_code == 202
        paused = wait_for(client, run_id, {"paused"})
        assert paused["allowed_actions"] == ["resume", "stop", "delete", "restore"]
        assert client.post(f"/api/v1/runs/{run_id}/resume").status_code == 202
        wait_for(client, run_id, {"running"})
        assert client.post(f"/api/v1/runs/{run_id}/stop").status_code == 202
        stopped = wait_for(client, run_id, {"stopped"})
        metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
        steps = [m["step"] for m in metrics["metrics"]]
        assert steps == list(range(1, stopped["step"] + 1))
        assert (
            len(
                client.get(f"/api/v1/runs/{run_id}/metrics", params={"max_points": 5}).json()[
                    "metrics"
                ]
            )
            <= 5
        )
        states = [
            e["state"]
            for e in client.get(f"/api/v1/runs/{run_id}/logs", params={"limit": 1000}).json()
            if e["type"] == "state"
        ]
        assert states == ["starting", "running", "paused", "starting", "running", "stopped"]
        messages = [
            e.get("message") or "" for e in client.get(f"/api/v1/runs/{run_id}/logs").json()
        ]
        assert not any("training a tokenizer" in m for m in messages)  # pre-flight's is reused
        assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 404


@pytest.mark.slow
def test_preflight_counts_every_row_before_queueing(fast_settings: Settings) -> None:
    with signed_in(fast_settings) as client:
        dataset = upload_percqa(client, rows=200)
        body = {"dataset_id": dataset, **TINY, "training": {**TINY["training"], "seq_len": 64}}
        created = client.post("/api/v1/runs", json=body)
        assert created.status_code == 201, created.text
        check = created.json()["preflight"]
        assert check["examples"] + check["validation_examples"] + check["skipped_no_target"] <= 200
        assert check["examples"] > 100 and check["truncated"] > 0
        assert check["token_length"]["max"] == 64
        memory = check["memory"]
        assert memory["parameters"] > 10_000 and memory["device"] == "cpu" and memory["fits"]
        run_id = created.json()["id"]
        assert client.get(f"/api/v1/runs/{run_id}/preflight").json() == check
        client.post(f"/api/v1/runs/{run_id}/stop")


@pytest.mark.slow
def test_restore_in_place_and_as_a_new_run(fast_settings: Settings) -> None:
    with signed_in(fast_settings) as client:
        dataset = upload_percqa(client)
        body = {
            "dataset_id": dataset,
            **TINY,
            "training": {**TINY["training"], "save_every": 10, "keep_last": 5},
        }
        run_id = client.post("/api/v1/runs", json=body).json()["id"]
        wait_for(client, run_id, {"completed"})
        steps = [c["step"] for c in client.get(f"/api/v1/runs/{run_id}/checkpoints").json()]
        assert steps == [10, 20, 30]
        missing = client.post(f"/api/v1/runs/{run_id}/restore", json={"step": 15})
        assert missing.status_code == 404

        copy = client.post(f"/api/v1/runs/{run_id}/restore", json={"step": 10, "as_new_run": True})
        assert copy.status_code == 202, copy.text
        copy_id = copy.json()["id"]
        assert copy_id != run_id and "step 10" in copy.json()["name"]
        wait_for(client, copy_id, {"completed"})
        copied = client.get(f"/api/v1/runs/{copy_id}/metrics", params={"full": True}).json()
        assert [m["step"] for m in copied["metrics"]] == list(range(11, 31))

        again = client.post(f"/api/v1/runs/{run_id}/restore", json={"step": 20})
        assert again.status_code == 202 and again.json()["state"] == "queued"
        wait_for(client, run_id, {"completed"})
        metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
        assert [m["step"] for m in metrics["metrics"]] == list(range(1, 31))
        original = {m["step"]: m["loss"] for m in copied["metrics"]}
        assert all(original[m["step"]] == m["loss"] for m in metrics["metrics"] if m["step"] > 10)


@pytest.mark.databases
def test_members_see_only_their_own_runs(fast_settings: Settings) -> None:
    add_account(fast_settings, "mina")
    add_account(fast_settings, "babak")
    app = create_app(fast_settings)
    # one lifespan: each would dispose of the database engine under the others' feet
    with (
        TestClient(app) as mina,
        contextlib.closing(TestClient(app)) as babak,
        contextlib.closing(TestClient(app)) as nobody,
    ):
        sign_in(mina, "mina")
        sign_in(babak, "babak")
        dataset = upload_percqa(mina, rows=60)
        other = babak.post("/api/v1/runs", json={"dataset_id": dataset, **TINY})
        assert other.status_code == 404  # mina's dataset is not babak's to use
        run_id = mina.post("/api/v1/runs", json={"dataset_id": dataset, **TINY}).json()["id"]
        mina.post(f"/api/v1/runs/{run_id}/stop")
        # the supervisor may have started it already: then stopping takes a moment
        wait_for(mina, run_id, {"stopped", "completed"})
        assert [r["id"] for r in mina.get("/api/v1/runs").json()] == [run_id]
        assert babak.get("/api/v1/runs").json() == []
        for path in ("", "/metrics", "/logs", "/checkpoints", "/preflight", "/events"):
            assert babak.get(f"/api/v1/runs/{run_id}{path}").status_code == 404, path
            assert nobody.get(f"/api/v1/runs/{run_id}{path}").status_code == 401, path
        assert babak.post(f"/api/v1/runs/{run_id}/resume").status_code == 404
        assert babak.delete(f"/api/v1/runs/{run_id}").status_code == 404
        assert nobody.get("/api/v1/system").status_code == 401
        assert mina.delete(f"/api/v1/runs/{run_id}").status_code == 204


@pytest.mark.databases
def test_a_dataset_in_use_by_a_run_cannot_be_deleted(fast_settings: Settings) -> None:
    with signed_in(fast_settings) as client:
        dataset = upload_percqa(client, rows=60)
        run_id = client.post("/api/v1/runs", json={"dataset_id": dataset, **TINY}).json()["id"]
        refused = client.delete(f"/api/v1/datasets/{dataset}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["runs"] == [run_id] and "stop or delete" in refused.json()["detail"]
        assert client.get(f"/api/v1/datasets/{dataset}/preview").status_code == 200  # intact
        client.post(f"/api/v1/runs/{run_id}/stop")
        wait_for(client, run_id, {"stopped", "completed"})
        assert client.delete(f"/api/v1/datasets/{dataset}").status_code == 204
