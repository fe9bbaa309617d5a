"""What a run trains on, named by id, turned into the trainer's paths.

A run config from the API or the web UI never names a server path for a member:
the training data is the run's dataset, validation data is another dataset
(`data.validation_dataset_id`), and the base model is a registry model
(`model.source: registry` with `model.model_id`), a Hub id, or a model trained from
scratch. Each id is checked against its owner (`lastedocation.ownership`) as if the
user asked for the object itself, and against the run's task: a speech run (`task:
speech`) takes speech datasets and a speech (Whisper) model, a text run text ones.
Admins may also name files and folders under the roots the operator allows
(`lastedocation.paths`).

Two configs come out: the public one (ids, no paths), which the run row keeps and
the API shows, and the trainer's (paths), which only the run folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from lastedocation.auth.models import User
from lastedocation.datasets.models import Dataset
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.datasets.service import get_dataset, records_path
from lastedocation.errors import StudioError
from lastedocation.paths import PathRefused, server_path
from lastedocation.settings import Settings
from lastedocation.training.config import ConfigError, RunConfig, parse_config

_MEMBER_PATH = {
    "data.validation": "members name validation data by data.validation_dataset_id",
    "model.path": "members name a base model by model.source registry and model.model_id",
    "model.cache_dir": "the studio keeps Hub downloads in its own cache",
}


@dataclass(frozen=True)
class ResolvedConfig:
    trainer: RunConfig  # with the paths the trainer reads
    public: dict[str, Any]  # with ids: what the run row keeps and the API shows


def resolve(
    *, session: Session, settings: Settings, user: User, dataset: Dataset, config: dict[str, Any]
) -> ResolvedConfig:
    """Check every reference in `config` against `user`, then the whole config; every
    problem at once, each naming its field."""
    problems: list[tuple[str, str]] = []
    data, model = _section(config, "data", problems), _section(config, "model", problems)
    task = config.get("task", "text")
    problems.extend(_kind_problems("dataset_id", "dataset", dataset, task))
    if "train" in data:
        problems.append(("data.train", "the run's dataset gives the training data (dataset_id)"))
    data["train"] = str(records_path(settings, dataset))
    validation_id = _id(data, "validation_dataset_id", "data", problems)
    model_id = _id(model, "model_id", "model", problems)
    from_registry = model.get("source") == "registry"
    if model.get("source") == "local" and not user.is_admin:
        problems.append(("model.source", _MEMBER_PATH["model.path"] + " (local is for admins)"))
    if validation_id is not None and data.get("validation") is not None:
        problems.append(("data.validation", "give validation_dataset_id or validation"))
    # first the paths the caller named (admins only), then what the ids name
    for section, key, kind in (
        (data, "validation", "file"),
        (model, "path", "folder"),
        (model, "cache_dir", "any"),
    ):
        if section.get(key) is not None and not (from_registry and key == "path"):
            problems.extend(_server_path(settings, user, section, key, kind))  # type: ignore[arg-type]
    if validation_id is not None:
        try:
            held_out = get_dataset(session=session, dataset_id=validation_id, user=user)
            data["validation"] = str(records_path(settings, held_out))
            problems.extend(_kind_problems("data.validation_dataset_id", "dataset", held_out, task))
        except StudioError as exc:
            problems.append(("data.validation_dataset_id", exc.detail))
    if from_registry and model_id is not None:
        problems.extend(_registry_model(session, settings, user, model, model_id, task))
    elif from_registry and not any(field == "model.model_id" for field, _ in problems):
        problems.append(
            ("model.model_id", "source is registry: give the id of a model you can see")
        )
    elif not from_registry and model_id is not None:
        problems.append(("model.model_id", "a model id is for model.source registry"))
    default_cache = "cache_dir" not in model or model["cache_dir"] is None
    if default_cache:
        model["cache_dir"] = str(settings.hub_cache_dir)
    trainer = _parse({**config, "data": data, "model": model}, problems)
    public = trainer.model_dump(mode="json")
    del public["data"]["train"]
    public["data"]["validation_dataset_id"] = validation_id
    if validation_id is not None:
        del public["data"]["validation"]
    if from_registry:
        public["model"].update(source="registry", model_id=model_id)
        del public["model"]["path"]
    if default_cache:
        del public["model"]["cache_dir"]
    return ResolvedConfig(trainer, public)


def _section(config: dict[str, Any], name: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        problems.append((name, "must be a mapping of fields"))
        return {}
    return dict(value)


def _id(
    section: dict[str, Any], key: str, name: str, problems: list[tuple[str, str]]
) -> int | None:
    """The id under `key` (taken out of the section), or None when not given or wrong
    (then a problem says so)."""
    value = section.pop(key, None)
    if isinstance(value, str) and value.isdigit() and len(value) < 20:  # as pydantic's lax mode
        value = int(value)
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DB_INT
    ):
        return value
    problems.append((f"{name}.{key}", "must be an id: a whole number, 1 or more"))
    return None


def _kind_problems(field: str, noun: str, thing: Any, task: Any) -> list[tuple[str, str]]:
    """A speech run needs speech data and a speech model; a text run text ones."""
    if task not in ("text", "speech") or thing.kind == task:
        return []  # an unknown task is the config's own problem, reported with it
    fix = "set task: speech to fine-tune Whisper" if thing.kind == "speech" else "set task: text"
    message = f"{noun} {thing.name!r} is a {thing.kind} {noun}; a {task} run needs a {task} {noun}"
    return [(field, f"{message} (or {fix})")]


def _registry_model(
    session: Session,
    settings: Settings,
    user: User,
    model: dict[str, Any],
    model_id: int,
    task: Any = "text",
) -> list[tuple[str, str]]:
    from lastedocation.models.registry import get_model, model_folder

    if "path" in model:
        return [("model.path", "source is registry: name the model by model.model_id only")]
    try:
        entry = get_model(session=session, model_id=model_id, user=user)
    except StudioError as exc:
        return [("model.model_id", exc.detail)]
    kind = _kind_problems("model.model_id", "model", entry, task)
    if kind:
        return kind
    model.update(source="local", path=str(model_folder(settings, entry)))
    return []


def _server_path(
    settings: Settings, user: User, section: dict[str, Any], key: str, kind: str
) -> list[tuple[str, str]]:
    field = f"{'data' if key == 'validation' else 'model'}.{key}"
    if not user.is_admin:
        del section[key]  # never looked at: not even whether it exists
        return [(field, f"only an admin may name a server path; {_MEMBER_PATH[field]}")]
    try:
        section[key] = str(
            server_path(
                section[key],
                roots=settings.server_roots,
                data_dir=settings.data_dir,
                field=field,
                kind=kind,  # type: ignore[arg-type]
            )
        )
    except PathRefused as exc:
        return [(field, exc.detail.removeprefix(f"{field}: "))]
    return []


def _parse(raw: dict[str, Any], problems: list[tuple[str, str]]) -> RunConfig:
    """The trainer's config; raises with the reference problems and the config's own."""
    try:
        parsed = parse_config(raw)
    except ConfigError as exc:
        seen = {field for field, _ in problems}
        problems = problems + [(f, m) for f, m in exc.problems if f not in seen]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return parsed
