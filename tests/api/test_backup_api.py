"""The backup API against the real app, real restic and a folder target under tmp_path:
an admin backs up, lists the history and the snapshots, verifies and restores into a
new data folder; members get 403 and nobody 401 on every route; bad requests answer
4xx naming the problem; a target's secrets never leave the server."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lastedocation.settings import Settings

BACKUP = "/api/v1/backup"
JOBS = f"{BACKUP}/jobs"
ENDED = ("done", "failed", "cancelled")
ROWS = b'{"question": "\xd8\xb3\xd9\x84\xd8\xa7\xd9\x85", "answer": "b"}\n' * 20
MARKER = "not-for-your-eyes-7f3a9c"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A studio with a folder target, and a root admins may name for restores."""
    (tmp_path / "roots").mkdir()
    return Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        bundled_speech_model=False,
        server_roots=[tmp_path / "roots"],
        backup_targets=[{"name": "nas", "kind": "folder", "path": str(tmp_path / "nas")}],
    )


def secret_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def wait(client: TestClient, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"{JOBS}/{job_id}").json()
        if job["state"] in ENDED:
            return job
        time.sleep(0.1)
    raise AssertionError(f"backup job {job_id} did not end: {job}")


def start(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(JOBS, json={"target": "nas", **body})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["state"] == "queued" and job["trigger"] == "manual"
    return job


def backed_up(client: TestClient) -> dict[str, Any]:
    """A dataset, then a backup of the studio that holds it."""
    upload = client.post("/api/v1/datasets", files={"file": ("qa.jsonl", ROWS)})
    assert upload.status_code == 201, upload.text
    job = wait(client, start(client, kind="backup")["id"])
    assert job["state"] == "done", job
    return job


def test_backup_history_snapshots_verify_and_restore(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    overview = client.get(BACKUP).json()
    assert overview["tools"] == {"restic": True, "rclone": True}
    (nas,) = overview["targets"]
    assert nas["name"] == "nas" and nas["label"] == "folder" and nas["encrypted"] is False
    assert nas["where"] == str(tmp_path / "nas") and nas["keep_last"] == 7
    assert nas["standing"]["last_backup"] is None and nas["standing"]["next_due"] is None

    job = backed_up(client)
    assert job["snapshot_id"] and job["bytes_total"] > 0 and job["bytes_sent"] > 0
    assert job["duration_s"] > 0 and job["files"] > 0 and job["problems"] == []

    (listed,) = client.get(JOBS, params={"target": "nas"}).json()
    assert listed["id"] == job["id"] and listed["kind"] == "backup" and listed["state"] == "done"
    assert listed["bytes_total"] == job["bytes_total"] and listed["finished_at"]
    assert client.get(JOBS, params={"target": "elsewhere"}).json() == []
    standing = client.get(BACKUP).json()["targets"][0]["standing"]
    assert standing["last_backup"]["job_id"] == job["id"] and standing["last_failure"] is None

    snapshots = client.get(f"{BACKUP}/targets/nas/snapshots")
    assert snapshots.status_code == 200, snapshots.text
    (snap,) = snapshots.json()
    assert snap["id"].startswith(job["snapshot_id"]) and snap["short_id"] == snap["id"][:8]

    verified = wait(client, start(client, kind="verify")["id"])
    assert verified["state"] == "done" and verified["problems"] == [], verified
    assert verified["options"]["read_data"] is True
    pruned = wait(client, start(client, kind="prune")["id"])
    assert pruned["state"] == "done", pruned

    system = client.get("/api/v1/system").json()["backup"]["nas"]
    assert system["last_state"] == "done" and system["last_failure"] is None
    assert system["last_backup_at"] and system["next_due"] is None

    folder = tmp_path / "roots" / "restored"
    folder.mkdir()  # empty: allowed
    restore = start(client, kind="restore", snapshot=snap["short_id"], folder=str(folder))
    assert restore["options"]["folder"] == str(folder)
    restored = wait(client, restore["id"])
    assert restored["state"] == "done", restored
    assert (folder / "studio.db").is_file()
    records = list(folder.glob("datasets/*/records.jsonl"))
    assert len(records) == 1 and "سلام" in records[0].read_text(encoding="utf-8")
    with sqlite3.connect(folder / "studio.db") as db:
        assert db.execute("SELECT username FROM users").fetchall() == [("admin",)]
    assert len(client.get("/api/v1/datasets").json()) == 1  # the live studio is as it was


def test_restore_folder_is_checked(client: TestClient, tmp_path: Path) -> None:
    outside = client.post(
        JOBS, json={"kind": "restore", "target": "nas", "snapshot": "latest",
                    "folder": str(tmp_path / "elsewhere")},
    )  # fmt: skip
    assert outside.status_code == 400, outside.text
    assert outside.json()["field"] == "folder" and "outside the folders" in outside.json()["detail"]

    live = client.post(
        JOBS, json={"kind": "restore", "snapshot": "latest", "folder": str(tmp_path / "studio")}
    )
    assert live.status_code == 400 and "data folder" in live.json()["detail"]

    busy = tmp_path / "roots" / "busy"
    busy.mkdir()
    (busy / "something").write_text("here")
    full = client.post(JOBS, json={"kind": "restore", "snapshot": "latest", "folder": str(busy)})
    assert full.status_code == 409, full.text
    assert str(busy) in full.json()["detail"] and full.json()["folder"] == str(busy)

    for body, field in (
        ({"kind": "restore", "folder": str(tmp_path / "roots" / "x")}, "snapshot"),
        (
            {"kind": "restore", "snapshot": "../../etc", "folder": str(tmp_path / "roots")},
            "snapshot",
        ),
        ({"kind": "restore", "snapshot": "latest"}, "folder"),
        ({"kind": "backup", "snapshot": "latest"}, "snapshot"),
        ({"kind": "backup", "read_data": False}, "read_data"),
    ):
        refused = client.post(JOBS, json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["field"] == field, refused.text
    assert client.get(JOBS).json() == []  # nothing was queued


def test_bad_requests(client: TestClient) -> None:
    unknown = client.post(JOBS, json={"kind": "backup", "target": "attic"})
    assert unknown.status_code == 404
    assert "'attic'" in unknown.json()["detail"] and "nas" in unknown.json()["detail"]
    assert client.get(f"{BACKUP}/targets/attic/snapshots").status_code == 404
    bad_kind = client.post(JOBS, json={"kind": "format-the-disk", "target": "nas"})
    assert bad_kind.status_code == 422 and bad_kind.json()["problems"][0]["field"] == "kind"
    assert client.get(f"{JOBS}/999").status_code == 404
    assert client.post(f"{JOBS}/999/cancel").status_code == 404
    assert client.get(f"{JOBS}/999/events").status_code == 404
    assert client.get(JOBS, params={"limit": 0}).status_code == 422


def test_same_job_twice_is_refused_and_a_queued_one_cancels(client: TestClient) -> None:
    app = client.app
    app.state.backups.stop()  # type: ignore[attr-defined]  # the worker takes nothing now
    first = start(client, kind="backup")
    again = client.post(JOBS, json={"kind": "backup", "target": "nas"})
    assert again.status_code == 409 and again.json()["job_id"] == first["id"]
    cancelled = client.post(f"{JOBS}/{first['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"{JOBS}/{first['id']}/cancel").status_code == 409


def test_events_stream_until_the_job_ends_and_resume(client: TestClient) -> None:
    job = backed_up(client)
    with client.stream("GET", f"{JOBS}/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        frames = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    types = [frame["type"] for frame in frames]
    assert types[0] == "state" and frames[0]["state"] == "queued"
    assert "step" in types and "retention" in types
    assert frames[-1]["type"] == "state" and frames[-1]["state"] == "done"
    assert frames[-1]["snapshot_id"] == job["snapshot_id"]
    seqs = [frame["seq"] for frame in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    middle = seqs[len(seqs) // 2]
    with client.stream(
        "GET", f"{JOBS}/{job['id']}/events", headers={"Last-Event-ID": str(middle)}
    ) as stream:
        rest = [
            json.loads(line[6:])["seq"] for line in stream.iter_lines() if line.startswith("data: ")
        ]
    assert rest == [seq for seq in seqs if seq > middle]


def test_members_get_403_and_nobody_401(
    client: TestClient, member_client: TestClient, anon_client: TestClient
) -> None:
    job = backed_up(client)
    routes = [
        ("GET", BACKUP, None),
        ("GET", JOBS, None),
        ("POST", JOBS, {"kind": "backup", "target": "nas"}),
        ("GET", f"{JOBS}/{job['id']}", None),
        ("POST", f"{JOBS}/{job['id']}/cancel", None),
        ("GET", f"{JOBS}/{job['id']}/events", None),
        ("GET", f"{BACKUP}/targets/nas/snapshots", None),
    ]
    for method, path, body in routes:
        member = member_client.request(method, path, json=body)
        assert member.status_code == 403, (method, path, member.text)
        anonymous = anon_client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
    assert "backup" not in member_client.get("/api/v1/system").json()
    assert len(client.get(JOBS).json()) == 1  # the member queued nothing


class TestSecrets:
    """An S3 target (nothing listens at its endpoint) with a secret key and a passphrase."""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        keys = tmp_path / "keys"
        keys.mkdir()
        return Settings(
            data_dir=tmp_path / "studio",
            import_sample_dataset=False,
            bundled_speech_model=False,
            backup_targets=[
                {
                    "name": "cloud",
                    "kind": "s3",
                    "endpoint": "http://127.0.0.1:9",
                    "path": "bucket/studio",
                    "access_key_id": "AKIAEXAMPLE",
                    "secret_access_key_file": str(secret_file(keys, "s3.secret", MARKER)),
                    "passphrase_file": str(secret_file(keys, "passphrase", MARKER + "-pass")),
                    "daily_at": "03:00",
                    "timeout_s": 3,
                }
            ],
        )

    def test_secrets_never_leave_the_server(self, client: TestClient, tmp_path: Path) -> None:
        overview = client.get(BACKUP)
        assert overview.status_code == 200
        (cloud,) = overview.json()["targets"]
        assert cloud["label"] == "S3" and cloud["encrypted"] is True
        assert cloud["where"] == "http://127.0.0.1:9 bucket/studio"
        assert cloud["schedule"] == "daily at 03:00 UTC" and cloud["daily_at"] == "03:00"
        assert cloud["standing"]["next_due"] is not None

        job = wait(client, start_cloud(client)["id"], timeout=60)
        assert job["state"] == "failed" and "S3" in job["message"] and "cloud" in job["message"]
        down = client.get(f"{BACKUP}/targets/cloud/snapshots")
        assert down.status_code == 502 and down.json()["target"] == "cloud", down.text
        assert "S3" in down.json()["detail"]
        system = client.get("/api/v1/system").json()["backup"]["cloud"]
        assert system["last_state"] == "failed" and system["last_failure"] == job["message"]

        answers = [
            overview.text,
            client.get(JOBS).text,
            client.get(f"{JOBS}/{job['id']}").text,
            down.text,
            client.get("/api/v1/system").text,
        ]
        with client.stream("GET", f"{JOBS}/{job['id']}/events") as stream:
            answers.append("".join(stream.iter_text()))
        for text in answers:
            assert MARKER not in text
            assert str(tmp_path / "keys") not in text and "s3.secret" not in text


def start_cloud(client: TestClient) -> dict[str, Any]:
    response = client.post(JOBS, json={"kind": "backup", "target": "cloud"})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job
