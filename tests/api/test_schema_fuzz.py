"""Schemathesis fuzzes every operation of the OpenAPI schema against the real app
(in-process over ASGI, on a real SQLite database and data folder), once signed in
as an admin and once as nobody.

Every answer must be a documented status, with the documented content type and a
body that fits the documented schema, and no answer may be a 5xx. Left out: the
live event stream (`GET /api/v1/runs/{run_id}/events`), which never ends.

The app is served without its lifespan, so the supervisor never runs: the runs
the fuzzer queues stay queued instead of starting trainer processes.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lastedocation.api import create_app
from lastedocation.settings import Settings
from tests.conftest import ADMIN, PERCQA, add_account, sign_in

pytestmark = pytest.mark.slow  # about a minute: 25 examples for each operation, twice

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EVENTS = "/api/v1/runs/{run_id}/events"
JOB_EVENTS = "/api/v1/speech/transcriptions/{transcription_id}/events"  # ends with its job
HUB_ROUTES = [
    "/api/v1/models/import/hub",
    "/api/v1/models/{model_id}/push",
    "/api/v1/speech/voices",  # registering a voice from the Hub: 503 offline
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    # every example is a real request on a real database: slower than hypothesis expects
    suppress_health_check=[HealthCheck.too_slow],
)


class Served:
    """What the schema's cases are sent to: the `studio` fixture's app, HTTP only.
    The lifespan scope is ignored, so the app is served without one (no supervisor)."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None
        self.token = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        assert self.app is not None, "the `studio` fixture serves the app"
        await self.app(scope, receive, send)


def _openapi() -> dict[str, Any]:
    """The schema, from a throwaway studio: the tests are generated when the module is
    collected, before any fixture exists (the `studio` fixture builds the same app)."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(data_dir=Path(folder), import_sample_dataset=False))
        try:
            return app.openapi()
        finally:
            app.state.engine.dispose()


def _config() -> schemathesis.Config:
    """Explicit, so that no schemathesis.toml lying around changes the run. The routes
    that reach the Hugging Face Hub answer 503 (hub_unavailable, saying what to do)
    when it cannot be reached, as in these offline tests: there alone a 5xx is right
    (and status_code_conformance still requires that they document it)."""
    statuses = ["2xx", "3xx", "4xx", "503"]
    return schemathesis.Config.from_dict(
        {
            "operations": [
                {
                    "include-path": path,
                    "checks": {"not_a_server_error": {"expected-statuses": statuses}},
                }
                for path in HUB_ROUTES
            ]
        }
    )


def _schema() -> Any:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(OPENAPI), config=_config())
    schema = schema.exclude(path=EVENTS).exclude(path=JOB_EVENTS)
    schema.app = SERVED
    return schema


SERVED = Served()
OPENAPI = _openapi()
admin_schema = _schema()
anonymous_schema = _schema()


@admin_schema.auth(refresh_interval=None)
class AdminToken:
    """The admin's access token on every case (except those that drop it on purpose)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return SERVED.token

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _seed(app: FastAPI) -> str:
    """Sign in as the admin; upload a PerCQA slice and queue a run on it, so that the
    small ids the fuzzer tries first reach real rows. Returns the access token."""
    client = TestClient(app)  # without `with`: the lifespan never starts
    try:
        token: str = sign_in(client)["access_token"]
        with PERCQA.open("rb") as lines:
            rows = b"".join(itertools.islice(lines, 40))
        upload = client.post(
            "/api/v1/datasets", params={"name": "PerCQA"}, files={"file": ("qa.jsonl", rows)}
        )
        assert upload.status_code == 201, upload.text
        config = {"model": {"vocab_size": 300}, "training": {"seq_len": 32, "max_steps": 1}}
        run = client.post("/api/v1/runs", json={"dataset_id": upload.json()["id"], **config})
        assert run.status_code == 201, run.text
        return token
    finally:
        client.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "studio", import_sample_dataset=False
    )
    app = create_app(settings)
    add_account(settings, ADMIN, role="admin")
    add_account(settings, "mina")
    with pytest.MonkeyPatch.context() as patch:
        # as HF_HUB_OFFLINE=1 (read when huggingface_hub is imported): whatever repo ids
        # the fuzzer makes up, nothing is ever downloaded
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        # signed in once, before the login fuzzing trips the real sign-in rate limit
        SERVED.app, SERVED.token = app, _seed(app)
        yield app
        SERVED.app, SERVED.token = None, ""
    app.state.engine.dispose()


