"""GET /metrics against the real app: every family is there and moves as the studio
works (requests by route template, an open event stream, runs and the queue, event
ingestion catching up, a trainer's tokens/s, a real backup to a folder target, an
evaluation); only the token holder or a loopback client reads it; the Grafana dashboard
asks only for metrics the app exports."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lastedocation.api import create_app
from lastedocation.models.entries import ModelEntry
from lastedocation.runs import service as runs
from lastedocation.runs.models import Run
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "lastedocation.json"
LOOPBACK = ("127.0.0.1", 40000)
ELSEWHERE = ("203.0.113.7", 40000)  # a documentation address: not this machine
TOKEN = "scrape-me-0123456789abcdef"
FAMILIES = {
    "lastedocation_http_requests",
    "lastedocation_http_request_duration_seconds",
    "lastedocation_sse_streams",
    "lastedocation_database_up",
    "lastedocation_runs",
    "lastedocation_run_queue_length",
    "lastedocation_run_tokens_per_second",
    "lastedocation_ingestion_backlog_bytes",
    "lastedocation_ingestion_lag_seconds",
    "lastedocation_backup_jobs",
    "lastedocation_backup_last_success_timestamp_seconds",
    "lastedocation_evaluation_jobs",
    "lastedocation_transcription_jobs",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient | httpx.Client) -> tuple[set[str], Samples]:
    """The family names and every sample (name and labels -> value) of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    names, samples = set(), {}
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(client: httpx.Client, check: Any, timeout: float = 60) -> Samples:
    """Scrape until `check(samples)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape(client)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, "the metrics did not move as expected"
        time.sleep(0.1)


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        bundled_speech_model=False,
        max_concurrent_runs=1,
        supervisor_interval_s=0.2,
        backup_targets=[{"name": "nas", "kind": "folder", "path": str(tmp_path / "nas")}],
        **extra,
    )


def _run(app: FastAPI, state: str, owner: int, events: list[dict[str, Any]] | None = None) -> int:
    """A run row whose trainer is this test: it writes the run folder's events.jsonl
    (the trainer's whole contract with the server) and has no process to watch."""
    with app.state.sessions() as session:
        run = Run(name=state, state=state, config={}, folder="", owner_id=owner)
        session.add(run)
        session.flush()
        run.folder = f"runs/{run.id:06d}"
        session.commit()
        folder = app.state.settings.data_dir / run.folder
        folder.mkdir(parents=True)
        with (folder / "events.jsonl").open("w", encoding="utf-8") as f:
            for event in events or []:
                f.write(json.dumps(event) + "\n")
        return run.id


Apps = Callable[..., FastAPI]


@pytest.fixture
def apps(tmp_path: Path, database: str | None) -> Iterator[Apps]:
    """Makes studios (each in its own folder, on the test's database); closes their
    database connections at the end."""
    made: list[FastAPI] = []

    def make(**extra: Any) -> FastAPI:
        folder = tmp_path / f"studio-{len(made)}"
        made.append(create_app(_settings(folder, database_url=database, **extra)))
        return made[-1]

    yield make
    for app in made:
        app.state.engine.dispose()


@dataclass
class Studio:
    app: FastAPI
    http: httpx.Client  # signed in as the admin, from 127.0.0.1


@pytest.fixture
def studio(apps: Apps) -> Iterator[Studio]:
    """The real app served by uvicorn on loopback, its supervisor, evaluator and backup
    runner running."""
    app = apps()
    add_account(app.state.settings, ADMIN, role="admin")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            sign_in(http)
            yield Studio(app, http)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_requests_and_event_streams_are_counted_by_route_template(studio: Studio) -> None:
    http = studio.http
    names, _ = scrape(http)
    assert names >= FAMILIES, FAMILIES - names
    for _ in range(2):
        assert http.get("/api/v1/runs/424242").status_code == 404
    assert http.get("/api/v1/runs/0").status_code == 422
    assert http.get("/api/v1/no-such-thing/987654").status_code == 404
    assert http.get("/api/v1/datasets").status_code == 200

    _, samples = scrape(http)
    requests = "lastedocation_http_requests_total"
    template = "/api/v1/runs/{run_id}"
    assert value(samples, requests, method="GET", route=template, status="404") == 2
    assert value(samples, requests, method="GET", route=template, status="422") == 1
    assert value(samples, requests, method="GET", route="/api/v1/datasets", status="200") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    latency = "lastedocation_http_request_duration_seconds_count"
    assert value(samples, latency, method="GET", route=template) == 3
    # labels hold templates: no id, no raw path of a request
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not any(id_ in label for label in labels for id_ in ("424242", "987654"))
    routes = {v for (name, pairs) in samples for k, v in pairs if k == "route"}
    assert routes <= {*_templates(studio.app), "unmatched"}, routes - _templates(studio.app)

    # an open event stream counts as one while it is open; its latency is its start
    owner = http.get("/api/v1/auth/me").json()["id"]
    run_id = _run(studio.app, "running", owner)
    events = "/api/v1/runs/{run_id}/events"
    with http.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
        assert stream.status_code == 200
        chunks = stream.iter_bytes()  # held: a dropped iterator closes the connection
        assert next(chunks).startswith(b"retry:")
        _, samples = scrape(http)
        assert value(samples, "lastedocation_sse_streams", route=events) == 1
        assert value(samples, latency, method="GET", route=events) == 1
    wait_for(http, lambda s: value(s, "lastedocation_sse_streams", route=events) == 0)


@pytest.mark.databases
def test_runs_the_queue_ingestion_lag_and_tokens_per_second(apps: Apps) -> None:
    """No supervisor runs here (the app's lifespan is not started), so the test ingests
    the trainer's events itself, with the supervisor's own function, when it chooses."""
    app = apps()
    owner = add_account(app.state.settings, ADMIN, role="admin")
    client = TestClient(app, client=LOOPBACK)
    written = time.time() - 30  # the trainer wrote these 30 s ago
    events = [
        {"seq": 1, "time": written, "type": "state", "state": "running", "total_steps": 10},
        {"seq": 2, "time": written + 1, "type": "metrics", "step": 1, "total_steps": 10,
         "loss": 3.2, "tokens_per_s": 1234.5},
    ]  # fmt: skip
    running = _run(app, "running", owner, events)
    _run(app, "queued", owner)
    _run(app, "queued", owner)
    log = app.state.settings.data_dir / f"runs/{running:06d}" / "events.jsonl"

    _, samples = scrape(client)
    assert value(samples, "lastedocation_runs", state="running") == 1
    assert value(samples, "lastedocation_runs", state="queued") == 2
    assert value(samples, "lastedocation_runs", state="completed") == 0
    assert value(samples, "lastedocation_run_queue_length") == 2
    assert value(samples, "lastedocation_ingestion_backlog_bytes") == log.stat().st_size
    lag = value(samples, "lastedocation_ingestion_lag_seconds")
    assert lag is not None and 30 <= lag < 90, lag
    # nothing ingested yet: the database knows no throughput
    assert value(samples, "lastedocation_run_tokens_per_second", run_id=str(running)) is None

    with app.state.sessions() as session:
        run = session.get(Run, running)
        assert run is not None
        assert runs.ingest(session=session, settings=app.state.settings, run=run) == 2
    _, samples = scrape(client)
    assert value(samples, "lastedocation_ingestion_backlog_bytes") == 0
    assert value(samples, "lastedocation_ingestion_lag_seconds") == 0
    assert value(samples, "lastedocation_run_tokens_per_second", run_id=str(running)) == 1234.5

    # a line the trainer is still writing is behind, but not yet ingestible: no lag
    partial = '{"seq": 3, "time": 1, "type": "lo'
    with log.open("a", encoding="utf-8") as f:
        f.write(partial)
    _, samples = scrape(client)
    assert value(samples, "lastedocation_ingestion_backlog_bytes") == len(partial)
    assert value(samples, "lastedocation_ingestion_lag_seconds") == 0


@pytest.mark.databases
def test_backup_and_evaluation_jobs_are_counted(studio: Studio) -> None:
    http = studio.http
    _, samples = scrape(http)
    assert value(samples, "lastedocation_backup_jobs", kind="backup", state="done") == 0
    stamp = "lastedocation_backup_last_success_timestamp_seconds"
    assert value(samples, stamp, target="nas") == 0  # never backed up
    assert value(samples, "lastedocation_evaluation_jobs", state="failed") == 0

    rows = b'{"question": "a", "answer": "b"}\n' * 20
    dataset = http.post("/api/v1/datasets", files={"file": ("qa.jsonl", rows)})
    assert dataset.status_code == 201, dataset.text
    started = time.time()
    job = http.post("/api/v1/backup/jobs", json={"target": "nas", "kind": "backup"})
    assert job.status_code == 202, job.text
    samples = wait_for(
        http, lambda s: value(s, "lastedocation_backup_jobs", kind="backup", state="done") == 1
    )
    assert started - 1 <= (value(samples, stamp, target="nas") or 0) <= time.time() + 1

    # an evaluation of a model whose folder is gone: the evaluator runs it, and it fails
    with studio.app.state.sessions() as session:
        entry = ModelEntry(name="gone", source="upload", folder="models/gone")
        session.add(entry)
        session.commit()
        model_id = entry.id
    queued = http.post(
        f"/api/v1/models/{model_id}/evaluations", json={"dataset_id": dataset.json()["id"]}
    )
    assert queued.status_code == 202, queued.text
    wait_for(http, lambda s: value(s, "lastedocation_evaluation_jobs", state="failed") == 1)


def test_only_the_token_holder_or_a_loopback_client_reads_the_metrics(
    apps: Apps, tmp_path: Path
) -> None:
    open_app = apps()
    assert TestClient(open_app, client=LOOPBACK).get("/metrics").status_code == 200
    assert TestClient(open_app, client=("::1", 40000)).get("/metrics").status_code == 200
    mapped = TestClient(open_app, client=("::ffff:127.0.0.1", 40000))
    assert mapped.get("/metrics").status_code == 200
    refused = TestClient(open_app, client=ELSEWHERE).get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden" and "METRICS_TOKEN" in refused.json()["detail"]
    # through a proxy on this machine the peer is loopback, but the client is not
    proxied = TestClient(open_app, client=LOOPBACK)
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        answer = proxied.get("/metrics", headers={header: "203.0.113.7"})
        assert answer.status_code == 403, header

    locked = apps(metrics_token=TOKEN)
    for client in (TestClient(locked, client=LOOPBACK), TestClient(locked, client=ELSEWHERE)):
        for sent in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):  # fmt: skip
            answer = client.get("/metrics", headers=sent)
            assert answer.status_code == 401, sent
            assert answer.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in answer.text
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200
        assert TOKEN not in allowed.text
    # the token is at least 16 characters
    with pytest.raises(ValueError, match="metrics_token"):
        _settings(tmp_path / "weak", metrics_token="short")


