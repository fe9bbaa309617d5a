"""Datasets belong to their importer: other members get 404, admins see all,
shared datasets (no owner) are readable by everyone, and nobody gets in unsigned."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL

ROWS = "\n".join(
    f'{{"question": "پرسش {i}؟", "answer": "پاسخ {i}.", "qid": {i}}}' for i in range(20)
)


def _upload(client: TestClient, name: str = "mine.jsonl") -> int:
    response = client.post("/api/v1/datasets", files={"file": (name, (ROWS + "\n").encode())})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _routes(ds: int) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/v1/datasets/{ds}"),
        ("GET", f"/api/v1/datasets/{ds}/preview"),
        ("GET", f"/api/v1/datasets/{ds}/stats"),
        ("GET", f"/api/v1/datasets/{ds}/report"),
        ("GET", f"/api/v1/datasets/{ds}/splits"),
        ("POST", f"/api/v1/datasets/{ds}/splits"),
        ("DELETE", f"/api/v1/datasets/{ds}"),
    ]


def test_another_members_dataset_does_not_exist_for_you(
    client: TestClient, member_client: TestClient, other_member_client: TestClient
) -> None:
    mine = _upload(member_client)
    assert member_client.get(f"/api/v1/datasets/{mine}").json()["owner_id"] is not None
    for method, path in _routes(mine):
        json = {"key": "qid"} if method == "POST" else None
        response = other_member_client.request(method, path, json=json)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"no dataset with id {mine}"  # same as a missing one
    assert other_member_client.get("/api/v1/datasets").json() == []
    assert [d["id"] for d in member_client.get("/api/v1/datasets").json()] == [mine]

    # the admin sees and handles everyone's
    assert [d["id"] for d in client.get("/api/v1/datasets").json()] == [mine]
    assert client.get(f"/api/v1/datasets/{mine}/stats").status_code == 200
    assert client.post(f"/api/v1/datasets/{mine}/splits", json={"key": "qid"}).status_code == 201

    # and the owner still does everything with it
    for method, path in _routes(mine):
        json = {"key": "qid"} if method == "POST" else None
        assert member_client.request(method, path, json=json).status_code < 300, path


def test_admins_datasets_are_theirs_too(client: TestClient, member_client: TestClient) -> None:
    admins = _upload(client)
    assert member_client.get(f"/api/v1/datasets/{admins}").status_code == 404
    assert member_client.get("/api/v1/datasets").json() == []


@pytest.mark.parametrize(
    "path",
    ["", "/1", "/1/preview", "/1/stats", "/1/report", "/1/splits", "/validate"],
)
def test_anonymous_gets_401_on_every_datasets_route(
    client: TestClient, anon_client: TestClient, path: str
) -> None:
    _upload(client)
    for method in ("GET", "POST", "DELETE"):
        response = anon_client.request(method, f"/api/v1/datasets{path}")
        if response.status_code == 405:
            continue
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    upload = anon_client.post("/api/v1/datasets", files={"file": ("a.jsonl", ROWS.encode())})
    assert upload.status_code == 401
    assert client.get("/api/v1/datasets").json()[0]["id"] == 1  # nothing was added


def test_public_routes_stay_public(anon_client: TestClient) -> None:
    assert anon_client.get("/healthz").status_code == 200
    assert anon_client.get("/readyz").status_code == 200
    assert anon_client.get("/").status_code == 200
    schema = anon_client.get("/openapi.json").json()
    assert "/api/v1/auth/login" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_the_shared_sample_is_read_only_for_members(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "s")  # imports the bundled sample
    with TestClient(create_app(settings)) as admin:
        add_account(settings, ADMIN, role="admin")
        add_account(settings, "mina")
        sign_in(admin)
        member = TestClient(admin.app)
        sign_in(member, "mina")
        (sample,) = member.get("/api/v1/datasets").json()
        assert sample["owner_id"] is None
        ds = sample["id"]
        assert member.get(f"/api/v1/datasets/{ds}/preview").status_code == 200
        assert (
            member.post(f"/api/v1/datasets/{ds}/splits", json={"key": "topic"}).status_code == 201
        )
        refused = member.delete(f"/api/v1/datasets/{ds}")
        assert refused.status_code == 403 and "only an admin" in refused.json()["detail"]
        assert admin.delete(f"/api/v1/datasets/{ds}").status_code == 204
        assert member.get("/api/v1/datasets").json() == []
        member.close()
