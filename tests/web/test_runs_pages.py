"""The runs pages with the real app, SQLite, supervisor and trainer (tiny model)."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from lastedocation.web.i18n import Language, translations
from lastedocation.web.pages import runs, runs_new
from tests.conftest import add_account
from tests.runs.test_runs_api import upload_percqa, wait_for
from tests.web.conftest import browser_sign_in

TEMPLATES = Path(runs.__file__).parents[1] / "templates" / "runs"
# a run that trains in seconds on the CPU, as the new-run form sends it
TINY_FORM = {
    "name": "تست کوچک",
    "model.source": "scratch",
    "model.preset": "llama-tiny",
    "model.vocab_size": "500",
    "data.split_key": "qid",
    "training.seq_len": "96",
    "training.batch_size": "4",
    "training.max_steps": "20",
    "training.eval_every": "10",
    "training.save_every": "10",
    "training.threads": "1",
}


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The studio of these tests: a quick supervisor, one run at a time; the bundled
    whisper-base only where a test asks for it (`parametrize("settings", ["bundled"])`)."""
    return Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        supervisor_interval_s=0.1,
        max_concurrent_runs=1,
        bundled_speech_model=getattr(request, "param", "") == "bundled",
    )


@pytest.fixture
def page(browser: TestClient) -> TestClient:
    """The signed-in browser, sending the CSRF header as the pages' scripts do."""
    browser.headers["X-CSRF-Token"] = browser.cookies["ldt_csrf"]
    return browser


def submit(client: TestClient, dataset: int, **fields: str) -> Any:
    form = {**TINY_FORM, "dataset_id": str(dataset), **fields}
    return client.post("/runs/new", data={**form, "csrf_token": client.cookies["ldt_csrf"]})


def problem_of(html: str, name: str) -> str:
    """The problem shown beside the control named `name` (in its field block)."""
    for block in re.findall(r'<div class="field[^"]* has-problem".*?</div>', html, flags=re.S):
        if f'name="{name}"' in block:
            found = re.search(r'class="problem"[^>]*>([^<]*)<', block)
            assert found, block
            return unescape(found.group(1))
    raise AssertionError(f"no problem shown beside {name}")


def controls(html: str) -> list[str]:
    """The control buttons a run's page shows (the state panel's actions)."""
    box = html.split('id="run-actions"', 1)[1].split("</div>", 1)[0]
    return re.findall(r'data-action="(\w+)"', box)


def table_runs(client: TestClient, state: str) -> list[int]:
    """The runs the list shows for a state filter, as htmx asks for them."""
    table = client.get("/runs", params={"state": state}, headers={"HX-Request": "true"}).text
    assert "<html" not in table and 'id="run-table"' in table
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', table)]


def test_bad_config_shows_every_problem_beside_its_field(page: TestClient) -> None:
    dataset = upload_percqa(page, rows=40)
    bad = submit(
        page, dataset, **{"training.lr": "-1", "training.batch_size": "x", "training.seq_len": "4"}
    )
    assert bad.status_code == 400
    html = bad.text
    assert 'dir="rtl"' in html and "اجرا شروع نشد" in html
    assert problem_of(html, "training.lr") == "باید بیشتر از ۰ باشد"
    assert problem_of(html, "training.batch_size") == "باید عدد صحیح باشد"
    assert problem_of(html, "training.seq_len") == "باید دست‌کم ۸ باشد"
    assert 'name="training.lr" dir="ltr" value="-1"' in html  # what was typed stays
    assert 'aria-invalid="true"' in html
    # the semantic checks, again all at once, and in English for an English reader
    page.cookies.set("ldt_lang", "en")
    again = submit(
        page,
        dataset,
        **{
            "model.source": "local",
            "training.method": "lora",
            "training.warmup_steps": "30",
        },
    )
    assert again.status_code == 400 and 'dir="ltr"' in again.text
    assert problem_of(again.text, "model.path") == "source is local: give the model folder"
    assert problem_of(again.text, "training.warmup_steps") == (
        "must be smaller than training.max_steps"
    )
    missing = submit(page, 999_999)
    assert problem_of(missing.text, "dataset_id") == "choose one of your datasets"
    assert page.get("/api/v1/runs").json() == []  # nothing was queued


