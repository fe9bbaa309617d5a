"""The runs pages: the list (filtered by state, several runs compared on one chart)
and a run's own page (live charts fed by server-sent events, progress with ETA, the
log tail, the controls its state allows, checkpoints with restore).

The live parts are plain ES modules (`static/js/runs.js`, `static/js/run-live.js`)
calling the JSON API; the `/runs/{id}/panel` fragment is what they reload when the
run's state changes, so the controls are decided in one place (the state machine).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.auth.models import User
from lastedocation.datasets import service as datasets
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.errors import InvalidInput, NotFound
from lastedocation.runs import service
from lastedocation.runs.live import WATCHED
from lastedocation.runs.models import Run
from lastedocation.runs.states import ACTIVE, FINAL, allowed_actions
from lastedocation.settings import Settings
from lastedocation.web.deps import PageUser
from lastedocation.web.i18n import Language, persian_digits
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)
STATES = ("queued", *ACTIVE, "paused", "interrupted", *FINAL)
LOG_TAIL = 100  # log lines a run's page starts with
CONTROL_LINES = {
    "pause": "Pause request taken: saving a checkpoint and stopping",
    "stop": "Stop request taken",
    "checkpoint": "Checkpoint request taken",
}


def duration(lang: Language, seconds: float | None) -> str:
    """`1:02:03` or `2:03` in the language's digits; a dash when unknown."""
    if seconds is None or seconds < 0:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return persian_digits(text) if lang.code == "fa" else text


def size(lang: Language, count: float | None) -> str:
    """Bytes as MiB or GiB."""
    if count is None:
        return "—"
    if count >= 2**30:
        return f"{lang.number(count / 2**30, 2)} GiB"
    return f"{lang.number(count / 2**20, 1)} MiB"


def clock(lang: Language, stamp: float | None) -> str:
    """An event's time of day (the server's clock)."""
    if stamp is None:
        return ""
    text = datetime.fromtimestamp(stamp).strftime("%H:%M:%S")
    return persian_digits(text) if lang.code == "fa" else text


def log_line(lang: Language, event: dict[str, Any]) -> dict[str, Any]:
    """One line of the log tail (run-live.js writes live lines the same way)."""
    _ = lang.gettext
    kind = event.get("type", "log")
    if kind == "state":
        text = _("State: {state}").format(state=_(str(event.get("state"))))
        if event.get("message"):
            text += f" — {event['message']}"
    elif kind == "checkpoint":
        text = _("Checkpoint saved at step {step}").format(step=lang.number(event.get("step")))
    elif kind == "control":
        text = _(CONTROL_LINES.get(str(event.get("action")), "Request done"))
    elif kind == "rewind":
        text = _("Went back to the checkpoint at step {step}").format(
            step=lang.number(event.get("to_step"))
        )
    else:
        text = str(event.get("message", ""))
    level = event.get("level", "error" if event.get("state") == "failed" else "info")
    return {
        "seq": event.get("seq"),
        "time": clock(lang, event.get("time")),
        "kind": kind,
        "level": level,
        "text": text,
    }


def find_run(session: Session, user: User, run_id: int) -> Run:
    """The run, if this user may see it; another member's run is not found."""
    if not 1 <= run_id <= MAX_DB_INT:
        raise NotFound(f"no run with id {run_id}")
    return service.get_run(session=session, run_id=run_id, user=user)


def panel_context(session: Session, settings: Settings, run: Run) -> dict[str, Any]:
    """What the state panel shows: state, progress, ETA, controls, checkpoints."""
    history = service.metrics_history(session=session, run_id=run.id, max_points=2)["metrics"]
    last = history[-1] if history else {}
    return {
        "run": run,
        "actions": allowed_actions(run.state),
        "eta_s": last.get("eta_s") if run.state in ACTIVE else None,
        "checkpoints": service.list_checkpoints(settings=settings, run=run),
    }


