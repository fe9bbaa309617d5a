"""The model pages and the playground page, in a signed-in browser against the real app:
a tiny real model folder registered from the page, exported, evaluated, compared,
pushed (offline: the clear error), deleted; archives uploaded through the page."""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from pathlib import Path

import huggingface_hub
import pytest
import torch
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.conftest import PERCQA, add_account
from tests.inference.test_generate import untrained_model
from tests.web.conftest import browser_sign_in


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama with a tokenizer and a chat template (random weights: it answers
    nonsense, which is all these pages need)."""
    torch.set_num_threads(1)
    return untrained_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", context=256)


@pytest.fixture
def settings(tmp_path: Path, tiny_folder: Path) -> Settings:
    """Admins may name folders beside the tiny model (the registration form)."""
    return Settings(
        data_dir=tmp_path / "studio", import_sample_dataset=False, server_roots=[tiny_folder.parent]
    )


def csrf(browser: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": browser.cookies["ldt_csrf"], "HX-Request": "true"}


def register(browser: TestClient, folder: Path, name: str) -> int:
    response = browser.post(
        "/models/register",
        data={"path": str(folder), "name": name, "csrf_token": browser.cookies["ldt_csrf"]},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def test_list_and_detail_show_a_registered_model(browser: TestClient, tiny_folder: Path) -> None:
    empty = browser.get("/models")
    assert "هنوز مدلی نیست" in empty.text and "ثبت یک پوشه روی سرور" in empty.text
    bad = browser.post(
        "/models/register",
        data={"path": str(tiny_folder.parent / "nope"), "csrf_token": browser.cookies["ldt_csrf"]},
    )
    assert bad.status_code == 400 and "no folder at" in bad.text

    model_id = register(browser, tiny_folder, "tiny-llama")
    listing = browser.get("/models").text
    assert f'href="/models/{model_id}"' in listing and "tiny-llama" in listing
    assert "پوشه روی سرور" in listing  # the source, in Persian
    assert f'href="/playground?model={model_id}"' in listing

    page = browser.get(f"/models/{model_id}")
    assert page.status_code == 200 and 'dir="rtl"' in page.text
    assert "LlamaForCausalLM" in page.text and "model.safetensors" in page.text
    parameters = browser.get(f"/api/v1/models/{model_id}").json()["summary"]["parameters"]
    thousands = f"{parameters / 1000:.1f}".translate(str.maketrans("0123456789.", "۰۱۲۳۴۵۶۷۸۹٫"))
    assert f"{thousands} هزار" in page.text  # the real count, in Persian digits
    assert "از اجرایی در این استودیو نیامده" in page.text  # no lineage: said, not invented
    assert browser.get("/models/999").status_code == 404
    assert "پیدا نشد" in browser.get("/models/999").text


def test_export_from_the_page_reports_the_smoke_test_and_serves_the_archive(
    browser: TestClient, tiny_folder: Path
) -> None:
    model_id = register(browser, tiny_folder, "tiny-export")
    wrong = browser.post(
        f"/models/{model_id}/export", data={"archive": "rar"}, headers=csrf(browser)
    )
    assert wrong.status_code == 400 and "archive" in wrong.text and 'role="alert"' in wrong.text

    done = browser.post(
        f"/models/{model_id}/export", data={"archive": "zip"}, headers=csrf(browser)
    )
    assert done.status_code == 200, done.text
    assert "خروجی گرفته و بررسی شد" in done.text and "tiny-export.zip" in done.text
    assert "سلام! لطفاً خودت را" in done.text  # the smoke test's question
    assert f'href="/api/v1/models/{model_id}/export/archive"' in done.text
    archive = browser.get(f"/api/v1/models/{model_id}/export/archive")
    assert archive.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert "tiny-export/model.safetensors" in names and "tiny-export/README.md" in names
    assert "دریافت آخرین خروجی" in browser.get(f"/models/{model_id}").text


def wait_quiet(browser: TestClient, model_id: int, timeout: float = 120) -> str:
    """The evaluations fragment, polled as the page does until nothing runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fragment = browser.get(f"/models/{model_id}/evaluations").text
        if "hx-trigger" not in fragment:
            return fragment
        time.sleep(0.3)
    raise AssertionError(f"the evaluation of model {model_id} did not finish")


