"""The new-run form: dataset, model source, method, hyperparameters with short help
(the run config's own field descriptions) and presets. Submitting calls the same
service as `POST /api/v1/runs`; every config problem is shown at once, next to its
field, and a run that passes the pre-flight opens on its own page.

Each form control is named by its config path (`training.lr`), so a problem the
config reports (`{"field": "training.lr", ...}`) lands next to the control.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from sqlalchemy.orm import Session

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.auth.models import User
from lastedocation.datasets import service as datasets
from lastedocation.errors import InvalidInput, NotFound
from lastedocation.models import registry
from lastedocation.runs import service
from lastedocation.runs.schemas import RunCreate
from lastedocation.system import gpu_figures
from lastedocation.training.config import (
    SPEECH_PRESETS,
    DataConfig,
    LoraSettings,
    ModelConfig,
    RunConfig,
    SpeechSettings,
    TrainingConfig,
)
from lastedocation.web.deps import CsrfChecked, PageUser
from lastedocation.web.i18n import Language
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)


# Config fields that are not on the form: the dataset gives the data and its format.
NOT_ON_FORM = {
    "data.train",
    "data.validation",
    "data.data_format",
    "data.question_field",
    "data.answer_field",
    "model.cache_dir",
    "lora.target_modules",
}
# Sane starting points; each is the config's defaults plus these values.
PRESETS: dict[str, dict[str, str]] = {
    "quick": {
        "model.source": "scratch",
        "model.preset": "llama-tiny",
        "model.vocab_size": "1000",
        "training.max_steps": "50",
        "training.seq_len": "128",
        "training.batch_size": "4",
        "training.lr": "0.001",
        "training.eval_every": "10",
        "training.save_every": "25",
        "training.threads": "1",
    },
    # Whisper fine-tuning: the registry model is chosen on the page (the bundled
    # whisper-base when it is there); a low rate, so Whisper keeps what it knew.
    "speech": {
        "task": "speech",
        "model.source": "registry",
        "training.max_steps": "200",
        "training.batch_size": "8",
        "training.lr": "1e-05",
        "training.warmup_steps": "20",
        "training.eval_every": "50",
        "training.save_every": "100",
        "speech.freeze_encoder": "on",
    },
    "small": {
        "model.source": "scratch",
        "model.preset": "llama-small",
        "model.vocab_size": "8000",
        "training.epochs": "3",
        "training.lr": "0.0005",
        "training.warmup_steps": "100",
        "training.eval_every": "100",
        "training.save_every": "500",
    },
    "lora": {
        "model.source": "hub",
        "training.method": "lora",
        "lora.r": "16",
        "lora.alpha": "32",
        "lora.dropout": "0.05",
        "training.epochs": "2",
        "training.seq_len": "1024",
        "training.batch_size": "4",
        "training.grad_accum": "4",
        "training.lr": "0.0002",
        "training.warmup_steps": "50",
        "training.eval_every": "100",
        "training.save_every": "200",
    },
}
SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "lora": LoraSettings,
    "speech": SpeechSettings,
}
# Fields that mean something for one task only: the page hides the others, and a
# hidden field is not sent to the service (a leftover value must not fail the run).
TEXT_ONLY = frozenset(
    {
        "model.vocab_size",
        "training.seq_len",
        "training.packing",
        "data.split_key",
        "data.normalize",
        "data.drop_invalid",
    }
)
BUNDLED_SPEECH_MODEL = "whisper-base"


@dataclass(frozen=True)
class FormField:
    """A control of the form, as the run config defines it."""

    name: str  # the config path, e.g. "training.lr"
    kind: str  # bool, choice, number or text
    choices: tuple[str, ...]
    default: str
    description: str


def _form_field(name: str, info: FieldInfo) -> FormField:
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):  # `X | None`: X
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    kind = "number" if annotation in (int, float) else "text"
    if annotation is bool:
        kind = "bool"
    elif get_origin(annotation) is Literal:
        kind = "choice"
    value = info.default
    if isinstance(value, bool):
        value = "on" if value else ""
    return FormField(
        name=name,
        kind=kind,
        choices=tuple(str(a) for a in get_args(annotation)) if kind == "choice" else (),
        default="" if value is None else str(value),
        description=info.description or "",
    )


FIELDS = {
    f"{section}.{key}": _form_field(f"{section}.{key}", info)
    for section, model in SECTIONS.items()
    for key, info in model.model_fields.items()
    if f"{section}.{key}" not in NOT_ON_FORM
}
# What the API takes beyond the trainer's config: models and datasets by id (members
# never name server paths; `local` and `model.path` are shown to admins only).
FIELDS["model.source"] = FormField(
    name="model.source",
    kind="choice",
    choices=("scratch", "registry", "hub", "local"),
    default="scratch",
    description="scratch: a small model and tokenizer trained here.",
)
FIELDS["model.model_id"] = FormField(
    name="model.model_id",
    kind="model",
    choices=(),
    default="",
    description="A model from the registry: yours, or one shared with every account.",
)
FIELDS["data.validation_dataset_id"] = FormField(
    name="data.validation_dataset_id",
    kind="dataset",
    choices=(),
    default="",
    description="Another dataset to evaluate on; empty: part of the training data is held out.",
)
FIELDS["task"] = _form_field("task", RunConfig.model_fields["task"])
ADMIN_ONLY = frozenset({"model.path"})


def task_of(name: str) -> str:
    """The task a field belongs to ("" for both)."""
    if name.startswith("speech."):
        return "speech"
    return "text" if name in TEXT_ONLY else ""


def defaults(preset: str = "") -> dict[str, str]:
    """The form's starting values: the config's defaults, then the preset's."""
    values = {name: field.default for name, field in FIELDS.items()}
    return {"name": "", "dataset_id": "", **values, **PRESETS.get(preset, {})}