def helpers(lang: Language) -> dict[str, Any]:
    """Formatting for the templates, in the request's language."""
    return {
        "duration": lambda s: duration(lang, s),
        "size": lambda b: size(lang, b),
        "when": lambda t: lang.datetime(datetime.fromtimestamp(t, UTC)),
    }


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request, session: SessionDep, user: PageUser, state: str = ""
) -> HTMLResponse:
    """Every run this user may see, newest first; htmx asks for the table alone."""
    if state and state not in STATES:
        raise InvalidInput("unknown run state; choose one from the list")
    names = {d.id: d.name for d in datasets.list_datasets(session=session, user=user)}
    context = {
        "runs": service.list_runs(session=session, user=user, state=state or None),
        "state": state,
        "states": STATES,
        "dataset_names": names,
    }
    table_only = request.headers.get("HX-Request") and not request.headers.get(
        "HX-History-Restore-Request"
    )
    template = "runs/_table.html" if table_only else "runs/list.html"
    return render(request, template, context, user=user, nav="runs")


WORDS = {
    "loss": "Training loss",
    "val_loss": "Validation loss",
    "lr": "Learning rate",
    "tokens_per_s": "Tokens per second",
    "audio_per_s": "Audio seconds per second",
    "wer": "Word error rate",
    "cer": "Character error rate",
    "rss": "Process memory (MiB)",
    "device_memory": "GPU memory (MiB)",
    "step": "Step",
    "eta": "about {time} left",
    "state_line": "State: {state}",
    "checkpoint_line": "Checkpoint saved at step {step}",
    "control_line": "Request done",
    "rewind_line": "Went back to the checkpoint at step {step}",
    "live": "Live",
    "reconnecting": "Connection lost; reconnecting…",
    "resting": "The run is not training; the live view has stopped.",
    "gone": "This run is no longer available.",
    "failed": "Could not do this: {detail}",
    "confirm_delete": "Delete this run and its files? This cannot be undone.",
    "confirm_restore": (
        "Go back to the checkpoint at step {step}? Later checkpoints of this run are deleted."
    ),
}


def _page_data(lang: Language, run: Run) -> dict[str, Any]:
    """What run-live.js needs: where the stream starts, and its words."""
    _ = lang.gettext
    return {
        "id": run.id,
        "last_seq": run.last_seq,
        "state": run.state,
        "task": run.config.get("task", "text"),
        "watched": list(WATCHED),
        "words": {key: _(text) for key, text in WORDS.items()},
        "states": {state: _(state) for state in STATES},
        "controls": {action: _(text) for action, text in CONTROL_LINES.items()},
    }


@router.get("/runs/{run_id:int}", response_class=HTMLResponse)
def run_page(
    request: Request, run_id: int, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    lang = language(request)
    run = find_run(session, user, run_id)
    dataset = None
    if run.dataset_id is not None:
        try:
            dataset = datasets.get_dataset(session=session, dataset_id=run.dataset_id, user=user)
        except NotFound:  # an admin looking at a run on a dataset that is gone
            dataset = None
    events = service.logs(session=session, run_id=run.id, limit=MAX_DB_INT)[-LOG_TAIL:]
    context = {
        **panel_context(session, settings, run),
        **helpers(lang),
        "dataset": dataset,
        "preflight": service.read_preflight(settings, run),
        "log": [log_line(lang, event) for event in events],
        "page_data": _page_data(lang, run),
        "config_text": yaml.safe_dump(run.config, allow_unicode=True, sort_keys=False),
    }
    return render(request, "runs/detail.html", context, user=user, nav="runs")


@router.get("/runs/{run_id:int}/panel", response_class=HTMLResponse)
def run_panel(
    request: Request, run_id: int, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    """The state panel alone (run-live.js reloads it when the state changes)."""
    run = find_run(session, user, run_id)
    context = {**panel_context(session, settings, run), **helpers(language(request))}
    return render(request, "runs/_panel.html", context, user=user, nav="runs")
