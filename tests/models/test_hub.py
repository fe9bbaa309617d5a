"""The Hub code path up to the network: what is checked before the first request,
and how the Hub's answers and a missing network reach the user.

A small local HTTP server (`fake_hub`) stands in for the Hub where an answer is
needed; it records every request, so "nothing was sent" is checked, not assumed.
A closed local port and HF_HUB_OFFLINE stand in for no network."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from lastedocation.errors import InvalidInput, NotFound, StudioError
from lastedocation.models.export import export_model
from lastedocation.models.hub import (
    HubUnavailable,
    download_model,
    progress_class,
    push_to_hub,
)
from tests.models.conftest import FakeHub, point_hub_at

TOKEN = "hf_" + "a" * 34


@pytest.fixture
def model_dir(full_run: Path) -> Path:
    return full_run / "model"


def _clean(error: StudioError) -> None:
    """A studio error, not a traceback of huggingface_hub's internals."""
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize(
    "repo_id", ["", "bad name", "a/b/c", "../escape", "me/x--y", "me/" + "x" * 97]
)
def test_invalid_repo_ids_are_refused_before_any_request(
    fake_hub: FakeHub, model_dir: Path, repo_id: str
) -> None:
    with pytest.raises(InvalidInput, match="not a valid Hub repository id") as caught:
        push_to_hub(model_dir, repo_id, token=TOKEN, endpoint=fake_hub.url)
    assert caught.value.extra == {"field": "repo_id"}
    assert fake_hub.requests == []


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (None, "a Hugging Face token with write access is required"),
        ("", "a Hugging Face token with write access is required"),
        ("   ", "a Hugging Face token with write access is required"),
        ("ghp_notahubtoken", "does not look like a Hugging Face token"),
        ("hf_abc def", "does not look like a Hugging Face token"),
    ],
)
def test_missing_or_malformed_tokens_are_refused_before_any_request(
    fake_hub: FakeHub, model_dir: Path, token: str | None, problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem) as caught:
        push_to_hub(model_dir, "me/tiny", token=token, endpoint=fake_hub.url)  # type: ignore[arg-type]
    assert caught.value.extra == {"field": "token"}
    assert fake_hub.requests == []


def test_the_folder_is_checked_before_any_request(
    fake_hub: FakeHub, model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "optimizer.pt").write_bytes(b"\x80\x04N.")
    with pytest.raises(InvalidInput, match=r"optimizer\.pt is refused: pickle"):
        push_to_hub(folder, "me/tiny", token=TOKEN, endpoint=fake_hub.url)
    assert fake_hub.requests == []


def test_a_token_the_hub_rejects_stops_before_the_repo_is_made(
    fake_hub: FakeHub, model_dir: Path
) -> None:
    fake_hub.answers["GET /api/whoami-v2"] = (401, {"error": "Invalid credentials"})
    with pytest.raises(InvalidInput, match=r"the Hub rejected the token \(401\)") as caught:
        push_to_hub(model_dir, "me/tiny", token=TOKEN, endpoint=fake_hub.url)
    _clean(caught.value)
    assert fake_hub.requests == ["GET /api/whoami-v2"]


def test_a_read_only_token_stops_before_the_repo_is_made(
    fake_hub: FakeHub, model_dir: Path
) -> None:
    whoami = {"name": "mina", "auth": {"accessToken": {"role": "read"}}}
    fake_hub.answers["GET /api/whoami-v2"] = (200, whoami)
    with pytest.raises(InvalidInput, match="token of mina is read-only"):
        push_to_hub(model_dir, "me/tiny", token=TOKEN, endpoint=fake_hub.url)
    assert fake_hub.requests == ["GET /api/whoami-v2"]


def test_no_write_access_to_the_namespace_uploads_nothing(
    fake_hub: FakeHub, model_dir: Path
) -> None:
    whoami = {"name": "mina", "auth": {"accessToken": {"role": "write"}}}
    fake_hub.answers["GET /api/whoami-v2"] = (200, whoami)
    fake_hub.answers["POST /api/repos/create"] = (403, {"error": "You don't have the rights"})
    with pytest.raises(InvalidInput, match=r"may not write to 'someone-else/tiny' \(403\)"):
        push_to_hub(model_dir, "someone-else/tiny", token=TOKEN, endpoint=fake_hub.url)
    assert fake_hub.requests[:2] == ["GET /api/whoami-v2", "POST /api/repos/create"]
    # after the refusal only a look at whether the repo exists: no upload was tried
    assert fake_hub.requests[2:] in ([], ["GET /api/models/someone-else/tiny"])


def test_unreachable_hub_is_a_clear_error(closed_port: str, model_dir: Path) -> None:
    with pytest.raises(
        HubUnavailable, match="cannot reach the Hugging Face Hub at http://127"
    ) as caught:
        push_to_hub(model_dir, "me/tiny", token=TOKEN, endpoint=closed_port)
    assert "check this machine's network connection" in caught.value.detail
    assert caught.value.status_code == 503
    _clean(caught.value)


def test_offline_mode_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub, model_dir: Path
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1
    with pytest.raises(HubUnavailable, match="unset HF_HUB_OFFLINE") as caught:
        push_to_hub(model_dir, "me/tiny", token=TOKEN, endpoint=fake_hub.url)
    _clean(caught.value)
    assert fake_hub.requests == []


