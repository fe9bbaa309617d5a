"""A member as an attacker of the others: run configs that name server paths or other
members' objects, an account deleted under its models, forged CSRF pairs, and
server paths in answers. Each case was an open door before (see the security issue)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.db import make_engine, migrate
from lastedocation.runs.models import Run
from lastedocation.settings import Settings
from tests.conftest import PERCQA, add_account, sign_in
from tests.inference.test_generate import untrained_model
from tests.web.conftest import browser_sign_in

TINY = {"training": {"seq_len": 64, "batch_size": 2, "max_steps": 2, "threads": 1}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Admins may name folders under tmp_path/server (never the data folder)."""
    (tmp_path / "server").mkdir()
    return Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        server_roots=[tmp_path / "server"],
        supervisor_interval_s=0.1,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return untrained_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", context=128)


def upload_dataset(client: TestClient, rows: int = 40, name: str = "data.jsonl") -> int:
    data = b"\n".join(PERCQA.read_bytes().splitlines()[:rows]) + b"\n"
    response = client.post("/api/v1/datasets", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def upload_model(client: TestClient, folder: Path, tmp_path: Path, name: str) -> int:
    archive = shutil.make_archive(str(tmp_path / name), "zip", folder.parent, folder.name)
    response = client.post(
        "/api/v1/models/import/archive",
        files={"file": (f"{name}.zip", Path(archive).read_bytes())},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def problems(response: Any) -> dict[str, str]:
    assert response.status_code == 400, response.text
    return {p["field"]: p["message"] for p in response.json()["problems"]}


def records_of(settings: Settings) -> list[Path]:
    return sorted(settings.datasets_dir.glob("*/records.jsonl"))


def test_run_configs_name_nothing_on_the_server(
    member_client: TestClient,
    other_member_client: TestClient,
    settings: Settings,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    mina, babak = member_client, other_member_client
    mina_data = upload_dataset(mina)
    mina_model = upload_model(mina, tiny_model, tmp_path, "mina-model")
    (mina_records,) = records_of(settings)
    babak_data = upload_dataset(babak, rows=30)
    mina_folder = settings.data_dir / "models" / f"{mina_model:06d}"
    secret = tmp_path / "secret.json"
    secret.write_text('{"password_of_the_ceo": 1}', encoding="utf-8")
    attempts: dict[str, dict[str, Any]] = {
        "model.path": {"model": {"source": "local", "path": str(mina_folder)}},
        "model.model_id": {"model": {"source": "registry", "model_id": mina_model}},
        "data.validation": {"data": {"validation": str(mina_records)}},
        "data.validation_dataset_id": {"data": {"validation_dataset_id": mina_data}},
        "model.cache_dir": {"model": {"source": "hub", "hub_id": "a/b", "cache_dir": "/tmp"}},
        "data.train": {"data": {"train": str(mina_records)}},
    }
    for field, config in attempts.items():
        answer = babak.post("/api/v1/runs", json={"dataset_id": babak_data, **config})
        found = problems(answer)
        assert field in found, (field, found)
        assert str(settings.data_dir) not in answer.text
    # a file outside the data folder: refused without reading it, so nothing of it leaks
    leaked = babak.post(
        "/api/v1/runs", json={"dataset_id": babak_data, "data": {"validation": str(secret)}}
    )
    assert "data.validation" in problems(leaked) and "password_of_the_ceo" not in leaked.text
    assert babak.get("/api/v1/runs").json() == []  # nothing was queued

    # the owner names the same objects by id, and the run keeps ids, not paths
    mine = mina.post(
        "/api/v1/runs",
        json={
            "dataset_id": mina_data,
            "model": {"source": "registry", "model_id": mina_model},
            "data": {"validation_dataset_id": mina_data},
            **TINY,
        },
    )
    assert mine.status_code == 201, mine.text
    config = mine.json()["config"]
    assert config["model"]["source"] == "registry" and config["model"]["model_id"] == mina_model
    assert config["data"]["validation_dataset_id"] == mina_data
    assert "path" not in config["model"] and "train" not in config["data"]
    assert str(settings.data_dir) not in mine.text
    mina.post(f"/api/v1/runs/{mine.json()['id']}/stop")


def test_admins_name_folders_only_under_the_allowed_roots(
    client: TestClient, settings: Settings, tiny_model: Path, tmp_path: Path
) -> None:
    data = upload_dataset(client)
    allowed = tmp_path / "server" / "tiny"
    shutil.copytree(tiny_model, allowed)
    run = client.post(
        "/api/v1/runs",
        json={"dataset_id": data, "model": {"source": "local", "path": str(allowed)}, **TINY},
    )
    assert run.status_code == 201, run.text
    client.post(f"/api/v1/runs/{run.json()['id']}/stop")
    inside = upload_model(client, tiny_model, tmp_path, "inside")
    data_folder = settings.data_dir / "models" / f"{inside:06d}"
    link = tmp_path / "server" / "link"
    link.symlink_to(data_folder)  # under a root, but it resolves into the data folder
    for path, says in (
        (data_folder, "inside the studio's data folder"),
        (link, "inside the studio's data folder"),
        (tiny_model, "outside the folders admins may name"),
        (tmp_path / "server" / "missing", "no folder at"),
    ):
        answer = client.post(
            "/api/v1/runs",
            json={"dataset_id": data, "model": {"source": "local", "path": str(path)}},
        )
        assert says in problems(answer)["model.path"], (path, answer.text)
        registered = client.post("/api/v1/models/register", json={"path": str(path)})
        assert registered.status_code == 400 and says in registered.json()["detail"]


def test_a_deleted_account_hands_everything_to_the_admin(
    client: TestClient,
    member_client: TestClient,
    other_member_client: TestClient,
    app: FastAPI,
    settings: Settings,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    mina, babak = member_client, other_member_client
    data = upload_dataset(mina)
    model = upload_model(mina, tiny_model, tmp_path, "private-model")
    run = mina.post("/api/v1/runs", json={"dataset_id": data, **TINY}).json()["id"]
    mina.post(f"/api/v1/runs/{run}/stop")
    mina_id = mina.get("/api/v1/auth/me").json()["id"]
    assert client.delete(f"/api/v1/users/{mina_id}").status_code == 204

    admin_id = client.get("/api/v1/auth/me").json()["id"]
    assert client.get(f"/api/v1/models/{model}").json()["owner_id"] == admin_id
    assert client.get(f"/api/v1/datasets/{data}").json()["owner_id"] == admin_id
    assert client.get(f"/api/v1/runs/{run}").status_code == 200
    cyrus_id = add_account(settings, "cyrus")  # an account created after the deletion
    assert cyrus_id > mina_id  # ids are never reused
    with TestClient(app) as cyrus:
        sign_in(cyrus, "cyrus")
        for member in (babak, cyrus):
            assert member.get("/api/v1/models").json() == []
            assert member.get("/v1/models").json()["data"] == []
            assert member.get(f"/api/v1/models/{model}").status_code == 404
            assert member.get(f"/api/v1/datasets/{data}").status_code == 404
            assert member.get(f"/api/v1/runs/{run}").status_code == 404
            chat = member.post(
                "/v1/chat/completions",
                json={"model": "private-model", "messages": [{"role": "user", "content": "x"}]},
            )
            assert chat.status_code == 404, chat.text
            exported = member.post(f"/api/v1/models/{model}/export", json={"archive": None})
            assert exported.status_code == 404


def test_a_deleted_models_exports_go_with_it(
    client: TestClient, settings: Settings, tiny_model: Path, tmp_path: Path
) -> None:
    model = upload_model(client, tiny_model, tmp_path, "gone")
    assert client.post(f"/api/v1/models/{model}/export", json={"archive": "zip"}).is_success
    assert client.delete(f"/api/v1/models/{model}").status_code == 204
    assert not (settings.data_dir / "exports" / f"{model:06d}").exists()


def test_csrf_tokens_are_bound_to_the_session(client: TestClient, app: FastAPI) -> None:
    with TestClient(app) as first, TestClient(app) as second:
        browser_sign_in(first)
        token = first.cookies["ldt_csrf"]
        ok = first.post("/api/v1/auth/tokens", json={"name": "a"}, headers={"X-CSRF-Token": token})
        assert ok.status_code == 201, ok.text
        # any equal pair of cookie and header used to pass
        session_cookie = first.cookies["ldt_session"]
        first.cookies.clear()
        first.cookies.set("ldt_session", session_cookie)
        first.cookies.set("ldt_csrf", "forged-by-whoever-can-set-a-cookie")
        forged = first.post(
            "/api/v1/auth/tokens",
            json={"name": "b"},
            headers={"X-CSRF-Token": "forged-by-whoever-can-set-a-cookie"},
        )
        assert forged.status_code == 403 and forged.json()["rule"] == "csrf"
        # a new sign-in gets a new token; the first session's is refused there
        browser_sign_in(second)
        assert second.cookies["ldt_csrf"] != token
        other = second.post(
            "/api/v1/auth/tokens", json={"name": "c"}, headers={"X-CSRF-Token": token}
        )
        assert other.status_code == 403
        page = second.get("/settings").text
        assert second.cookies["ldt_csrf"] in page  # the page carries its session's token


def _wait_final(client: TestClient, run_id: int, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(client.get(f"/api/v1/runs/{run_id}").json()["state"])
        if state in ("completed", "failed", "stopped"):
            return state
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not end")


def _wait_completed(client: TestClient, run_id: int) -> None:
    assert _wait_final(client, run_id) == "completed"


@pytest.mark.slow
def test_no_answer_to_a_member_holds_a_server_path(
    client: TestClient, member_client: TestClient, settings: Settings
) -> None:
    """A member's whole journey, then every GET route of the schema with their ids: no
    answer contains the data folder's path (nor the admin-only disk path)."""
    mina = member_client
    data = upload_dataset(mina, rows=60)
    answers = [mina.get(f"/api/v1/datasets/{data}").text]
    created = mina.post("/api/v1/runs", json={"dataset_id": data, **TINY})
    assert created.status_code == 201, created.text
    run = created.json()["id"]
    _wait_completed(mina, run)
    (model,) = [m["id"] for m in mina.get("/api/v1/models").json()]
    exported = mina.post(f"/api/v1/models/{model}/export", json={"archive": "zip"})
    assert exported.status_code == 200, exported.text
    assert set(exported.json()) >= {"name", "files", "smoke_test", "archive"}
    answers.append(exported.text)
    ids = {"dataset_id": data, "run_id": run, "model_id": model, "split_id": 1, "token_id": 1}
    ids |= {"row": 1, "transcription_id": 1, "voice_id": "espeak-fa", "job_id": 1, "name": "nas"}
    schema = mina.get("/openapi.json").json()
    for path, methods in schema["paths"].items():
        if "get" not in methods or path.endswith("/events") or "{user_id}" in path:
            continue
        answer = mina.get(path.format(**ids), params={"ids": [model, model]})
        answers.append(answer.text)
    answers.append(mina.get("/v1/models").text)
    everything = "\n".join(answers)
    for secret in {str(settings.data_dir), str(settings.data_dir.resolve())}:
        assert secret not in everything
    system = mina.get("/api/v1/system").json()
    assert system["disk"]["path"] is None
    assert client.get("/api/v1/system").json()["disk"]["path"] == str(settings.data_dir)
    owned = mina.get("/v1/models").json()["data"]
    assert [m["owned_by"] for m in owned] == ["mina"]
    detail = mina.get(f"/api/v1/models/{model}").json()
    assert detail["base_model"] == "scratch:llama-tiny"


def test_the_upgrade_drops_paths_and_ids_are_never_reused(tmp_path: Path) -> None:
    """A studio from before this revision: its runs' configs held `data.train` (a server
    path), and SQLite handed a deleted row's id to the next row. The upgrade rebuilds the
    tables without losing a token to a foreign-key action."""
    settings = Settings(data_dir=tmp_path / "studio", import_sample_dataset=False)
    engine = make_engine(settings)
    migrate(engine, "0004")
    with engine.begin() as db:
        db.exec_driver_sql(
            "INSERT INTO users (id, username, password_hash, role, created_at, "
            "password_changed_at) VALUES (1, 'admin', 'x', 'admin', '2026-01-01', '2026-01-01'),"
            " (2, 'gone', 'x', 'member', '2026-01-01', '2026-01-01')"
        )
        db.exec_driver_sql(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at, revoked) "
            "VALUES (1, 't', 'h', 'p', '2026-01-01', 0)"
        )
        config = '{"data": {"train": "/srv/studio/datasets/abc/records.jsonl"}, "model": {}}'
        db.exec_driver_sql(
            "INSERT INTO runs (name, state, config, folder, owner_id, step, last_seq, "
            f"events_offset, created_at) VALUES ('r', 'stopped', '{config}', 'runs/000001', 1,"
            " 0, 0, 0, '2026-01-01')"
        )
        db.exec_driver_sql("DELETE FROM users WHERE id = 2")
    migrate(engine)
    with engine.begin() as db:
        stored = db.exec_driver_sql("SELECT config FROM runs").scalar_one()
        assert "train" not in stored and "/srv/studio" not in stored
        assert db.exec_driver_sql("SELECT count(*) FROM api_tokens").scalar_one() == 1
        db.exec_driver_sql("DELETE FROM api_tokens")
        db.exec_driver_sql("DELETE FROM runs")
        db.exec_driver_sql("DELETE FROM users WHERE id = 1")  # the newest account, gone
    engine.dispose()
    assert add_account(settings, "newcomer", role="admin") == 2  # not 1: that was an account


def test_messages_from_libraries_do_not_name_the_data_folder(
    member_client: TestClient, settings: Settings, tiny_model: Path, tmp_path: Path
) -> None:
    """A model whose tokenizer went missing: the library's error names the folder by its
    path; the answer names it by a mark instead."""
    data = upload_dataset(member_client)
    model = upload_model(member_client, tiny_model, tmp_path, "broken")
    folder = settings.data_dir / "models" / f"{model:06d}"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    answer = member_client.post(
        "/api/v1/runs",
        json={"dataset_id": data, "model": {"source": "registry", "model_id": model}, **TINY},
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert str(settings.data_dir) not in answer.text


def test_an_admin_may_delete_an_account_with_everything_it_owned(
    client: TestClient,
    member_client: TestClient,
    app: FastAPI,
    settings: Settings,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    data = upload_dataset(member_client)
    model = upload_model(member_client, tiny_model, tmp_path, "purged")
    run = member_client.post("/api/v1/runs", json={"dataset_id": data, **TINY}).json()["id"]
    member_client.post(f"/api/v1/runs/{run}/stop")
    _wait_final(member_client, run)  # the supervisor may have started it: stopping takes a moment
    owner = member_client.get("/api/v1/auth/me").json()["id"]
    with app.state.sessions() as session:  # as if the supervisor had started it
        row = session.get(Run, run)
        state = row.state
        row.state = "running"
        session.commit()
    busy = client.delete(f"/api/v1/users/{owner}", params={"delete_owned": True})
    assert busy.status_code == 409 and busy.json()["runs"] == [run]
    assert client.get(f"/api/v1/models/{model}").status_code == 200  # nothing went
    with app.state.sessions() as session:
        session.get(Run, run).state = state
        session.commit()
    gone = client.delete(f"/api/v1/users/{owner}", params={"delete_owned": True})
    assert gone.status_code == 204, gone.text
    for path in (f"/models/{model}", f"/datasets/{data}", f"/runs/{run}"):
        assert client.get(f"/api/v1{path}").status_code == 404, path
    assert not (settings.data_dir / "models" / f"{model:06d}").exists()
    assert not (settings.data_dir / "runs" / f"{run:06d}").exists()
    assert list(settings.datasets_dir.glob("*/records.jsonl")) == []