@admin_schema.exclude(method="DELETE").parametrize()
@FUZZ
def test_admin_gets_documented_answers(case: schemathesis.Case, studio: FastAPI) -> None:
    case.call_and_validate(checks=CHECKS)


# the deletes go last, so that the seeded dataset and run live through the rest
# (`exclude`: with a config, schemathesis 4.32 ignores `include(method=...)`)
@admin_schema.exclude(method=["GET", "POST", "PUT", "PATCH"]).parametrize()
@FUZZ
def test_admin_deletes_get_documented_answers(case: schemathesis.Case, studio: FastAPI) -> None:
    case.call_and_validate(checks=CHECKS)


def _unreadable_body(case: schemathesis.Case, response: Any) -> bool:
    """FastAPI reads a JSON body before any dependency runs, so a body that does not
    parse (not JSON, not UTF-8) is refused (400 or 422) before the credentials are
    looked at."""
    if response.status_code not in (400, 422) or case.media_type != "application/json":
        return False
    try:
        json.loads(response.request.body or b"")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return True
    return False


@anonymous_schema.parametrize()
@FUZZ
def test_anonymous_gets_401_on_protected_routes(case: schemathesis.Case, studio: FastAPI) -> None:
    response = case.call_and_validate(checks=CHECKS)
    protected = bool(case.operation.definition.raw.get("security"))
    # cases with another method (405) probe the route table, not the route
    if protected and case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401 or _unreadable_body(case, response), (
            case.method,
            case.path,
            response.status_code,
            response.text,
        )


TOO_BIG = 2**63  # one past the database's largest integer
PAST_64_BITS = [
    ("GET", f"/api/v1/datasets/{TOO_BIG}", None, "dataset_id"),
    ("DELETE", f"/api/v1/auth/tokens/{TOO_BIG}", None, "token_id"),
    ("DELETE", f"/api/v1/users/{TOO_BIG}", None, "user_id"),
    ("POST", "/api/v1/datasets/1/splits", {"seed": TOO_BIG}, "seed"),
    ("POST", "/api/v1/runs", {"dataset_id": TOO_BIG}, "dataset_id"),
    ("GET", f"/api/v1/runs/{TOO_BIG}", None, "run_id"),
    ("GET", f"/api/v1/runs/1/logs?offset={TOO_BIG}", None, "offset"),
    ("GET", f"/api/v1/models/{TOO_BIG}", None, "model_id"),
    ("GET", f"/api/v1/models/compare?ids=1&ids={TOO_BIG}", None, "ids.1"),
    ("POST", "/api/v1/models/1/evaluations", {"dataset_id": TOO_BIG}, "dataset_id"),
]


@pytest.mark.parametrize(("method", "url", "body", "field"), PAST_64_BITS)
def test_numbers_past_64_bits_answer_422(
    studio: FastAPI, method: str, url: str, body: dict[str, Any] | None, field: str
) -> None:
    """Ids, offsets and seeds past 64 bits reached SQLite and answered 500 (the fuzzer
    found the first ones): they answer 422, naming the field."""
    client = TestClient(studio)  # without `with`: the lifespan never starts
    try:
        client.headers["Authorization"] = f"Bearer {SERVED.token}"
        response = client.request(method, url, json=body)
    finally:
        client.close()
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["problems"]] == [field]
