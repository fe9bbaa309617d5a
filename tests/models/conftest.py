"""Tiny models trained once per test session: a full fine-tune from scratch and a
LoRA adapter on top of it. Both train on PerCQA rows with short answers, so even
a model this small learns to end its turn with `<|end|>`.

And a fake Hugging Face Hub: a local HTTP server that the real huggingface_hub
client talks to, so the Hub code path runs for real up to the network."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch

from tests.tiny import short_answers, train_tiny

PROMPT_IDS = torch.tensor([[5, 17, 33, 42, 101, 7, 250, 3, 1, 60]])
COMMIT = "c0ffee" * 6 + "abcd"


@pytest.fixture(scope="session")
def short_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return short_answers(tmp_path_factory.mktemp("data") / "short.jsonl")


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory, short_qa: Path) -> Path:
    """A run folder whose `model/` is a tiny llama trained from scratch (20 steps)."""
    return train_tiny(
        tmp_path_factory.mktemp("runs") / "full",
        data={"train": str(short_qa), "split_key": "qid"},
        training={"batch_size": 8, "max_steps": 20, "lr": 0.005, "eval_every": 100},
    )


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, short_qa: Path, full_run: Path) -> Path:
    """A LoRA run on `full_run`'s model, not merged: its `adapter/` is what it left."""
    run_dir = train_tiny(
        tmp_path_factory.mktemp("runs") / "lora",
        data={"train": str(short_qa), "split_key": "qid"},
        model={"source": "local", "path": str(full_run / "model")},
        training={
            "method": "lora",
            "batch_size": 8,
            "max_steps": 8,
            "lr": 0.01,
            "eval_every": 100,
        },
        lora={"r": 4, "alpha": 8, "merge": False},
    )
    assert not (run_dir / "model").exists()
    return run_dir


def logits(folder_or_model: Any, ids: torch.Tensor = PROMPT_IDS) -> torch.Tensor:
    """The logits of a model (or of a folder loaded fresh with plain Transformers)."""
    from transformers import AutoModelForCausalLM

    model = folder_or_model
    if isinstance(folder_or_model, Path):
        model = AutoModelForCausalLM.from_pretrained(folder_or_model, use_safetensors=True)
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@dataclass
class FakeHub:
    """Answers `answers` ("METHOD /path" -> (status, JSON)), serves `repo` (id, folder)
    the way the Hub serves a model repository, and says 404 RepoNotFound to the rest."""

    url: str = ""
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    repo: tuple[str, Path] | None = None
    requests: list[str] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if f"{method} {path}" in self.answers:
            status, answer = self.answers[f"{method} {path}"]
            return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()
        if method == "POST" and "/preupload/" in path:  # small files: sent inline
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                for f in json.loads(body)["files"]
            ]
            return 200, {}, json.dumps({"files": files, "commitOid": COMMIT}).encode()
        if method == "POST" and "/commit/" in path:
            repo_id = path.removeprefix("/api/models/").split("/commit/")[0]
            commit = {"commitUrl": f"{self.url}/{repo_id}/commit/{COMMIT}", "commitOid": COMMIT}
            return 200, {}, json.dumps(commit).encode()
        if self.repo is not None:
            repo_id, folder = self.repo
            files = sorted(p for p in folder.iterdir() if p.is_file())
            if path.startswith(f"/api/models/{repo_id}/revision/"):
                info = {
                    "id": repo_id,
                    "sha": COMMIT,
                    "siblings": [{"rfilename": p.name} for p in files],
                }
                return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
            if path.startswith(f"/api/models/{repo_id}/tree/{COMMIT}"):
                tree = [
                    {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": _sha(p)}
                    for p in files
                ]
                return 200, {"Content-Type": "application/json"}, json.dumps(tree).encode()
            if path.startswith(f"/{repo_id}/resolve/{COMMIT}/"):
                file = folder / path.rsplit("/", 1)[1]
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_sha(file)}"'}
                return 200, headers, file.read_bytes()
        return 404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}'


def _sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A local stand-in for the Hub; downloads (which take no endpoint) go to it too."""
    hub = FakeHub()
    # huggingface_hub caches a registry it fetches from the endpoint: not in $HOME
    harnesses = str(tmp_path / "agent_harnesses.json")
    monkeypatch.setattr(huggingface_hub.constants, "AGENT_HARNESSES_PATH", harnesses)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path != "/api/agent-harnesses":  # huggingface_hub's user-agent lookup
                hub.requests.append(f"{self.command} {self.path}")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.bodies[f"{self.command} {self.path}"] = body
            status, headers, data = hub.answer(self.command, self.path, body)
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    point_hub_at(monkeypatch, hub.url)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """What HF_ENDPOINT=url does, for a huggingface_hub that is already imported."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now
