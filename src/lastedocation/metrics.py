"""The studio's Prometheus metrics: one registry per app, read by `GET /metrics`.

    metrics = StudioMetrics(settings=settings, sessions=sessions)   # in create_app
    metrics.render(accept)   # the exposition text and its content type

Two kinds of figures:

- counted as requests are served (`api/observe.py` feeds them): requests by method,
  route template and status, the time to the response's start (a stream's first byte,
  not its end), and the event streams open now;
- read from the database and the run folders at scrape time (`StudioCollector`), so
  they are the same whichever server process answers: runs by state, the queue, the
  trainers' tokens/s, how far event ingestion is behind, background jobs by state and
  each backup target's last good backup. Each is one small query (counts grouped by an
  indexed state, or a row per active run).

With several server processes (uvicorn --workers) the request figures are each
process's own; the scraped ones are the studio's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from lastedocation.backup import entries as backup
from lastedocation.models.entries import ModelEvaluation
from lastedocation.runs import service as runs
from lastedocation.runs.models import Run, RunEvent
from lastedocation.runs.states import ACTIVE, FINAL
from lastedocation.settings import Settings
from lastedocation.speech import entries as speech

log = logging.getLogger("lastedocation.metrics")
RUN_STATES = ("queued", *ACTIVE, "paused", "interrupted", *FINAL)
EVALUATION_STATES = ("queued", "running", "completed", "failed")
# time to the response's start: most answers take milliseconds; uploads and a model's
# first token can take a minute
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
MAX_LINE = 1 << 20  # the oldest waiting event is read to learn its time; lines are short


class StudioMetrics:
    """One app's registry: the request figures it counts and the collector it asks."""

    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lastedocation_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lastedocation_http_request_duration_seconds",
            "Seconds from a request's arrival to its response's start (for a stream: its "
            "headers, not its end), by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.streams = Gauge(
            "lastedocation_sse_streams",
            "Server-sent event streams open now (run events, job progress, chat), by route.",
            ["route"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(StudioCollector(settings=settings, sessions=sessions))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asks for, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class StudioCollector(Collector):
    """Figures read from the database and the run folders at each scrape."""

    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "lastedocation_database_up", "1 when the database answered this scrape, else 0."
        )
        try:
            with self.sessions() as session:
                families = [
                    *_runs(session),
                    *_ingestion(session, self.settings),
                    *_jobs(session, self.settings),
                ]
        except Exception:  # the scrape still answers, and says the database did not
            log.exception("reading the studio's figures failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def describe(self) -> Iterator[Metric]:
        return iter(())  # not asked at registration: the database is read at scrapes only


def _runs(session: Session) -> list[Metric]:
    by_state = _counts(session, Run.state)
    states = GaugeMetricFamily("lastedocation_runs", "Runs in each state.", labels=["state"])
    for state in sorted({*RUN_STATES, *by_state}):
        states.add_metric([state], by_state.get(state, 0))
    queue = GaugeMetricFamily(
        "lastedocation_run_queue_length", "Runs waiting for a device (state queued)."
    )
    queue.add_metric([], by_state.get("queued", 0))
    speed = GaugeMetricFamily(
        "lastedocation_run_tokens_per_second",
        "Training throughput of each active run: tokens/s of its latest metrics event.",
        labels=["run_id"],
    )
    for run_id in session.scalars(select(Run.id).where(Run.state.in_(ACTIVE))):
        latest = session.scalar(
            select(RunEvent.data)
            .where(RunEvent.run_id == run_id, RunEvent.type == "metrics")
            .order_by(RunEvent.seq.desc())
            .limit(1)
        )
        if latest is not None and isinstance(latest.get("tokens_per_s"), int | float):
            speed.add_metric([str(run_id)], float(latest["tokens_per_s"]))
    return [states, queue, speed]


def _ingestion(session: Session, settings: Settings) -> list[Metric]:
    """How far the database is behind the trainers' events.jsonl files: the bytes not yet
    copied, and how long the oldest complete event not yet copied has waited (by the
    time the trainer wrote on it). 0 and 0 when ingestion has caught up."""
    backlog, lag, now = 0, 0.0, time.time()
    for run in session.scalars(select(Run).where(Run.state.in_(ACTIVE))):
        path = runs.run_folder(settings, run) / "events.jsonl"
        try:
            behind = path.stat().st_size - run.events_offset
            if behind <= 0:
                continue
            backlog += behind
            with path.open("rb") as f:
                f.seek(run.events_offset)
                line = f.readline(MAX_LINE)
            if line.endswith(b"\n"):  # a line still being written is not ingestible yet
                lag = max(lag, now - float(json.loads(line)["time"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no log yet, or a line the ingestion itself will report
    waiting = GaugeMetricFamily(
        "lastedocation_ingestion_backlog_bytes",
        "Bytes of active runs' events.jsonl files not yet copied into the database.",
    )
    waiting.add_metric([], backlog)
    seconds = GaugeMetricFamily(
        "lastedocation_ingestion_lag_seconds",
        "Age of the oldest trainer event not yet in the database (0: caught up).",
    )
    seconds.add_metric([], max(lag, 0.0))
    return [waiting, seconds]


def _jobs(session: Session, settings: Settings) -> list[Metric]:
    rows = session.execute(
        select(backup.BackupJob.kind, backup.BackupJob.state, func.count()).group_by(
            backup.BackupJob.kind, backup.BackupJob.state
        )
    ).all()
    found = {(kind, state): count for kind, state, count in rows}
    jobs = GaugeMetricFamily(
        "lastedocation_backup_jobs",
        "Backup jobs (backup, verify, prune, restore) by kind and state, since the start.",
        labels=["kind", "state"],
    )
    for kind in sorted({*backup.KINDS, *(k for k, _ in found)}):
        for state in sorted({*backup.ACTIVE, *backup.ENDED, *(s for _, s in found)}):
            jobs.add_metric([kind, state], found.get((kind, state), 0))
    last_good = dict(
        session.execute(
            select(backup.BackupJob.target, func.max(backup.BackupJob.finished_at))
            .where(backup.BackupJob.kind == "backup", backup.BackupJob.state == "done")
            .group_by(backup.BackupJob.target)
        ).all()
    )
    good = GaugeMetricFamily(
        "lastedocation_backup_last_success_timestamp_seconds",
        "When each configured target's last backup succeeded (Unix time; 0: never).",
        labels=["target"],
    )
    for target in settings.backup_targets:
        good.add_metric([target.name], _timestamp(last_good.get(target.name)))
    evaluations = _by_state(
        session,
        ModelEvaluation.state,
        EVALUATION_STATES,
        "lastedocation_evaluation_jobs",
        "Model evaluations by state.",
    )
    transcriptions = _by_state(
        session,
        speech.Transcription.state,
        speech.STATES,
        "lastedocation_transcription_jobs",
        "Background transcriptions by state.",
    )
    return [jobs, good, evaluations, transcriptions]


def _by_state(
    session: Session, column: Any, known: tuple[str, ...], name: str, documentation: str
) -> Metric:
    found = _counts(session, column)
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in sorted({*known, *found}):
        family.add_metric([state], found.get(state, 0))
    return family


def _counts(session: Session, column: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    return {str(value): int(count) for value, count in rows}


def _timestamp(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
