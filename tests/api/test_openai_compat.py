"""The OpenAI-compatible API, driven by the official `openai` client against the real
app served by uvicorn (in a thread, on a free local port): an API token made through
the accounts API, models registered in the registry, real generation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from lastedocation.api import create_app
from lastedocation.inference.cache import ModelCache
from lastedocation.inference.generate import GenerationSettings, chat
from lastedocation.models import registry
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in
from tests.inference.test_generate import QUESTION, train_chat_model, untrained_model
from tests.server import free_port

CHAT, LONG = "tiny-chat", "long-random"


@dataclass
class Studio:
    app: FastAPI
    url: str
    token: str  # an API token (ldt_...) of the admin
    chat_folder: Path
    long_folder: Path
    http: httpx.Client  # one connection pool for every client, closed at the end

    def client(self, token: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=token or self.token,
            max_retries=0,
            timeout=60,
            http_client=self.http,
        )


def _serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openai")
    chat_folder = train_chat_model(root)
    long_folder = untrained_model(root / "long", context=4096)
    settings = Settings(
        data_dir=root / "studio",
        import_sample_dataset=False,
        max_new_tokens_limit=4000,
        server_roots=[root],
    )
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    with app.state.sessions() as session:
        registry.register_folder(session=session, settings=settings, path=chat_folder, name=CHAT)
        registry.register_folder(session=session, settings=settings, path=long_folder, name=LONG)
    server, thread, url = _serve(app)
    try:
        with httpx.Client(base_url=url) as http:
            sign_in(http)
            created = http.post("/api/v1/auth/tokens", json={"name": "openai client"})
            assert created.status_code == 201, created.text
        with httpx.Client() as pool:
            yield Studio(app, url, created.json()["token"], chat_folder, long_folder, pool)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def expected(studio: Studio) -> str:
    """The model's own greedy answer, from the generation API."""
    loaded = ModelCache(min_free_memory_mb=0).get(studio.chat_folder)
    answer = chat(loaded.model, loaded.tokenizer, QUESTION, GenerationSettings(max_new_tokens=100))
    return answer.text


def test_openai_client_streams_an_answer_that_stops_on_eos(studio: Studio, expected: str) -> None:
    assert studio.token.startswith("ldt_")
    stream = studio.client().chat.completions.create(
        model=CHAT,
        messages=QUESTION,  # type: ignore[arg-type]
        stream=True,
        temperature=0,
        max_tokens=100,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.strip(), "a non-empty answer"
    assert content == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {CHAT}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 0 < usage.completion_tokens < 100, "ended by the end token, not by max_tokens"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_client_gets_a_whole_answer(studio: Studio, expected: str) -> None:
    answer = studio.client().chat.completions.create(
        model=CHAT,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=100,
    )
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-") and answer.model == CHAT
    assert abs(answer.created - time.time()) < 60
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected
    assert choice.finish_reason == "stop"
    assert answer.usage is not None and 0 < answer.usage.completion_tokens < 100


def test_max_tokens_and_stop(studio: Studio, expected: str) -> None:
    client = studio.client()
    short = client.chat.completions.create(
        model=CHAT,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=2,
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2

    full = expected
    stop = full[2:4]
    cut = client.chat.completions.create(
        model=CHAT,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        stop=stop,
        stream=True,
    )
    pieces = [(c.choices[0].delta.content or "", c.choices[0].finish_reason) for c in cut]
    assert "".join(text for text, _ in pieces) == full[: full.find(stop)]
    assert pieces[-1][1] == "stop"


def test_models_lists_registered_models(studio: Studio) -> None:
    models = studio.client().models.list()
    assert {m.id for m in models.data} == {CHAT, LONG}
    assert {m.object for m in models.data} == {"model"}
    assert all(abs(m.created - time.time()) < 3600 for m in models.data)


def test_wrong_token_is_an_authentication_error(studio: Studio) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        studio.client("ldt_not-a-real-token").chat.completions.create(
            model=CHAT,
            messages=QUESTION,  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        studio.client("ldt_not-a-real-token").models.list()

    anonymous = httpx.get(f"{studio.url}/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    error = anonymous.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Authorization: Bearer" in error["message"]


def test_unknown_model_is_not_found(studio: Studio) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        studio.client().chat.completions.create(
            model="no-such-model",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        )
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message and "/v1/models" in caught.value.message


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"max_tokens": 4001}, "max_tokens", "at most 4000 tokens"),
        ({"n": 2}, "n", "send n=1"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "repetition_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'user'"),
    ],
)
def test_bad_parameters_are_bad_requests(
    studio: Studio, options: dict[str, object], param: str, message: str
) -> None:
    body: dict[str, object] = {"model": CHAT, "messages": QUESTION, **options}
    with pytest.raises(openai.BadRequestError) as caught:
        studio.client().chat.completions.create(**body)  # type: ignore[call-overload]
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert message in caught.value.message


def test_repetition_penalty_is_an_extension(studio: Studio) -> None:
    plain = studio.client().chat.completions.create(
        model=LONG,
        messages=QUESTION,
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type]
    )
    penalized = studio.client().chat.completions.create(
        model=LONG,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=30,
        extra_body={"repetition_penalty": 5.0},
    )
    assert plain.choices[0].message.content != penalized.choices[0].message.content


def test_a_client_that_goes_away_stops_generation(studio: Studio) -> None:
    loaded = studio.app.state.model_cache.get(studio.long_folder)  # the server's own copy
    steps = [0]
    hook = loaded.model.register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    try:
        body = {
            "model": LONG,
            "messages": QUESTION,
            "stream": True,
            "max_tokens": 4000,
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {studio.token}"}
        with httpx.stream(
            "POST", f"{studio.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in response.iter_lines():
                if line:
                    events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 3:
                    break
            assert events[2]["choices"][0]["delta"]["content"]
        # the connection is closed; the server notices, and the model's lock is freed
        assert loaded.lock.acquire(timeout=20), "generation still holds the model"
        loaded.lock.release()
        assert steps[0] < 1000, f"{steps[0]} tokens generated for a client that left"
    finally:
        hook.remove()


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_a_bad_request(studio: Studio, raw: bytes) -> None:
    headers = {"Authorization": f"Bearer {studio.token}", "Content-Type": "application/json"}
    response = studio.http.post(f"{studio.url}/v1/chat/completions", content=raw, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")


def test_concurrent_requests_each_get_their_answer(studio: Studio, expected: str) -> None:
    answers: list[str | None] = []

    def ask() -> None:
        stream = studio.client().chat.completions.create(
            model=CHAT,
            messages=QUESTION,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=100,
            stream=True,
        )
        answers.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [expected] * 3