def from_form(form: dict[str, str]) -> dict[str, str]:
    """The submitted values. A checkbox follows a hidden empty field of the same name
    (the last value wins): "" when unticked, "on" when ticked."""
    values = {"name": form.get("name", ""), "dataset_id": form.get("dataset_id", "")}
    for name in FIELDS:
        values[name] = form.get(name, "").strip()
    return values


def run_body(values: dict[str, str]) -> dict[str, Any]:
    """The `POST /api/v1/runs` body: blank fields take the config's defaults."""
    body: dict[str, Any] = {"dataset_id": values["dataset_id"] or None}
    if values["name"].strip():
        body["name"] = values["name"].strip()
    task = values["task"] or "text"
    for name, field in FIELDS.items():
        value: Any = values[name]
        if task_of(name) not in ("", task):
            continue  # hidden for this task
        if field.kind == "bool":
            value = value == "on"
        elif value == "":
            continue
        section, _, key = name.rpartition(".")
        if section:
            body.setdefault(section, {})[key] = value
        else:
            body[key] = value  # top level: the task
    return body


# The config's messages, in the user's language: (pattern, message with {0}).
_PROBLEMS = [
    (r"Input should be greater than or equal to (\S+)", "must be at least {0}"),
    (r"Input should be greater than (\S+)", "must be greater than {0}"),
    (r"Input should be less than or equal to (\S+)", "must be at most {0}"),
    (r"Input should be less than (\S+)", "must be less than {0}"),
    (r"Input should be a valid integer.*", "must be a whole number"),
    (r"Input should be a valid number.*", "must be a number"),
    (r"Input should be (.+)", "must be one of: {0}"),
    (r"String should have at most (\d+) characters?", "at most {0} characters"),
    (r"Field required", "required"),
    (r"no (?:dataset|row) with id \d+.*", "choose one of your datasets"),
    (r"no file at .*", "choose one of your datasets"),
    (r"no model with id \d+.*", "choose one of your models or a shared one"),
    (r"only an admin may name a server path.*", "only an admin may name a folder on the server"),
    (
        r"(\S+) is outside the folders admins may name.*",
        "{0} is outside the folders admins may name (LASTEDOCATION_SERVER_ROOTS)",
    ),
    (r"\S+ is inside the studio's data folder.*", "name datasets and models by their id"),
    (r"(.+) has no config\.json \(not a HF model\)", "{0} is not a Hugging Face model folder"),
    (r"this machine has (\d+) GPU\(s\).*", "this machine has {0} GPU(s); ask for no more"),
    (
        r"dataset (?:'(.+)'|\"(.+)\") is a text dataset; a speech run needs a speech dataset.*",
        "{0} is a text dataset; a speech run needs a speech dataset",
    ),
    (
        r"dataset (?:'(.+)'|\"(.+)\") is a speech dataset; a text run needs a text dataset.*",
        "{0} is a speech dataset; a text run needs a text dataset (or choose the speech task)",
    ),
    (
        r"model (?:'(.+)'|\"(.+)\") is a text model; a speech run needs a speech model.*",
        "{0} is a text model; a speech run needs a speech model",
    ),
    (
        r"model (?:'(.+)'|\"(.+)\") is a speech model; a text run needs a text model.*",
        "{0} is a speech model; a text run needs a text model (or choose the speech task)",
    ),
    (
        r"a speech run needs a Whisper model.*",
        "a speech run needs a Whisper model: a speech model of the studio, one from the Hub, "
        "or the whisper-tiny-random size",
    ),
    (r"(\S+) is a speech model: set task: speech", "{0} is a speech model: choose the speech task"),
    (r"speech runs train full or lora", "speech runs train full or lora"),
    (r"speech runs train on one device", "speech runs train on one device"),
    (r"a text-run option.*", "a text-run option: leave it empty for a speech run"),
    (r"'(.+)' is not a Whisper language code", "{0} is not a Whisper language code"),
]