def test_the_dashboard_asks_only_for_exported_metrics(apps: Apps) -> None:
    app = apps()
    client = TestClient(app, client=LOOPBACK)
    client.get("/healthz")
    response = client.get("/metrics")
    exported: dict[str, set[str]] = {}  # a series name -> its label names
    for family in text_string_to_metric_families(response.text):
        series = _series(family.name, family.type)
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
        for name in series:
            exported.setdefault(name, set())
    # a labelled family with no series yet (no stream open, no run training) shows no
    # labels in a scrape: these are theirs
    labels = {
        "lastedocation_sse_streams": {"route"},
        "lastedocation_run_tokens_per_second": {"run_id"},
    }
    for name, known in labels.items():
        exported.setdefault(name, set()).update(known)

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "two panels share an id"
    expressions = [
        target["expr"]
        for panel in panels
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(expressions) >= 10
    asked: set[str] = set()
    for expr in expressions:
        metrics = set(re.findall(r"\b((?:lastedocation|process)_[a-z0-9_]+)\b", expr))
        assert metrics, f"{expr!r} names no metric of the studio"
        assert metrics <= set(exported), f"{expr!r} asks for {metrics - set(exported)}"
        known = set().union(*(exported[m] for m in metrics)) | {"le"}
        used = {
            label.strip()
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in group.split(",")
            if label.strip()
        }
        used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)", expr))
        assert used <= known, f"{expr!r} uses labels {used - known}"
        asked |= metrics
    # every family of the studio is on the dashboard
    for family in FAMILIES:
        assert any(name.startswith(family) for name in asked), family


def _series(name: str, kind: str) -> list[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return [name + suffix for suffix in suffixes.get(kind, [""])]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # the panels of a collapsed row


def _templates(app: FastAPI) -> set[str]:
    schema = TestClient(app).get("/openapi.json").json()
    return set(schema["paths"])