def test_download_offline_or_unreachable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, closed_port: str, tmp_path: Path
) -> None:
    point_hub_at(monkeypatch, closed_port)
    with pytest.raises(HubUnavailable, match="cannot download 'owner/name'") as caught:
        download_model("owner/name", None, tmp_path / "cache")
    assert "check your internet connection" in caught.value.detail
    assert "upload it as an archive" in caught.value.detail
    _clean(caught.value)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailable, match="outgoing traffic has been disabled"):
        download_model("owner/name", "main", tmp_path / "cache")
    with pytest.raises(InvalidInput, match="not a valid Hub repository id"):
        download_model("owner/na me")


def test_progress_class_reports_instead_of_printing(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, float, float | None]] = []
    bar_class = progress_class(lambda desc, n, total: seen.append((desc, n, total)))
    # as huggingface_hub makes its bars: a `name` keyword vanilla tqdm does not know
    bar = bar_class(total=300, desc="Downloading bytes", unit="B", name="huggingface_hub.x")
    bar.update(100)
    bar.update(200)
    bar.close()
    assert seen[0] == ("Downloading bytes", 0, 300)
    assert seen[-1] == ("Downloading bytes", 300, 300)
    assert capsys.readouterr() == ("", "")


def test_a_repo_the_hub_does_not_have_is_not_found(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(
        NotFound, match=r"'owner/missing' \(revision main\) is not on the Hub"
    ) as caught:
        download_model("owner/missing", None, tmp_path / "cache")
    assert "GET /api/models/owner/missing/revision/main" in fake_hub.requests
    _clean(caught.value)


def test_download_from_the_hub_once(fake_hub: FakeHub, model_dir: Path, tmp_path: Path) -> None:
    fake_hub.repo = ("owner/tiny", model_dir)
    folder = download_model("owner/tiny", None, tmp_path / "cache")
    assert folder.is_relative_to(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    assert (folder / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors"
    ).read_bytes()

    fake_hub.requests.clear()
    assert download_model("owner/tiny", None, tmp_path / "cache") == folder
    assert fake_hub.requests and not any("/resolve/" in r for r in fake_hub.requests)


def test_download_reports_progress(fake_hub: FakeHub, model_dir: Path, tmp_path: Path) -> None:
    fake_hub.repo = ("owner/tiny", model_dir)
    seen: list[tuple[str, float, float | None]] = []
    download_model("owner/tiny", None, tmp_path / "cache", lambda *a: seen.append(a))
    size = sum(p.stat().st_size for p in model_dir.iterdir())
    assert ("Download complete", size, size) in seen  # bytes, reported as they came
    files = len(list(model_dir.iterdir()))
    assert (f"Fetching {files} files", files, files) in seen


def test_a_hub_repo_with_pickled_weights_is_refused(
    fake_hub: FakeHub, model_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_dir, repo)
    (repo / "model.safetensors").write_bytes(pickle.dumps({"not": "weights"}))
    fake_hub.repo = ("owner/disguised", repo)
    with pytest.raises(
        InvalidInput, match=r"model\.safetensors is refused: not a safetensors file"
    ):
        download_model("owner/disguised", None, tmp_path / "cache")


def test_push_creates_the_repo_and_uploads_the_export(
    fake_hub: FakeHub, model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    export_model(model_dir, folder, card_info={"name": "tiny", "repo_id": "me/tiny"})
    fake_hub.answers["GET /api/whoami-v2"] = (
        200,
        {"name": "me", "auth": {"accessToken": {"role": "write"}}},
    )
    fake_hub.answers["POST /api/repos/create"] = (200, {"url": f"{fake_hub.url}/me/tiny"})
    fake_hub.answers["POST /api/validate-yaml"] = (200, {"errors": [], "warnings": []})

    url = push_to_hub(
        folder, "me/tiny", token=TOKEN, private=True, commit_message="first", endpoint=fake_hub.url
    )

    assert url == f"{fake_hub.url}/me/tiny"
    assert fake_hub.requests == [
        "GET /api/whoami-v2",
        "POST /api/repos/create",
        "POST /api/validate-yaml",  # the model card's metadata
        "POST /api/models/me/tiny/preupload/main",
        "POST /api/models/me/tiny/commit/main",
    ]
    created = json.loads(fake_hub.bodies["POST /api/repos/create"])
    assert (
        created["name"] == "tiny"
        and created["organization"] == "me"
        and created["visibility"] == "private"
    )
    lines = [
        json.loads(line)
        for line in fake_hub.bodies["POST /api/models/me/tiny/commit/main"].splitlines()
    ]
    assert lines[0] == {"key": "header", "value": {"summary": "first", "description": ""}}
    sent = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]}
    assert sorted(sent) == sorted(p.name for p in folder.iterdir())
    assert (
        "README.md" in sent
        and sent["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    )
    card = json.loads(fake_hub.bodies["POST /api/validate-yaml"])["content"]
    assert card == (folder / "README.md").read_text(encoding="utf-8")


def test_card_metadata_the_hub_refuses_is_a_clear_error(
    fake_hub: FakeHub, model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    export_model(model_dir, folder, card_info={"name": "tiny", "license": "my-own"})
    fake_hub.answers["GET /api/whoami-v2"] = (
        200,
        {"name": "me", "auth": {"accessToken": {"role": "write"}}},
    )
    fake_hub.answers["POST /api/repos/create"] = (200, {"url": f"{fake_hub.url}/me/tiny"})
    error = {"errors": [{"message": '"license" must be one of [apache-2.0, mit, ...]'}]}
    fake_hub.answers["POST /api/validate-yaml"] = (400, error)
    with pytest.raises(
        InvalidInput, match=r'(?s)the Hub refused the upload.*"license" must be one of'
    ) as caught:
        push_to_hub(folder, "me/tiny", token=TOKEN, endpoint=fake_hub.url)
    _clean(caught.value)
    assert not any("/commit/" in r for r in fake_hub.requests)