def translate_problem(lang: Language, message: str) -> str:
    """A known config message in the user's language; others as they are."""
    for pattern, text in _PROBLEMS:
        match = re.fullmatch(pattern, message, flags=re.DOTALL)
        if match:
            found = [a for a in match.groups() if a is not None]  # (?:'x'|"x"): one of two
            args = [lang.number(float(a)) if _numeric(a) else a for a in found]
            return lang.gettext(text).format(*args)
    return lang.gettext(message)


def _numeric(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?", text) is not None


def problems_of(
    lang: Language, exc: InvalidInput | NotFound | ValidationError
) -> dict[str, list[str]]:
    """Each problem under its form control ("" for the form as a whole)."""
    if isinstance(exc, ValidationError):
        found = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
    elif isinstance(exc, NotFound):
        found = [{"field": "dataset_id", "message": exc.detail}]
    else:
        found = exc.extra.get("problems") or [
            {"field": exc.extra.get("field"), "message": exc.detail}
        ]
    out: dict[str, list[str]] = {}
    names = {*FIELDS, "name", "dataset_id"}
    for problem in found:
        field = str(problem.get("field") or "")
        field = "dataset_id" if field in ("data", "data.train") else field
        message = translate_problem(lang, str(problem["message"]))
        if field not in names:  # the form as a whole: say which setting
            message, field = (f"{field}: {message}" if field else message), ""
        out.setdefault(field, []).append(message)
    return out


def _form(
    request: Request,
    session: Session,
    user: User,
    values: dict[str, str],
    problems: dict[str, list[str]],
    status_code: int = 200,
) -> HTMLResponse:
    models = [
        *registry.list_models(session=session, user=user, kind="text"),
        *registry.list_models(session=session, user=user, kind="speech"),
    ]
    presets = {name: {**defaults(), **preset} for name, preset in PRESETS.items()}
    presets["speech"]["model.model_id"] = bundled_speech_id(models)
    context = {
        "fields": FIELDS,
        "values": values,
        "problems": problems,
        "defaults": defaults(),
        "presets": presets,
        "datasets": datasets.list_datasets(session=session, user=user),
        "models": models,
        "task_of": task_of,
        "speech_presets": SPEECH_PRESETS,
        "gpus": len(gpu_figures()),
    }
    return render(request, "runs/new.html", context, user=user, nav="runs", status_code=status_code)


@router.get("/runs/new", response_class=HTMLResponse)
def new_run_page(
    request: Request, session: SessionDep, user: PageUser, preset: str = "", dataset: str = ""
) -> HTMLResponse:
    values = defaults(preset if preset in PRESETS else "")
    values["dataset_id"] = dataset
    if preset == "speech":  # a preset cannot know the id: the bundled model, if any
        speech = registry.list_models(session=session, user=user, kind="speech")
        values["model.model_id"] = bundled_speech_id(speech)
    return _form(request, session, user, values, {})


def bundled_speech_id(models: list[Any]) -> str:
    """The id of the bundled Whisper model among `models` ("" when it is not there)."""
    found = [m for m in models if m.kind == "speech" and m.name == BUNDLED_SPEECH_MODEL]
    bundled = [m for m in found if m.source == "bundled"] or found
    return str(bundled[0].id) if bundled else ""


async def _form_fields(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(_form_fields)]


@router.post("/runs/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
def new_run_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    form: FormFields,
) -> Response:
    """Check everything (all problems at once), run the pre-flight, queue the run."""
    values = from_form(form)
    if not user.is_admin:
        values = {name: ("" if name in ADMIN_ONLY else value) for name, value in values.items()}
    try:
        body = RunCreate.model_validate(run_body(values))
        run = service.create_run(
            session=session,
            settings=settings,
            user=user,
            dataset_id=body.dataset_id,
            config=body.config(),
        )
    except (ValidationError, InvalidInput, NotFound) as exc:
        problems = problems_of(language(request), exc)
        return _form(request, session, user, values, problems, status_code=400)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
