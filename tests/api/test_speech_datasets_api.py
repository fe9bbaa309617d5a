"""Speech datasets over HTTP on the real app: an archive uploaded through the datasets
endpoint becomes a speech dataset; its preview links each row's audio, served to those
who may see the dataset only; refusals name each file; the web page plays the clips
beside their transcripts in Persian and English."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.datasets.conftest import good_files, make_zip, metadata_csv
from tests.datasets.conftest import speech_clips as speech_clips  # the fixture, shared
from tests.web.conftest import browser_sign_in

Clips = list[tuple[bytes, str]]


def _upload(client: TestClient, archive: Path, **params: str) -> dict:
    response = client.post(
        "/api/v1/datasets", params=params, files={"file": (archive.name, archive.read_bytes())}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_preview_and_audio_for_the_owner_only(
    member_client: TestClient,
    other_member_client: TestClient,
    client: TestClient,
    speech_clips: Clips,
    tmp_path: Path,
) -> None:
    # named .bin: the kind is read from the content, not the name
    archive = make_zip(tmp_path / "clips.bin", good_files(speech_clips))
    dataset = _upload(member_client, archive, name="گفتار")
    assert (dataset["kind"], dataset["data_format"], dataset["rows"]) == (
        "speech",
        "audiofolder",
        8,
    )
    ds = dataset["id"]
    assert member_client.get(f"/api/v1/datasets/{ds}").json()["kind"] == "speech"

    page = member_client.get(
        f"/api/v1/datasets/{ds}/preview", params={"offset": 2, "limit": 3}
    ).json()
    assert page["total"] == 8 and [r["row"] for r in page["rows"]] == [3, 4, 5]
    third = page["rows"][0]
    assert third["text"] == speech_clips[2][1] and third["duration_s"] > 0.3
    assert third["audio_url"] == f"/api/v1/datasets/{ds}/audio/3"

    audio = member_client.get(third["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == speech_clips[2][0]
    assert member_client.get(third["audio_url"], headers={"Range": "bytes=0-3"}).content == b"RIFF"
    assert client.get(third["audio_url"]).status_code == 200  # an admin sees every dataset
    other = other_member_client.get(third["audio_url"])
    assert other.status_code == 404 and other.json()["detail"] == f"no dataset with id {ds}"
    assert other_member_client.get(f"/api/v1/datasets/{ds}/preview").status_code == 404

    beyond = member_client.get(f"/api/v1/datasets/{ds}/audio/9")
    assert beyond.status_code == 404 and "has 8 rows; there is no row 9" in beyond.json()["detail"]
    assert member_client.get(f"/api/v1/datasets/{ds}/audio/0").status_code == 422
    assert member_client.get(f"/api/v1/datasets/{ds}/audio/a.wav").status_code == 422
    assert member_client.get(f"/api/v1/datasets/{ds}/audio/..%2F..%2Fetc").status_code == 404

    stats = member_client.get(f"/api/v1/datasets/{ds}/stats").json()
    assert stats["rows"] == 8 and stats["hours"] > 0 and stats["sample_rates"] == {"22050": 8}
    split = member_client.post(f"/api/v1/datasets/{ds}/splits", json={"key": None})
    assert split.status_code == 409 and "needs a text dataset" in split.json()["detail"]

    text = member_client.post(
        "/api/v1/datasets", files={"file": ("t.jsonl", '{"text": "سلام دنیا"}\n'.encode())}
    ).json()
    no_audio = member_client.get(f"/api/v1/datasets/{text['id']}/audio/1")
    assert (
        no_audio.status_code == 409
        and "is a text dataset: audio needs a speech dataset" in no_audio.text
    )
    assert member_client.delete(f"/api/v1/datasets/{ds}").status_code == 204
    assert member_client.get(third["audio_url"]).status_code == 404


def test_refusals_name_each_file_and_leave_nothing(
    client: TestClient, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    rows = [("ok.wav", speech_clips[0][1]), ("gone.wav", "نیست"), ("bad.wav", "خراب")]
    files = {"ok.wav": speech_clips[0][0], "bad.wav": b"not audio at all" * 20,
             "metadata.csv": metadata_csv(rows)}  # fmt: skip
    archive = make_zip(tmp_path / "mixed.zip", files)
    refused = client.post("/api/v1/datasets", files={"file": ("mixed.zip", archive.read_bytes())})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "dataset_invalid" and body["data_format"] == "audiofolder"
    found = {(p["row"], p["file"], p["kind"]) for p in body["report"]["problems"]}
    assert found == {(3, "gone.wav", "missing_file"), (4, "bad.wav", "audio_undecodable")}

    kept = client.post("/api/v1/datasets", params={"drop_invalid": "true"},
                       files={"file": ("mixed.zip", archive.read_bytes())})  # fmt: skip
    assert kept.status_code == 201 and kept.json()["rows"] == 1 and kept.json()["rows_dropped"] == 2

    checked = client.post(
        "/api/v1/datasets/validate", files={"file": ("m.zip", archive.read_bytes())}
    )
    assert checked.status_code == 200 and checked.json()["report"]["rows_valid"] == 1
    assert checked.json()["stats"]["rows"] == 1

    normalize = client.post("/api/v1/datasets", params={"normalize": "true"},
                            files={"file": ("m.zip", archive.read_bytes())})  # fmt: skip
    assert normalize.status_code == 400 and normalize.json()["field"] == "normalize"
    hostile = make_zip(tmp_path / "h.zip", {"../../x.wav": b"x"})
    escape = client.post("/api/v1/datasets", files={"file": ("h.zip", hostile.read_bytes())})
    assert escape.status_code == 400 and "`..` path components" in escape.json()["detail"]
    assert list(settings.tmp_dir.iterdir()) == []


def test_large_archives_have_their_own_route_and_limit(speech_clips: Clips, tmp_path: Path) -> None:
    from lastedocation.api import create_app
    from tests.conftest import add_account, sign_in

    settings = Settings(data_dir=tmp_path / "s", import_sample_dataset=False,
                        bundled_speech_model=False, max_upload_mb=1, max_speech_upload_mb=3)  # fmt: skip
    files = {**good_files(speech_clips), "README.bin": np.random.default_rng(0).bytes(1 << 20)}
    archive = make_zip(tmp_path / "big.zip", files).read_bytes()  # over 1 MiB, under 3
    with TestClient(create_app(settings)) as client:
        add_account(settings, "admin", role="admin")
        sign_in(client)
        refused = client.post("/api/v1/datasets", files={"file": ("big.zip", archive)})
        assert refused.status_code == 413, refused.text
        detail = refused.json()["detail"]
        assert (
            "(LASTEDOCATION_MAX_UPLOAD_MB); a speech dataset archive may be up to 3,145,728 bytes at POST /api/v1/datasets/speech"
            in detail
        )
        speech = client.post("/api/v1/datasets/speech", files={"file": ("big.zip", archive)})
        assert speech.status_code == 201 and speech.json()["rows"] == 8, speech.text
        text = client.post(
            "/api/v1/datasets/speech", files={"file": ("t.jsonl", b'{"text": "a"}\n')}
        )
        assert (
            text.status_code == 400 and "send text datasets to POST /api/v1/datasets" in text.text
        )
        huge = client.post("/api/v1/datasets/speech", files={"file": ("h.zip", archive * 3)})
        assert huge.status_code == 413 and "LASTEDOCATION_MAX_SPEECH_UPLOAD_MB" in huge.text
        assert list(settings.tmp_dir.iterdir()) == []


def test_the_dataset_page_plays_each_clip_beside_its_transcript(
    app: FastAPI, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    from tests.conftest import ADMIN, add_account

    with TestClient(app) as browser:
        add_account(settings, ADMIN, role="admin")
        browser_sign_in(browser)
        archive = make_zip(tmp_path / "clips.zip", good_files(speech_clips))
        uploaded = browser.post("/api/v1/datasets", files={"file": ("clips.zip", archive.read_bytes())},
                                headers={"X-CSRF-Token": browser.cookies["ldt_csrf"]})  # fmt: skip
        assert uploaded.status_code == 201, uploaded.text
        ds = uploaded.json()["id"]

        page = browser.get(f"/datasets/{ds}")
        assert page.status_code == 200 and 'dir="rtl"' in page.text
        players = re.findall(r'<audio controls preload="none" src="([^"]+)"', page.text)
        assert players == [f"/api/v1/datasets/{ds}/audio/{n}" for n in range(1, 9)]
        for _, text in speech_clips:
            assert f'<p class="ds-text" dir="auto">{text}</p>' in page.text
        assert "دقیقه صدا" in page.text and "نرخ نمونه‌برداری" in page.text  # Persian first
        assert "پرونده‌های صوتی با رونوشت" in page.text and "۲۲٬۰۵۰ هرتز" in page.text
        assert 'id="splits"' not in page.text and 'id="normalization"' not in page.text
        assert browser.get(players[0]).content == speech_clips[0][0]  # the page's cookie plays it

        fragment = browser.get(
            f"/datasets/{ds}/preview?offset=5&limit=2", headers={"HX-Request": "true"}
        )
        assert re.findall(r'src="(/api/v1/datasets/\d+/audio/\d+)"', fragment.text) == [
            f"/api/v1/datasets/{ds}/audio/6", f"/api/v1/datasets/{ds}/audio/7"]  # fmt: skip

        browser.post("/preferences", data={"lang": "en", "csrf_token": browser.cookies["ldt_csrf"]})
        english = browser.get(f"/datasets/{ds}")
        assert "minutes of audio" in english.text and "22,050 Hz" in english.text
        assert "Audio files with transcripts" in english.text and english.text.count("<audio ") == 8
        listed = browser.get("/datasets")
        assert "Audio files with transcripts" in listed.text
