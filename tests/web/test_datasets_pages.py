"""The datasets pages: the list and upload (through the JSON API with the browser's
cookie), one dataset's page (report, preview paging, statistics, normalization), splits,
delete, and what another account may not see."""

from __future__ import annotations

import html
import json
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.datasets import service
from lastedocation.datasets.scan import ScanOptions
from lastedocation.settings import Settings
from lastedocation.web.pages.datasets import changes
from tests.conftest import PERCQA, add_account
from tests.web.conftest import browser_sign_in

HTMX = {"HX-Request": "true"}


def percqa_rows(count: int) -> bytes:
    return b"\n".join(PERCQA.read_bytes().splitlines()[:count]) + b"\n"


def upload(browser: TestClient, data: bytes, query: str = "", name: str = "p.jsonl") -> int:
    """Upload as the page's script does: the session cookie and the CSRF header."""
    response = browser.post(
        f"/api/v1/datasets{query}",
        files={"file": (name, data)},
        headers={"X-CSRF-Token": browser.cookies["ldt_csrf"]},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_the_list_offers_the_upload_and_shows_what_was_uploaded(browser: TestClient) -> None:
    empty = browser.get("/datasets")
    assert empty.status_code == 200 and 'dir="rtl"' in empty.text
    assert "بارگذاری داده" in empty.text and "هنوز داده‌ای نیست" in empty.text
    form = re.search(r'<form id="upload"[^>]*>', empty.text)
    assert form and 'data-max-bytes="104857600"' in form.group(0)  # the studio's limit
    assert 'data-msg-refused="بارگذاری پذیرفته نشد"' in form.group(0)
    for option in ("file_format", "data_format", "question_field", "answer_field", "text_field",
                   "normalize", "drop_invalid"):  # fmt: skip
        assert f'name="{option}"' in empty.text, option  # every option the API takes

    dataset_id = upload(browser, percqa_rows(40), "?name=گفت‌وگوی والدین&normalize=true")
    listed = browser.get("/datasets")
    row = re.search(rf'<tr>\s*<td><a href="/datasets/{dataset_id}".*?</tr>', listed.text, re.S)
    assert row, listed.text
    cells = row.group(0)
    assert "گفت‌وگوی والدین" in cells  # the name with its ZWNJ
    assert ">۴۰</td>" in cells and "پرسش و پاسخ" in cells and ">شما</td>" in cells

    browser.post("/preferences", data={"lang": "en", "csrf_token": browser.cookies["ldt_csrf"]})
    english = browser.get("/datasets")
    assert ">40</td>" in english.text and "Question/answer" in english.text
    assert ">Yours</td>" in english.text


def test_a_dataset_page_shows_report_statistics_and_normalization(browser: TestClient) -> None:
    dataset_id = upload(browser, percqa_rows(40), "?normalize=true")
    api = browser.get(f"/api/v1/datasets/{dataset_id}").json()
    stats = browser.get(f"/api/v1/datasets/{dataset_id}/stats").json()
    report = browser.get(f"/api/v1/datasets/{dataset_id}/report").json()
    page = browser.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200
    text = page.text
    assert api["rows"] == 40 and '<span class="stat">۴۰</span>' in text  # Persian digits
    assert "همهٔ سطرها درست بودند" in text  # the validation report

    # the charts draw the service's own histograms, labelled in Persian
    charts = json.loads(html.unescape(re.search(r'id="ds-charts">(.*?)</script>', text).group(1)))
    by_id = {c["id"]: c for c in charts["lengths"]}
    assert by_id["question-chars"]["histogram"] == stats["fields"]["question"]["chars"]["histogram"]
    assert by_id["answer-words"]["field"] == "پاسخ" and by_id["answer-words"]["title"] == "واژه"
    persian = next(s for s in charts["scripts"] if s["key"] == "persian")
    assert persian["count"] == stats["script_mix"]["counts"]["persian"]
    median = stats["fields"]["question"]["chars"]["percentiles"]["p50"]
    assert f"<td>{median}</td>".translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in text
    assert "نمودار طول توکنی" in text  # says plainly where token lengths come from

    # normalization: counts and the before/after examples with the changes marked
    effect = report["normalization"]
    assert effect["rows_changed"] > 0 and "یکدست‌سازی" in text
    first = effect["examples"][0]
    _, after = changes(first["before"], first["after"])
    changed = next(part for part, marked in after if marked)
    assert f"<ins>{html.escape(changed)}</ins>" in text

    # Persian text reaches the page untouched, ZWNJ included, each text with dir="auto"
    rows = browser.get(f"/api/v1/datasets/{dataset_id}/preview?limit=10").json()["rows"]
    turn = next(m["content"] for r in rows for m in r["messages"] if "\u200c" in m["content"])
    assert f'<div class="ds-text" dir="auto">{html.escape(turn)}</div>' in text


def test_preview_pages_forward_and_back(browser: TestClient) -> None:
    dataset_id = upload(browser, percqa_rows(40))
    expected = browser.get(f"/api/v1/datasets/{dataset_id}/preview?offset=10&limit=5").json()
    fragment = browser.get(f"/datasets/{dataset_id}/preview?offset=10&limit=5", headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    shown = re.findall(r'<span class="badge">سطر ([۰-۹]+)</span>', fragment.text)
    digits = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
    assert shown == [str(r["row"]).translate(digits) for r in expected["rows"]]
    assert "سطرهای ۱۱ تا ۱۵ از ۴۰" in fragment.text
    assert f'hx-get="/datasets/{dataset_id}/preview?offset=15&amp;limit=5"' in fragment.text
    assert f'hx-get="/datasets/{dataset_id}/preview?offset=5&amp;limit=5"' in fragment.text

    last = browser.get(f"/datasets/{dataset_id}?offset=35&limit=10")  # without htmx: the page
    assert "سطرهای ۳۶ تا ۴۰ از ۴۰" in last.text and "offset=45" not in last.text
    plain = browser.get(f"/datasets/{dataset_id}/preview?offset=5", follow_redirects=False)
    assert plain.status_code == 303
    assert plain.headers["location"] == f"/datasets/{dataset_id}?offset=5#preview"
    odd = browser.get(f"/datasets/{dataset_id}?offset=abc&limit=-3")  # ignored, not a 500
    assert odd.status_code == 200 and "سطرهای ۱ تا ۱۰ از ۴۰" in odd.text


def test_a_bad_upload_answers_with_the_message_and_rows_the_page_shows(
    browser: TestClient,
) -> None:
    rows = percqa_rows(5) + b'{"question": "\xd8\xb3\xd9\x84\xd8\xa7\xd9\x85", "answer": ""}\n'
    refused = browser.post(
        "/api/v1/datasets",
        files={"file": ("bad.jsonl", rows)},
        headers={"X-CSRF-Token": browser.cookies["ldt_csrf"]},
    )
    # what datasets.js reads: `detail`, and `report.problems` with row, field and message
    assert refused.status_code == 422
    body = refused.json()
    assert "1 of 6 rows have problems" in body["detail"]
    problem = body["report"]["problems"][0]
    assert problem["row"] == 6 and problem["field"] == "answer" and problem["message"]
    assert browser.get("/api/v1/datasets").json() == []  # nothing was imported

    kept = upload(browser, rows, "?drop_invalid=true")
    page = browser.get(f"/datasets/{kept}").text
    assert "برخی سطرها مشکل داشتند" in page and '<span class="stat">۵</span>' in page
    assert (
        "<td>۶</td>" in page
        and "<code>answer</code>" in page
        and "<code>empty_field</code>" in page
    )


def test_another_members_dataset_is_a_not_found_page(
    app: FastAPI, settings: Settings, browser: TestClient
) -> None:
    mine = upload(browser, percqa_rows(12), "?name=admin-only")
    add_account(settings, "mina")
    with app.state.sessions() as session:  # a shared dataset (a command-line import)
        path = settings.tmp_dir / "shared.jsonl"
        path.write_bytes(percqa_rows(8))
        shared, _ = service.import_file(
            session=session, settings=settings, path=path, filename="shared.jsonl",
            name="shared-one", options=ScanOptions(),
        )  # fmt: skip
        shared_id = shared.id
    with TestClient(app) as member:
        browser_sign_in(member, "mina")
        csrf = member.cookies["ldt_csrf"]
        listed = member.get("/datasets").text
        assert "admin-only" not in listed and "shared-one" in listed and ">مشترک</td>" in listed
        for response in (
            member.get(f"/datasets/{mine}"),
            member.get(f"/datasets/{mine}/preview", headers=HTMX),
            member.post(f"/datasets/{mine}/splits", data={"csrf_token": csrf}),
            member.post(f"/datasets/{mine}/delete", data={"csrf_token": csrf}),
            member.get("/datasets/99999999999999999999"),
        ):
            assert response.status_code == 404 and "پیدا نشد" in response.text
        assert "<!doctype html>" in member.get(f"/datasets/{mine}").text  # a page, not JSON

        page = member.get(f"/datasets/{shared_id}").text  # readable, not deletable
        assert "shared-one" in page and f'action="/datasets/{shared_id}/delete"' not in page
        refused = member.post(f"/datasets/{shared_id}/delete", data={"csrf_token": csrf})
        assert refused.status_code == 403 and "اجازه ندارید" in refused.text
    assert browser.get(f"/api/v1/datasets/{shared_id}").status_code == 200


def test_a_split_is_made_from_the_page(browser: TestClient) -> None:
    dataset_id = upload(browser, percqa_rows(60))
    page = browser.get(f"/datasets/{dataset_id}").text
    assert '<option value="qid">' in page  # the fields a split can group by
    csrf = browser.cookies["ldt_csrf"]
    form = {"key": "qid", "validation_fraction": "۰٫۲", "seed": "7", "csrf_token": csrf}
    made = browser.post(f"/datasets/{dataset_id}/splits", data=form, headers=HTMX)
    assert made.status_code == 201 and made.text.startswith('<section id="splits"')
    split = browser.get(f"/api/v1/datasets/{dataset_id}/splits").json()[0]
    assert (split["key"], split["seed"], split["validation_fraction"]) == ("qid", 7, 0.2)
    digits = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
    row = re.search(r'<tr class="ds-new">.*?</tr>', made.text, re.S)
    assert row and "<code>qid</code>" in row.group(0) and "۲۰٫۰٪" in row.group(0)
    assert f"<td>{split['train_rows']}</td>".translate(digits) in row.group(0)
    assert f"<td>{split['validation_rows']}</td>".translate(digits) in row.group(0)
    assert split["train_rows"] + split["validation_rows"] == 60

    wrong = browser.post(
        f"/datasets/{dataset_id}/splits",
        data={**form, "validation_fraction": "1.5"},
        headers=HTMX,
    )
    assert wrong.status_code == 400 and "سهم اعتبارسنجی باید عددی بین ۰ و ۱ باشد" in wrong.text
    assert 'value="1.5"' in wrong.text  # the form keeps what was typed
    no_key = browser.post(
        f"/datasets/{dataset_id}/splits", data={**form, "key": "topic"}, headers=HTMX
    )
    assert no_key.status_code == 400 and "has no field `topic` to split by" in no_key.text
    forged = browser.post(f"/datasets/{dataset_id}/splits", data={"key": "qid"}, headers=HTMX)
    assert forged.status_code == 403  # no CSRF token
    assert len(browser.get(f"/api/v1/datasets/{dataset_id}/splits").json()) == 1

    plain = browser.post(f"/datasets/{dataset_id}/splits", data=form, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].endswith("#splits")


def test_the_owner_deletes_a_dataset_after_confirming(browser: TestClient) -> None:
    dataset_id = upload(browser, percqa_rows(10), "?name=to-delete")
    page = browser.get(f"/datasets/{dataset_id}").text
    assert "<details>" in page and "«to-delete» برای همیشه حذف شود" in page
    gone = browser.post(
        f"/datasets/{dataset_id}/delete", data={"csrf_token": browser.cookies["ldt_csrf"]}
    )
    assert gone.status_code == 200 and gone.url.path == "/datasets"
    notice = f"دادهٔ شمارهٔ {dataset_id} حذف شد".translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    assert notice in gone.text and "to-delete" not in gone.text
    assert browser.get(f"/api/v1/datasets/{dataset_id}").status_code == 404
