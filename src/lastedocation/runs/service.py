"""Run services: create, list, get, control (pause/resume/stop/checkpoint), delete,
ingest the trainer's events, metrics history and logs.

The trainer process owns the truth (its events.jsonl); the database is a query
copy fed by `ingest`, which applies `rewind` events so each step is stored once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from lastedocation import ownership
from lastedocation.auth.models import User
from lastedocation.datasets.service import get_dataset
from lastedocation.errors import InvalidInput, NotFound
from lastedocation.paths import hide_data_dir
from lastedocation.runs import sources, states
from lastedocation.runs.models import Run, RunEvent
from lastedocation.runs.preflight import preflight
from lastedocation.settings import Settings
from lastedocation.training import checkpoint as ckpt
from lastedocation.training.config import ConfigError, RunConfig, dump_config
from lastedocation.training.events import write_control

_TRAINER_STATES = {"paused", "stopped", "completed", "failed"}


def run_folder(settings: Settings, run: Run) -> Path:
    return settings.data_dir / run.folder


def create_run(
    *, session: Session, settings: Settings, user: User, dataset_id: int, config: dict[str, Any]
) -> Run:
    """Check the config and every id it names (every problem at once), run the
    pre-flight and queue the run."""
    dataset = get_dataset(session=session, dataset_id=dataset_id, user=user)
    try:
        resolved = sources.resolve(
            session=session, settings=settings, user=user, dataset=dataset, config=config
        )
    except ConfigError as exc:
        raise InvalidInput(exc.detail, problems=exc.extra["problems"]) from None
    staging = Path(tempfile.mkdtemp(prefix="run-", dir=settings.tmp_dir))
    try:
        # the trainer's data path over every row, before anything is queued
        if resolved.trainer.task == "speech":  # every clip decodes, every transcript fits
            from lastedocation.training.whisper_data import check_speech_run

            checked = check_speech_run(resolved.trainer)
        else:
            checked = preflight(resolved.trainer, base=staging / "base")
        run = Run(
            name=resolved.trainer.name,
            state="queued",
            config=resolved.public,
            folder="",
            dataset_id=dataset.id,
            owner_id=user.id,
        )
        return _queue(session, settings, run, resolved.trainer, checked, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _queue(
    session: Session,
    settings: Settings,
    run: Run,
    trainer_config: RunConfig,
    checked: dict[str, Any],
    staging: Path,
) -> Run:
    session.add(run)
    session.flush()
    run.folder = f"runs/{run.id:06d}"
    folder = run_folder(settings, run)
    folder.mkdir(parents=True, exist_ok=True)
    dump_config(trainer_config, folder / "config.yaml")  # the paths stay in the run folder
    if (staging / "base").is_dir():
        os.replace(staging / "base", folder / "base")
    (folder / "preflight.json").write_text(json.dumps(checked), encoding="utf-8")
    session.commit()
    return run


def read_preflight(settings: Settings, run: Run) -> dict[str, Any] | None:
    path = run_folder(settings, run) / "preflight.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def list_runs(*, session: Session, user: User, state: str | None = None) -> list[Run]:
    """The runs `user` may see: their own, or all of them for an admin."""
    query = select(Run).where(ownership.visible(user, "run", Run.owner_id))
    query = query.order_by(Run.id.desc())
    if state:
        query = query.where(Run.state == state)
    return list(session.scalars(query))


def get_run(*, session: Session, run_id: int, user: User | None, lock: bool = False) -> Run:
    """The run, if `user` may see it (another member's run answers 404).
    user None is the studio itself (the event stream checks once, up front).
    lock: read it afresh and hold its row until the commit, to change it (another
    server's supervisor may be changing it too)."""
    run = session.get(Run, run_id, with_for_update=lock, populate_existing=lock)
    if run is None:
        raise NotFound(f"no run with id {run_id}", run_id=run_id)
    ownership.check(user, "run", run_id, run.owner_id)
    return run


def request(*, session: Session, settings: Settings, run: Run, action: str) -> str | None:
    """Pause, resume, stop or checkpoint; returns the control request id, if any."""
    states.check(action, run.state)
    if action == "resume":
        run.state, run.message, run.exit_code = "queued", None, None
        session.commit()
        return None
    if action == "stop" and run.state in ("queued", "paused", "interrupted"):
        run.state, run.finished_at = "stopped", datetime.now(UTC)
        session.commit()
        return None
    request_id = uuid.uuid4().hex[:12]
    write_control(run_folder(settings, run), action, request_id)
    if action in ("pause", "stop"):
        run.state = "pausing" if action == "pause" else "stopping"
    session.commit()
    return request_id


def delete_run(*, session: Session, settings: Settings, run: Run) -> None:
    states.check("delete", run.state)
    folder = run_folder(settings, run)
    session.execute(delete(RunEvent).where(RunEvent.run_id == run.id))
    session.delete(run)
    session.commit()
    shutil.rmtree(folder, ignore_errors=True)


def ingest(*, session: Session, settings: Settings, run: Run) -> int:
    """Copy new complete lines of the run's events.jsonl into the database."""
    path = run_folder(settings, run) / "events.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(run.events_offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    rows: list[dict[str, Any]] = []  # stored together: a third of the time of row by row
    count = 0
    for line in data[:end].splitlines():
        event = json.loads(line)
        if event["seq"] <= run.last_seq:
            continue
        if "message" in event:  # tracebacks and library messages name files by their path
            event["message"] = hide_data_dir(event["message"], settings.data_dir)
        if event["type"] == "rewind":  # the steps it voids must be stored to be deleted
            _store(session, rows)
        _apply(session, run, event)
        rows.append(
            {
                "run_id": run.id,
                "seq": event["seq"],
                "type": event["type"],
                "step": event.get("step"),
                "data": event,
            }
        )
        count += 1
    _store(session, rows)
    run.events_offset += end
    session.commit()
    return count


def _store(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(RunEvent), rows)
        rows.clear()


def _apply(session: Session, run: Run, event: dict[str, Any]) -> None:
    kind = event["type"]
    if kind == "rewind":  # the trainer went back to a checkpoint: later steps are void
        session.execute(
            delete(RunEvent).where(
                RunEvent.run_id == run.id,
                RunEvent.type.in_(("metrics", "eval")),
                RunEvent.step > event["to_step"],
            )
        )
    run.last_seq = event["seq"]
    if kind == "metrics":
        run.step, run.total_steps = event["step"], event["total_steps"]
    elif kind == "state":
        _apply_state(run, event)


def _apply_state(run: Run, event: dict[str, Any]) -> None:
    trainer_state = event["state"]
    if trainer_state == "running":
        run.total_steps = event.get("total_steps", run.total_steps)
        if run.state == "starting":
            run.state = "running"
    elif trainer_state in _TRAINER_STATES:
        run.state = trainer_state
        run.message = event.get("message")
        run.pid = None
        if trainer_state != "paused":
            run.finished_at = datetime.now(UTC)


def events_after(*, session: Session, run_id: int, after: int, limit: int = 500) -> list[RunEvent]:
    query = (
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > after)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list(session.scalars(query))


def metrics_history(
    *, session: Session, run_id: int, max_points: int | None = 500
) -> dict[str, list[dict[str, Any]]]:
    """Each series (training metrics, evaluations), downsampled to `max_points`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("metrics", "eval"):
        rows = session.scalars(
            select(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.type == kind)
            .order_by(RunEvent.step, RunEvent.seq)
        ).all()
        points = [row.data for row in rows]
        out[kind] = _downsample(points, max_points)
    return out


def _downsample(points: list[dict[str, Any]], max_points: int | None) -> list[dict[str, Any]]:
    if max_points is None or len(points) <= max_points:
        return points
    stride = len(points) / max_points
    picked = [points[int(i * stride)] for i in range(max_points - 1)]
    return [*picked, points[-1]]


def logs(
    *, session: Session, run_id: int, offset: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(RunEvent)
        .where(
            RunEvent.run_id == run_id, RunEvent.type.in_(("log", "state", "control", "checkpoint"))
        )
        .order_by(RunEvent.seq)
        .offset(offset)
        .limit(limit)
    ).all()
    return [row.data for row in rows]


def list_checkpoints(*, settings: Settings, run: Run) -> list[dict[str, Any]]:
    root = run_folder(settings, run) / "checkpoints"
    out = []
    for step, folder in ckpt.list_checkpoints(root):
        try:
            manifest = json.loads((folder / ckpt.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # pruned by the trainer while we looked
            continue
        out.append({"step": step, "name": folder.name, "created": manifest["created"]})
    return out


def restore(*, session: Session, settings: Settings, run: Run, step: int, as_new_run: bool) -> Run:
    """Train on from the checkpoint at `step`: in place (later checkpoints are
    dropped and the run rewinds) or as a new run that starts from it."""
    states.check("restore", run.state)
    source = run_folder(settings, run) / "checkpoints" / ckpt.checkpoint_name(step)
    try:
        ckpt.verify(source)
    except ckpt.CheckpointError as exc:
        raise NotFound(f"run {run.id} has no usable checkpoint at step {step}: {exc}") from None
    if not as_new_run:
        for later, folder in ckpt.list_checkpoints(source.parent):
            if later > step:
                shutil.rmtree(folder)
        run.state, run.message, run.exit_code, run.finished_at = "queued", None, None, None
        session.commit()
        return run
    copy = Run(
        name=f"{run.name} (from step {step})",
        state="queued",
        config=run.config,
        folder="",
        dataset_id=run.dataset_id,
        owner_id=run.owner_id,
        message=f"restored from run {run.id}, step {step}",
    )
    session.add(copy)
    session.flush()
    copy.folder = f"runs/{copy.id:06d}"
    target = run_folder(settings, copy)
    origin = run_folder(settings, run)
    target.mkdir(parents=True)
    for name in ("config.yaml", "preflight.json"):
        if (origin / name).is_file():
            shutil.copy2(origin / name, target / name)
    if (origin / "base").is_dir():
        shutil.copytree(origin / "base", target / "base")
    shutil.copytree(source, target / "checkpoints" / source.name)
    session.commit()
    return copy
