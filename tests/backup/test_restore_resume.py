"""The whole studio, backed up while it trains, restored on a "new machine" (an empty
data folder), where its paused and interrupted runs continue exactly as they would
have without the backup."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.backup import jobs, restore
from lastedocation.backup.entries import BackupJob
from lastedocation.backup.runner import engine_for
from lastedocation.backup.targets import BackupTarget
from lastedocation.settings import Settings
from tests.backup.conftest import S3Server
from tests.conftest import ADMIN, add_account, sign_in
from tests.runs.test_runs_api import TINY, upload_percqa, wait_for

BODY = {**TINY, "training": {**TINY["training"], "save_every": 5}}


def studio(data_dir: Path, targets: list[BackupTarget]) -> Settings:
    return Settings(
        data_dir=data_dir,
        import_sample_dataset=False,
        supervisor_interval_s=0.1,
        max_concurrent_runs=1,
        backup_targets=targets,
    )


def listing(client: TestClient) -> dict[str, Any]:
    """What a user sees of the studio, without the fields that move with time."""
    runs = client.get("/api/v1/runs").json()
    return {
        "datasets": [
            (d["id"], d["name"], d["rows"], d["sha256"])
            for d in client.get("/api/v1/datasets").json()
        ],
        "runs": sorted((r["id"], r["name"], r["step"]) for r in runs),
        "models": [(m["id"], m["name"]) for m in client.get("/api/v1/models").json()],
        "model_details": [
            client.get(f"/api/v1/models/{m['id']}").json()
            for m in client.get("/api/v1/models").json()
        ],
    }


def losses(client: TestClient, run_id: int) -> list[tuple[int, float]]:
    metrics = client.get(f"/api/v1/runs/{run_id}/metrics", params={"full": True}).json()
    return [(m["step"], m["loss"]) for m in metrics["metrics"]]


def back_up(client: TestClient, target: BackupTarget) -> BackupJob:
    """Queue a backup as the schedule would and let the server's worker run it."""
    app = client.app
    with app.state.sessions() as session:  # type: ignore[attr-defined]
        job_id = jobs.queue_job(session, kind="backup", target=target, trigger="manual").id
    app.state.backups.wake()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with app.state.sessions() as session:  # type: ignore[attr-defined]
            job = jobs.get_job(session, job_id)
        if job.state in ("done", "failed", "cancelled"):
            assert job.state == "done", job.message
            return job
        time.sleep(0.2)
    raise AssertionError(f"backup job {job_id} did not end")


@pytest.mark.slow
def test_a_restored_studio_has_everything_and_its_runs_resume_exactly(
    tmp_path: Path, s3_server: S3Server
) -> None:
    targets = [
        s3_server.target(name="s3", bucket="resume"),
        BackupTarget(name="nas", kind="folder", path=str(tmp_path / "nas")),
    ]
    old = studio(tmp_path / "old", targets)
    add_account(old, ADMIN, role="admin")
    with TestClient(create_app(old)) as client:
        sign_in(client)
        dataset = upload_percqa(client)
        reference = client.post("/api/v1/runs", json={"dataset_id": dataset, **BODY}).json()
        wait_for(client, reference["id"], {"completed"})

        paused = client.post("/api/v1/runs", json={"dataset_id": dataset, **BODY}).json()["id"]
        wait_for(client, paused, {"running"})
        while client.get(f"/api/v1/runs/{paused}").json()["step"] < 7:
            time.sleep(0.05)
        assert client.post(f"/api/v1/runs/{paused}/pause").status_code == 202
        wait_for(client, paused, {"paused"})

        # a run that trains while the backup is taken, and keeps training
        longer = {**BODY, "training": {**BODY["training"], "max_steps": 50_000}}
        training = client.post("/api/v1/runs", json={"dataset_id": dataset, **longer}).json()["id"]
        wait_for(client, training, {"running"})
        while client.get(f"/api/v1/runs/{training}").json()["step"] < 6:
            time.sleep(0.05)
        back_up(client, targets[1])
        during = back_up(client, targets[0])
        assert during.snapshot_id and during.bytes_sent > 0
        still = client.get(f"/api/v1/runs/{training}").json()
        assert still["state"] == "running", still
        stop_after = still["step"] + 20
        while client.get(f"/api/v1/runs/{training}").json()["step"] < stop_after:
            time.sleep(0.05)
        assert client.post(f"/api/v1/runs/{training}/stop").status_code == 202
        wait_for(client, training, {"stopped"})
        before = listing(client)
        reference_losses = losses(client, reference["id"])
        uninterrupted = losses(client, training)  # what the training run did after the backup

    for name, target in (("from-s3", targets[0]), ("from-folder", targets[1])):
        new = studio(tmp_path / name, targets)
        done = restore.restore(
            engine=engine_for(new, target),
            snapshot_id="latest",
            data_dir=new.data_dir,
            database_url=None,
        )
        assert done.database == "sqlite" and done.files > 0
        with TestClient(create_app(new)) as client:
            sign_in(client)  # the accounts came back with their passwords
            now = listing(client)
            assert now["datasets"] == before["datasets"]
            assert [r[:2] for r in now["runs"]] == [r[:2] for r in before["runs"]]
            assert now["models"] == before["models"] and now["models"]
            assert now["model_details"] == before["model_details"]  # evaluations included
            states = {r["id"]: r["state"] for r in client.get("/api/v1/runs").json()}
            assert states[reference["id"]] == "completed" and states[paused] == "paused"
            # the run that was training at backup time is now an interrupted run
            interrupted = wait_for(client, training, {"interrupted"})
            assert "resume" in interrupted["allowed_actions"]
            if name == "from-s3":  # training both copies again proves nothing more
                assert client.post(f"/api/v1/runs/{paused}/resume").status_code == 202
                wait_for(client, paused, {"completed"})
                assert losses(client, paused) == reference_losses
                assert client.post(f"/api/v1/runs/{training}/resume").status_code == 202
                while client.get(f"/api/v1/runs/{training}").json()["step"] < len(uninterrupted):
                    time.sleep(0.05)
                client.post(f"/api/v1/runs/{training}/stop")
                wait_for(client, training, {"stopped"})
                assert losses(client, training)[: len(uninterrupted)] == uninterrupted