def test_form_offers_every_setting_with_help_and_presets(page: TestClient) -> None:
    html = page.get("/runs/new?preset=quick").text
    for name in runs_new.FIELDS:
        assert f'name="{name}"' in html, name
    assert 'name="training.max_steps" dir="ltr" value="50"' in html  # the preset's
    assert "بلندترین دنباله به توکن." in html  # training.seq_len's own description
    assert "هنوز داده‌ای نیست." in html and "disabled" in html  # no dataset: no start
    lora = page.get("/runs/new?preset=lora").text
    assert re.search(r'<option value="lora" selected>', lora)
    assert re.search(r'data-show="model.source=hub"(?! hidden)', lora)  # the Hub id shows
    assert re.search(r'data-show="model.source=scratch" hidden', lora)


def test_every_message_of_the_runs_pages_is_in_persian() -> None:
    catalog = translations("fa")
    used = set(runs.WORDS.values()) | set(runs.CONTROL_LINES.values())
    used |= {text for _, text in runs_new._PROBLEMS}
    used |= {field.description for field in runs_new.FIELDS.values() if field.description}
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""_\(\s*["']([^"']+)["']\s*\)""", template.read_text()))
    missing = sorted(m for m in used if catalog.gettext(m) == m)
    assert not missing


@pytest.mark.slow
def test_run_from_the_form_trains_and_its_page_follows_it(page: TestClient) -> None:
    dataset = upload_percqa(page, rows=120)
    created = submit(page, dataset)
    assert created.status_code == 200 and re.fullmatch(r"/runs/\d+", created.url.path)
    run_id = int(created.url.path.rsplit("/", 1)[1])
    html = created.text
    check = page.get(f"/api/v1/runs/{run_id}/preflight").json()
    persian = Language("fa")
    assert f"<dd>{persian.number(check['examples'])}</dd>" in html
    lengths = check["token_length"]
    shown = " / ".join(persian.number(lengths[k]) for k in ("p50", "p95", "max"))
    assert shown in html and "بررسی پیش از آموزش" in html
    for chart in ("loss", "lr", "speed", "memory"):
        assert f'id="chart-{chart}"' in html
    assert "/static/js/run-live.js" in html and "تست کوچک" in html

    # the page's API calls: the session cookie, and CSRF on unsafe methods
    wait_for(page, run_id, {"running", "completed"})
    unsigned = page.post(f"/api/v1/runs/{run_id}/checkpoint", headers={"X-CSRF-Token": ""})
    assert unsigned.status_code == 403
    wait_for(page, run_id, {"completed"})

    done = page.get(f"/runs/{run_id}").text
    assert controls(done) == ["delete"]  # no pause, resume or stop on a completed run
    assert 'data-state="completed"' in done and "وضعیت: " in done  # the log tail
    assert done.count('data-action="restore"') == 2 * len(
        page.get(f"/api/v1/runs/{run_id}/checkpoints").json()
    )
    panel = page.get(f"/runs/{run_id}/panel").text
    assert "<html" not in panel and 'data-state="completed"' in panel
    metrics = page.get(f"/api/v1/runs/{run_id}/metrics").json()["metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 21))
    with page.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:  # as EventSource
        body = stream.read().decode()
    assert body.count("event: metrics") == 20 and "id: 1\n" in body


@pytest.mark.slow
def test_list_filters_by_state_and_hides_other_members_runs(
    page: TestClient, app: FastAPI, settings: Settings
) -> None:
    dataset = upload_percqa(page, rows=60)
    first = int(submit(page, dataset, name="یکم", **{"training.max_steps": "5000"}).url.path[6:])
    wait_for(page, first, {"running"})
    second = int(submit(page, dataset, name="دوم").url.path[6:])  # waits for the first
    assert controls(page.get(f"/runs/{first}").text) == ["pause", "stop", "checkpoint"]
    assert controls(page.get(f"/runs/{second}").text) == ["stop", "delete"]
    assert table_runs(page, "running") == [first] and table_runs(page, "queued") == [second]

    assert page.post(f"/api/v1/runs/{second}/stop").status_code == 202  # queued: stops at once
    assert page.post(f"/api/v1/runs/{first}/stop").status_code == 202
    wait_for(page, first, {"stopped"})
    assert table_runs(page, "stopped") == [second, first]
    everything = page.get("/runs").text
    assert "یکم" in everything and "دوم" in everything and 'id="compare-button"' in everything
    none = page.get("/runs", params={"state": "running"}, headers={"HX-Request": "true"}).text
    assert "هیچ اجرایی در این وضعیت نیست." in none
    wrong = page.get("/runs", params={"state": "sleeping"})
    assert wrong.status_code == 400 and "Traceback" not in wrong.text

    add_account(settings, "mina")
    with TestClient(app) as mina:
        browser_sign_in(mina, "mina")
        for path in (f"/runs/{first}", f"/runs/{first}/panel"):
            other = mina.get(path)
            assert other.status_code == 404 and "پیدا نشد" in other.text, path
        assert "یکم" not in mina.get("/runs").text


def test_refused_server_paths_read_in_persian() -> None:
    from lastedocation.web.i18n import Language
    from lastedocation.web.pages.runs_new import translate_problem

    fa = Language("fa")
    outside = "/etc is outside the folders admins may name (none are set; ...)"
    assert translate_problem(fa, outside).startswith("/etc بیرون از پوشه‌هایی")
    member = "only an admin may name a server path; members name a base model by ..."
    assert translate_problem(fa, member) == "فقط مدیر می‌تواند پوشه‌ای روی سرور را نام ببرد"
    assert "مدل‌های خود" in translate_problem(fa, "no model with id 5")


# -- speech runs (Whisper fine-tuning) on the same form -------------------------


def field_block(html: str, name: str) -> str:
    """The field block that holds the control named `name`."""
    at = html.index(f'name="{name}"')
    start = html.rindex('<div class="field', 0, at)
    ends = [html.find(end, at) for end in ('<div class="field', "</fieldset>", "</details>")]
    return html[start : min(e for e in ends if e > 0)]


def test_form_offers_the_task_and_speech_settings_in_persian(page: TestClient) -> None:
    html = page.get("/runs/new").text
    task = field_block(html, "task")
    assert '<label for="f-task">کار</label>' in task
    assert re.search(r'<option value="text" selected>\s*متن: یک مدل زبانی', task)
    assert re.search(r'<option value="speech">\s*گفتار: گفتار به نوشتار با Whisper', task)
    for name in ("speech.language", "speech.freeze_encoder", "speech.max_audio_seconds"):
        assert name in runs_new.FIELDS and f'name="{name}"' in html, name
        assert 'data-show="task=speech" hidden' in field_block(html, name)  # a text run: hidden
    assert "ثابت نگه‌داشتن رمزگذار" in html and "زبان متن‌ها، با کد Whisper" in html
    # text-only settings show for text runs and hide for speech ones
    assert re.search(r'data-show="task=text"(?! hidden)', field_block(html, "training.seq_len"))
    speech = page.get("/runs/new?preset=speech").text
    assert 'data-show="task=text" hidden' in field_block(speech, "training.seq_len")
    assert 'data-show="task=speech" hidden' not in speech  # the speech settings show
    assert re.search(r'<option value="whisper-tiny-random" data-task="speech"(?! hidden)', speech)
    assert 'value="llama-tiny" data-task="text" hidden disabled' in speech


@pytest.mark.parametrize("settings", ["bundled"], indirect=True)
def test_speech_preset_picks_the_bundled_whisper(page: TestClient) -> None:
    text = page.post(
        "/api/v1/datasets", files={"file": ("qa.jsonl", b'{"question": "a", "answer": "b"}\n')}
    ).json()["id"]
    bundled = next(m for m in page.get("/api/v1/models").json() if m["name"] == "whisper-base")
    html = page.get("/runs/new?preset=speech").text
    assert re.search(r'<option value="speech" selected>', field_block(html, "task"))
    model = field_block(html, "model.model_id")
    assert f'<option value="{bundled["id"]}" data-task="speech" selected>whisper-base' in model
    assert model.startswith('<div class="field" data-show="model.source=registry">')
    assert 'name="training.lr" dir="ltr" value="1e-05"' in html
    # a speech run has no text dataset to offer: the text one is hidden, a hint shows
    dataset = html.split('id="f-dataset_id"', 1)[1].split("</select>", 1)[0]
    assert f'value="{text}" data-task="text" hidden disabled' in dataset
    assert "هنوز دادهٔ گفتاری‌ای نیست" in dataset

    # submitted anyway (no script): the problem shows beside the dataset, in Persian
    refused = submit(
        page,
        text,
        task="speech",
        **{"model.source": "registry", "model.model_id": str(bundled["id"])},
    )
    assert refused.status_code == 400 and "Traceback" not in refused.text
    assert problem_of(refused.text, "dataset_id") == (
        "«qa» دادهٔ متنی است؛ اجرای گفتاری دادهٔ گفتاری می‌خواهد"
    )
    assert page.get("/api/v1/runs").json() == []


def test_a_text_submission_sends_no_speech_settings() -> None:
    values = {**runs_new.defaults("quick"), "dataset_id": "3", "training.seq_len": "64"}
    body = runs_new.run_body(values)
    assert body["task"] == "text" and "speech" not in body
    assert body["training"]["seq_len"] == "64" and body["model"]["preset"] == "llama-tiny"
    # a speech run leaves the hidden text-only fields out, whatever they hold
    speech = runs_new.run_body({**values, "task": "speech", "data.split_key": "qid"})
    assert speech["task"] == "speech" and speech["speech"]["freeze_encoder"] is True
    assert "seq_len" not in speech["training"] and "split_key" not in speech.get("data", {})


def test_a_text_run_from_the_form_still_starts(page: TestClient) -> None:
    dataset = upload_percqa(page, rows=40)
    created = submit(page, dataset, task="text")
    assert created.status_code == 200 and re.fullmatch(r"/runs/\d+", created.url.path)
    run = page.get(f"/api/v1{created.url.path}").json()
    assert run["config"]["task"] == "text" and run["config"]["training"]["seq_len"] == 96
    assert page.post(f"/api/v1{created.url.path}/stop").status_code == 202


def test_a_speech_run_from_the_form_trains_and_its_page_shows(
    page: TestClient, app: FastAPI, tmp_path: Path
) -> None:
    from tests.training.test_whisper_run import _speech_dataset_row
    from tests.whisper_helpers import SENTENCES, speech_dataset

    records = speech_dataset(tmp_path / "clips", SENTENCES[:3], ("fa",))
    admin = page.get("/api/v1/auth/me").json()["id"]
    dataset = _speech_dataset_row(app, records, admin)
    form = {
        "name": "گفتار کوچک",
        "task": "speech",
        "dataset_id": str(dataset),
        "model.source": "scratch",
        "model.preset": "whisper-tiny-random",
        "data.validation_fraction": "0.34",
        "training.max_steps": "2",
        "training.batch_size": "1",
        "training.eval_every": "2",
        "training.threads": "1",
        "training.seq_len": "96",  # hidden for speech: left out
        "speech.language": "fa",
        "speech.freeze_encoder": "on",
        "csrf_token": page.cookies["ldt_csrf"],
    }
    created = page.post("/runs/new", data=form)
    assert created.status_code == 200 and re.fullmatch(r"/runs/\d+", created.url.path), (
        created.text[:2000]
    )
    run_id = int(created.url.path.rsplit("/", 1)[1])
    assert "گفتار کوچک" in created.text
    run = wait_for(page, run_id, {"completed", "failed"}, timeout=120)
    assert run["state"] == "completed", run
    assert run["config"]["task"] == "speech" and run["config"]["training"]["lr"] == 1e-05
    done = page.get(f"/runs/{run_id}")
    assert done.status_code == 200 and 'data-state="completed"' in done.text
    assert "صدا (ثانیه)" in done.text and "گفتار: گفتار به نوشتار با Whisper" in done.text
    # its charts: audio seconds per second, and the word/character error rates of its evals
    assert 'id="chart-errors"' in done.text and "نرخ‌های خطا (اعتبارسنجی)" in done.text
    assert "ثانیهٔ صدا در هر ثانیه" in done.text
    evals = page.get(f"/api/v1/runs/{run_id}/metrics").json()["eval"]
    assert evals and {"wer", "cer"} <= evals[-1].keys()
