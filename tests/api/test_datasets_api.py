"""The dataset API end to end, on a real SQLite database and data folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in


def _upload(client: TestClient, filename: str, data: bytes, **params: Any) -> Any:
    return client.post("/api/v1/datasets", params=params, files={"file": (filename, data)})


def test_percqa_imports_previews_splits_and_deletes(
    client: TestClient, settings: Settings, percqa: Path
) -> None:
    response = _upload(client, "train.jsonl", percqa.read_bytes(), name="PerCQA")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["rows"] == 9638 and dataset["rows_dropped"] == 0
    assert dataset["data_format"] == "qa" and dataset["report"]["problems_total"] == 0
    assert "question" in dataset["detection_reason"]
    ds = dataset["id"]

    stats = client.get(f"/api/v1/datasets/{ds}/stats").json()
    assert stats["rows"] == 9638
    assert client.get(f"/api/v1/datasets/{ds}/report").json()["report"]["ok"] is True

    lines = percqa.read_text(encoding="utf-8").splitlines()
    page = client.get(f"/api/v1/datasets/{ds}/preview", params={"offset": 1234, "limit": 3})
    assert page.status_code == 200 and page.json()["total"] == 9638
    rows = page.json()["rows"]
    for i, row in enumerate(rows):
        original = json.loads(lines[1234 + i])
        assert row["row"] == 1235 + i
        assert row["messages"][0]["content"] == original["question"]  # ZWNJ and all, intact
        assert row["messages"][1]["content"] == original["answer"]
        assert row["meta"] == {"qid": original["qid"], "cid": original["cid"]}
    assert (
        client.get(f"/api/v1/datasets/{ds}/preview", params={"offset": 9638}).json()["rows"] == []
    )

    split = client.post(
        f"/api/v1/datasets/{ds}/splits", json={"key": "qid", "validation_fraction": 0.1, "seed": 7}
    )
    assert split.status_code == 201, split.text
    body = split.json()
    assert body["train_rows"] + body["validation_rows"] == 9638
    all_qids = {json.loads(line)["qid"] for line in lines}
    assert body["train_groups"] + body["validation_groups"] == len(all_qids)
    folder = settings.datasets_dir / dataset["sha256"] / "splits"
    (split_dir,) = folder.iterdir()

    def qids(name: str) -> set[Any]:
        text = (split_dir / name).read_text(encoding="utf-8")
        return {json.loads(line)["meta"]["qid"] for line in text.splitlines()}

    assert not qids("train.jsonl") & qids("validation.jsonl")
    assert len(client.get(f"/api/v1/datasets/{ds}/splits").json()) == 1

    assert client.delete(f"/api/v1/datasets/{ds}").status_code == 204
    assert client.get(f"/api/v1/datasets/{ds}").status_code == 404
    assert not (settings.datasets_dir / dataset["sha256"]).exists()


def test_identical_content_is_stored_once(client: TestClient, settings: Settings) -> None:
    data = '{"question": "سلام؟", "answer": "درود."}\n'.encode()
    first = _upload(client, "a.jsonl", data).json()
    second = _upload(client, "b.jsonl", data).json()
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    folder = settings.datasets_dir / first["sha256"]
    client.delete(f"/api/v1/datasets/{first['id']}")
    assert folder.is_dir()
    client.delete(f"/api/v1/datasets/{second['id']}")
    assert not folder.exists()
    assert client.get("/api/v1/datasets").json() == []


def _problems(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "dataset_invalid"
    return list(body["report"]["problems"])


@pytest.mark.parametrize(
    ("name", "data", "row", "field", "kind"),
    [
        ("utf.jsonl", b'{"question": "ok", "answer": "ok"}\n{"question": "\xc3\x28", "answer": "x"}\n', 2, None, "bad_utf8"),
        ("trunc.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "a", "answ', 2, None, "truncated"),
        ("cut.json", b'[{"question": "a", "answer": "b"}, {"question": "c", "ans', 2, None, "truncated"),
        ("missing.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "a"}\n', 2, "answer", "missing_field"),
        ("empty.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "", "answer": "b"}\n', 2, "question", "empty_field"),
        ("utf.csv", b'question,answer\nok,ok\n\xff\xfe,x\n', 3, "question", "bad_utf8"),
        ("empty.csv", b"", None, None, "empty_file"),
        ("zero.jsonl", b"", None, None, "empty_file"),
    ],
)  # fmt: skip
def test_adversarial_files_name_row_field_and_problem(
    client: TestClient, name: str, data: bytes, row: int | None, field: str | None, kind: str
) -> None:
    problems = _problems(_upload(client, name, data))
    assert (problems[0]["row"], problems[0]["field"], problems[0]["kind"]) == (row, field, kind)
    assert problems[0]["message"]
    assert client.get("/api/v1/datasets").json() == []


def test_csv_with_bom_and_quoted_newlines_imports(client: TestClient) -> None:
    data = '\ufeffprompt,response\r\n"خط یک\nخط دو",پاسخ\r\nسؤال,"پاسخ، با ویرگول"\r\n'.encode()
    response = _upload(client, "bom.csv", data)
    assert response.status_code == 201, response.text
    assert response.json()["question_field"] == "prompt"
    rows = client.get(f"/api/v1/datasets/{response.json()['id']}/preview").json()["rows"]
    assert rows[0]["messages"][0]["content"] == "خط یک\nخط دو"
    assert rows[1]["messages"][1]["content"] == "پاسخ، با ویرگول"


def test_drop_invalid_imports_the_good_rows_and_counts_the_rest(client: TestClient) -> None:
    lines = [json.dumps({"question": f"س{i}", "answer": f"ج{i}"}) for i in range(30)]
    lines[4] = '{"question": "x"}'
    lines[9] = "{broken"
    data = ("\n".join(lines) + "\n").encode()
    assert _upload(client, "d.jsonl", data).status_code == 422
    response = _upload(client, "d.jsonl", data, drop_invalid=True)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 28 and body["rows_dropped"] == 2
    assert body["report"]["problems_total"] == 2


def test_report_shows_at_most_the_limit_and_counts_all(client: TestClient) -> None:
    data = b'{"question": "a", "answer": "b"}\n' + b'{"question": "a"}\n' * 50
    body = _upload(client, "many.jsonl", data).json()
    assert body["report"]["problems_total"] == 50 and body["report"]["problems_shown"] == 20
    assert len(body["report"]["problems"]) == 20
    assert "50 of 51 rows" in body["detail"]


def test_path_in_file_name_is_refused_and_nothing_is_written(
    client: TestClient, settings: Settings
) -> None:
    for name in ("../../evil.jsonl", "..\\evil.jsonl", "/etc/passwd"):
        response = _upload(client, name, b'{"question": "a", "answer": "b"}\n')
        assert response.status_code == 400, response.text
        assert "path" in response.json()["detail"]
    assert not (settings.data_dir.parent / "evil.jsonl").exists()
    assert list(settings.tmp_dir.iterdir()) == []


def test_unknown_format_and_explicit_override(client: TestClient) -> None:
    data = '{"soal": "چرا؟", "javab": "چون."}\n'.encode()
    response = _upload(client, "x.jsonl", data)
    assert "`javab`, `soal`" in _problems(response)[0]["message"]
    response = _upload(client, "x.jsonl", data, question_field="soal", answer_field="javab")
    assert response.status_code == 201, response.text
    half = _upload(client, "x.jsonl", data, question_field="soal")
    assert half.status_code == 400 and half.json()["field"] == "answer_field"


def test_validate_only_reports_without_importing(client: TestClient, percqa: Path) -> None:
    data = b"\n".join(percqa.read_bytes().splitlines()[:100]) + b'\n{"question": "x"}\n'
    response = client.post(
        "/api/v1/datasets/validate", params={"normalize": True}, files={"file": ("p.jsonl", data)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["report"]["rows_valid"] == 100 and body["report"]["rows_invalid"] == 1
    assert body["normalization"]["rows_changed"] > 0
    assert body["stats"]["rows"] == 100
    assert client.get("/api/v1/datasets").json() == []


def test_normalized_import_shows_its_effect(client: TestClient) -> None:
    data = '{"question": "كتاب كجاست؟", "answer": "روي ميز ۲"}\n'.encode()
    body = _upload(client, "n.jsonl", data, normalize=True).json()
    assert body["normalized"] is True and body["normalization"]["rows_changed"] == 1
    rows = client.get(f"/api/v1/datasets/{body['id']}/preview").json()["rows"]
    assert rows[0]["messages"][0]["content"] == "کتاب کجاست؟"


def test_bad_requests_are_4xx(client: TestClient) -> None:
    assert client.get("/api/v1/datasets/999").status_code == 404
    assert client.post("/api/v1/datasets", content=b"x").status_code == 400
    no_file = client.post("/api/v1/datasets", files={"other": ("a.jsonl", b"{}")})
    assert no_file.status_code == 400 and no_file.json()["field"] == "file"
    bad_format = _upload(client, "a.jsonl", b"{}", data_format="yaml")
    assert bad_format.status_code == 422 and "data_format" in bad_format.json()["detail"]
    ds = _upload(client, "a.jsonl", b'{"question": "a", "answer": "b"}\n').json()["id"]
    assert client.get(f"/api/v1/datasets/{ds}/preview", params={"limit": 0}).status_code == 422
    split = client.post(f"/api/v1/datasets/{ds}/splits", json={"key": "qid"})
    assert split.status_code == 400 and "no field `qid`" in split.json()["detail"]


def test_sample_dataset_is_imported_on_first_start_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "s")
    with TestClient(create_app(settings)) as client:
        add_account(settings, ADMIN, role="admin")
        sign_in(client)
        (sample,) = client.get("/api/v1/datasets").json()
        assert sample["rows"] >= 300 and sample["rows_dropped"] == 0
        assert sample["owner_id"] is None  # shared with every account
        assert client.delete(f"/api/v1/datasets/{sample['id']}").status_code == 204
    with TestClient(create_app(settings)) as client:
        sign_in(client)
        assert client.get("/api/v1/datasets").json() == []


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    home = client.get("/")
    assert home.status_code == 200 and 'dir="rtl"' in home.text
    assert "/api/v1/datasets" in client.get("/openapi.json").json()["paths"]


def test_leftovers_of_a_killed_import_are_cleaned_on_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "s", import_sample_dataset=False)
    settings.ensure_dirs()
    stale_dir = settings.tmp_dir / "import-dead"
    stale_dir.mkdir()
    (stale_dir / "records.jsonl").write_bytes(b"{}\n")
    stale_file = settings.tmp_dir / "upload-dead.part"
    stale_file.write_bytes(b"x")
    fresh = settings.tmp_dir / "upload-in-progress.part"
    fresh.write_bytes(b"y")
    old = time.time() - 3600
    for path in (stale_dir, stale_file):
        os.utime(path, (old, old))
    with TestClient(create_app(settings)):
        pass
    assert not stale_dir.exists() and not stale_file.exists()
    assert fresh.exists()  # may belong to an import running in another process


def test_system_figures_are_real(client: TestClient) -> None:
    import psutil

    figures = client.get("/api/v1/system").json()
    assert figures["cpu"]["cores"] == psutil.cpu_count()
    assert figures["memory"]["total"] == psutil.virtual_memory().total
    assert 0 < figures["disk"]["free"] <= figures["disk"]["total"]
    assert isinstance(figures["gpus"], list)
