"""Every route in the OpenAPI schema, walked as anonymous, member A, member B and
admin: 401 without credentials, 403 for members on admin routes, 404 for another
member's datasets, runs and models."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import LlamaConfig, LlamaForCausalLM

from lastedocation.settings import Settings
from lastedocation.speech.models import register_bundled_once
from tests.conftest import add_account, sign_in
from tests.speech.conftest import espeak_wav

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL

JOBS = "/api/v1/speech/transcriptions"

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),  # not an account's route: a token or loopback (test_metrics.py)
    ("POST", "/api/v1/auth/setup"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/datasets/{dataset_id}/splits"): {"key": None},
    ("POST", "/api/v1/runs/{run_id}/restore"): {"step": 1},
    ("POST", "/api/v1/auth/tokens"): {"name": "x"},
    ("POST", "/api/v1/auth/password"): {"current_password": "x" * 12, "new_password": "y" * 12},
    ("POST", "/api/v1/users"): {"username": "z", "password": "z" * 12, "role": "member"},
    ("POST", "/api/v1/models/register"): {"path": "/nonexistent"},
    ("POST", "/api/v1/models/import/hub"): {"repo_id": "someone/model"},
    ("POST", "/api/v1/models/{model_id}/export"): {"archive": None},
    ("POST", "/api/v1/models/{model_id}/push"): {"repo_id": "a/b", "token": "hf_x"},
    ("POST", "/api/v1/models/{model_id}/evaluations"): {"dataset_id": 1},
    ("POST", "/api/v1/backup/jobs"): {"kind": "backup"},
}
ADMIN_ONLY = ("/api/v1/users", "/api/v1/models/register", "/api/v1/backup")
# an admin may get 404 here for a reason other than ownership: nothing exported yet
MAY_NOT_EXIST = {
    "/api/v1/models/{model_id}/export/archive",
    # no backup target is configured here, so no backup job and no snapshots
    "/api/v1/backup/jobs/{job_id}",
    "/api/v1/backup/jobs/{job_id}/events",
    "/api/v1/backup/targets/{name}/snapshots",
}


def _member_model(member: TestClient, tmp_path: Path) -> int:
    """A tiny model folder (safetensors), uploaded as an archive by the member."""
    folder = tmp_path / "tiny-model"
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    archive = shutil.make_archive(str(tmp_path / "tiny-model"), "zip", tmp_path, "tiny-model")
    response = member.post(
        "/api/v1/models/import/archive",
        files={"file": ("tiny-model.zip", Path(archive).read_bytes())},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _member_transcription(member: TestClient, tmp_path: Path) -> int:
    """A job of the member's, on the bundled Whisper base, cancelled at once (ended)."""
    app = member.app
    with app.state.sessions() as session:  # type: ignore[attr-defined]
        register_bundled_once(session=session, settings=app.state.settings)  # type: ignore[attr-defined]
    clip = espeak_wav("سلام", tmp_path / "clip.wav").read_bytes()
    queued = member.post(JOBS, files={"file": ("clip.wav", clip)})
    assert queued.status_code == 202, queued.text
    job_id = int(queued.json()["id"])
    member.post(f"{JOBS}/{job_id}/cancel")
    for _ in range(600):
        if member.get(f"{JOBS}/{job_id}").json()["state"] in ("done", "failed", "cancelled"):
            return job_id
        time.sleep(0.05)
    raise AssertionError("the transcription did not end")


def _routes(client: TestClient) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return sorted(
        (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method in methods
        if method in ("get", "post", "put", "patch", "delete")
    )


@pytest.mark.slow
def test_every_route_answers_by_role(
    client: TestClient,
    member_client: TestClient,
    other_member_client: TestClient,
    anon_client: TestClient,
    settings: Settings,
    tmp_path: Path,
) -> None:
    rows = (
        b'{"question": "a", "answer": "b", "g": 1}\n{"question": "c", "answer": "d", "g": 2}\n' * 20
    )
    upload = member_client.post("/api/v1/datasets", files={"file": ("a.jsonl", rows)})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    config = {"model": {"vocab_size": 300}, "training": {"seq_len": 32, "max_steps": 1}}
    run = member_client.post("/api/v1/runs", json={"dataset_id": dataset_id, **config})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    member_client.post(f"/api/v1/runs/{run_id}/stop")
    ids = {"dataset_id": dataset_id, "run_id": run_id, "split_id": 1, "token_id": 1}
    ids["user_id"] = add_account(settings, "victim")
    ids["model_id"] = _member_model(member_client, tmp_path)
    ids["transcription_id"] = _member_transcription(member_client, tmp_path)
    ids["voice_id"] = "nope"
    ids["row"] = 1
    ids["job_id"] = 1
    ids["name"] = "nas"

    checked = 0
    for method, path in _routes(client):
        url = path.format(**ids)
        body = BODIES.get((method, path))
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        if (method, path) in PUBLIC:
            continue
        anonymous = anon_client.request(method, url, **kwargs)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        if path.startswith(ADMIN_ONLY):
            member = member_client.request(method, url, **kwargs)
            assert member.status_code == 403, (method, path, member.text)
        if any(
            key in path for key in ("{dataset_id}", "{run_id}", "{model_id}", "{transcription_id}")
        ):
            other = other_member_client.request(method, url, **kwargs)
            assert other.status_code == 404, (method, path, other.text)
        if method == "GET":
            admin = client.get(url)
            refused = (401, 403, 500) if path in MAY_NOT_EXIST else (401, 403, 404, 500)
            assert admin.status_code not in refused, (path, admin.text)
        checked += 1
    assert checked >= 25

    # a run config naming the member's model folder, run folder or dataset file by path
    data_dir = settings.data_dir
    own = other_member_client.post(
        "/api/v1/datasets", files={"file": ("b.jsonl", rows)}, params={"name": "b"}
    ).json()["id"]
    for config in (
        {"model": {"source": "local", "path": str(data_dir / "models" / f"{ids['model_id']:06d}")}},
        {"model": {"source": "local", "path": str(data_dir / "runs" / f"{run_id:06d}" / "base")}},
        {"model": {"source": "registry", "model_id": ids["model_id"]}},
        {"data": {"validation": str(next(data_dir.glob("datasets/*/records.jsonl")))}},
        {"data": {"validation_dataset_id": dataset_id}},
    ):
        refused = other_member_client.post("/api/v1/runs", json={"dataset_id": own, **config})
        assert refused.status_code == 400, (config, refused.text)
        assert str(data_dir) not in refused.text

    # the owner deleted: nothing of theirs becomes visible to the others, nor to an
    # account created after that
    owner = member_client.get("/api/v1/auth/me").json()["id"]
    assert client.delete(f"/api/v1/users/{owner}").status_code == 204
    newcomer = TestClient(client.app)
    add_account(settings, "newcomer")
    sign_in(newcomer, "newcomer")
    for method, path in _routes(client):
        if not any(
            key in path for key in ("{dataset_id}", "{run_id}", "{model_id}", "{transcription_id}")
        ):
            continue
        body = BODIES.get((method, path))
        kwargs = {"json": body} if body is not None else {}
        for member in (other_member_client, newcomer):
            answer = member.request(method, path.format(**ids), **kwargs)
            assert answer.status_code == 404, (method, path, answer.text)
    for member in (other_member_client, newcomer):  # only the shared speech model
        assert [m["id"] for m in member.get("/v1/models").json()["data"]] == ["whisper-base"]