def test_evaluate_and_compare_from_the_page(browser: TestClient, tiny_folder: Path) -> None:
    rows = b"\n".join(PERCQA.read_bytes().splitlines()[:12]) + b"\n"
    upload = browser.post(
        "/api/v1/datasets", files={"file": ("percqa.jsonl", rows)}, headers=csrf(browser)
    )
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    first = register(browser, tiny_folder, "tiny-a")
    second = register(browser, tiny_folder, "tiny-b")

    not_yet = browser.get(
        f"/models/{first}/compare", params={"other": second}, headers=csrf(browser)
    )
    assert not_yet.status_code == 409 and "has no completed evaluation" in not_yet.text
    missing = browser.post(
        f"/models/{first}/evaluations", data={"dataset_id": "999"}, headers=csrf(browser)
    )
    assert missing.status_code == 404 and 'role="alert"' in missing.text

    for model_id in (first, second):
        queued = browser.post(
            f"/models/{model_id}/evaluations",
            data={"dataset_id": dataset_id, "max_rows": "4", "max_new_tokens": "4"},
            headers=csrf(browser),
        )
        assert queued.status_code == 202, queued.text
        assert 'hx-trigger="every 2s"' in queued.text  # the list polls while it runs
        fragment = wait_quiet(browser, model_id)
        assert 'data-state="completed"' in fragment, fragment
        assert "سرگشتگی" in fragment and "BLEU" in fragment and "ROUGE-L" in fragment

    results = browser.get(f"/api/v1/models/{first}/evaluations").json()[0]["results"]
    page = browser.get(f"/models/{first}").text
    shown = f"{results['perplexity']:,.4f}".replace(",", "٬").replace(".", "٫")
    assert shown.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in page

    compared = browser.get(f"/models/{first}/compare", params={"other": second})
    assert compared.status_code == 200, compared.text
    assert "tiny-a" in compared.text and "tiny-b" in compared.text and "مبنا" in compared.text


def test_push_offline_says_so_and_delete_removes_the_model(
    browser: TestClient, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = register(browser, tiny_folder, "tiny-push")
    bad_token = browser.post(
        f"/models/{model_id}/push",
        data={"repo_id": "me/tiny", "token": "not-a-token"},
        headers=csrf(browser),
    )
    assert (
        bad_token.status_code == 400 and "does not look like a Hugging Face token" in bad_token.text
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1
    offline = browser.post(
        f"/models/{model_id}/push",
        data={"repo_id": "me/tiny", "token": "hf_" + "x" * 30, "private": "1"},
        headers=csrf(browser),
    )
    assert offline.status_code == 200  # a fragment htmx swaps in, with the message
    assert 'role="alert"' in offline.text and "unset HF_HUB_OFFLINE" in offline.text
    hub = browser.post(
        "/models/import/hub",
        data={"repo_id": "owner/name", "csrf_token": browser.cookies["ldt_csrf"]},
    )
    assert hub.status_code == 503 and "outgoing traffic has been disabled" in hub.text

    deleted = browser.post(
        f"/models/{model_id}/delete",
        data={"csrf_token": browser.cookies["ldt_csrf"]},
        follow_redirects=False,
    )
    assert deleted.status_code == 303 and deleted.headers["location"] == "/models"
    assert browser.get(f"/models/{model_id}").status_code == 404
    assert tiny_folder.is_dir()  # a server folder is never deleted by the studio


def test_archive_upload_through_the_page_and_members(
    browser: TestClient, tiny_folder: Path, settings: Settings, tmp_path: Path
) -> None:
    archive = shutil.make_archive(str(tmp_path / "uploaded"), "zip", tiny_folder)
    created = browser.post(
        "/models/import/archive",
        files={"file": ("uploaded.zip", Path(archive).read_bytes())},
        headers=csrf(browser),
    )
    assert created.status_code == 201, created.text
    assert re.fullmatch(r"/models/\d+", created.headers["location"])
    assert "بایگانی بارگذاری‌شده" in browser.get(created.headers["location"]).text
    wrong = browser.post(
        "/models/import/archive",
        files={"file": ("notes.txt", b"hello")},
        headers=csrf(browser),
    )
    assert wrong.status_code == 400 and 'class="alert error"' in wrong.text
    assert "is not a model archive" in wrong.text

    add_account(settings, "mina")
    with TestClient(browser.app) as member:
        browser_sign_in(member, "mina")
        page = member.get("/models")
        assert "ثبت یک پوشه روی سرور" not in page.text  # admins only
        assert "uploaded" not in page.text  # the admin's upload is not shared
        refused = member.post(
            "/models/register", data={"path": "/", "csrf_token": member.cookies["ldt_csrf"]}
        )
        assert refused.status_code == 403 and "اجازه ندارید" in refused.text


def test_playground_lists_the_models_and_preselects_one(
    browser: TestClient, tiny_folder: Path
) -> None:
    empty = browser.get("/playground")
    assert "هنوز مدلی برای گفت‌وگو نیست" in empty.text
    first = register(browser, tiny_folder, "tiny-one")
    second = register(browser, tiny_folder, "tiny-two")
    page = browser.get(f"/playground?model={first}")
    assert page.status_code == 200
    options = re.findall(r'<option value="([^"]+)" data-id="(\d+)"( selected)?', page.text)
    assert options == [("tiny-two", str(second), ""), ("tiny-one", str(first), " selected")]
    assert "/static/js/playground.js" in page.text and "data-auto-dir" in page.text
    missing = browser.get("/playground?model=999")
    assert "مدلی با این شماره" in missing.text

    # what the page's script sends: the session cookie, the CSRF header, stream: true
    answer = browser.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-one",
            "messages": [{"role": "user", "content": "سلام"}],
            "stream": True,
            "max_tokens": 3,
            "temperature": 0.7,
            "top_p": 0.95,
            "repetition_penalty": 1.1,
            "stop": ["\n\n\n"],
        },
        headers={"X-CSRF-Token": browser.cookies["ldt_csrf"]},
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(
        "text/event-stream"
    )
    assert answer.text.rstrip().endswith("data: [DONE]")
