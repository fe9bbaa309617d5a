"""The `lastedocation` command: thin commands over the same services as the API."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lastedocation.auth import service as accounts
from lastedocation.auth import setup
from lastedocation.backup.cli import app as backup_app
from lastedocation.datasets import service, speech, uploads
from lastedocation.datasets.formats import DataFormat
from lastedocation.datasets.reader import FileFormat
from lastedocation.datasets.scan import ScanResult, scan_file
from lastedocation.datasets.schemas import ImportOptions
from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.errors import DatasetInvalid, StudioError
from lastedocation.logs import configure_logging
from lastedocation.remote import login, runs_app
from lastedocation.settings import Settings, load_settings
from lastedocation.speech.cli import app as speech_app

app = typer.Typer(
    help="LASTEDOCATION: train Persian language models on your own machine.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Check, import and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
users_app = typer.Typer(help="Manage the studio's accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(runs_app, name="runs")
app.add_typer(speech_app, name="speech")
app.add_typer(backup_app, name="backup")
app.command()(login)
console = Console()
err = Console(stderr=True)

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSONL, JSON, CSV or TXT")
]
FileFormatOpt = Annotated[
    FileFormat | None, typer.Option("--file-format", help="Override the file type.")
]
DataFormatOpt = Annotated[
    DataFormat | None, typer.Option("--format", help="Override the detected data format.")
]
QuestionOpt = Annotated[str | None, typer.Option(help="Field holding the question (Q/A).")]
AnswerOpt = Annotated[str | None, typer.Option(help="Field holding the answer (Q/A).")]
NormalizeOpt = Annotated[
    bool, typer.Option("--normalize", help="Apply Persian normalization (letters, digits, ZWNJ).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder for all studio data.")] = None,
) -> None:
    """Start the studio (API and web pages)."""
    import uvicorn

    from lastedocation.api import create_app

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    application = create_app(settings)
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"LASTEDOCATION on [bold]{base}[/]  (data: {settings.data_dir})")
    with application.state.sessions() as session:
        token = setup.start_setup(session=session)
    if token:
        # print, don't log: the link is a credential, valid until used or the next start
        console.print(
            f"No account yet. Create the first admin here (works once):\n"
            f"  [bold]{base}/setup?token={token}[/]\n"
            "or run `lastedocation users add NAME --admin`.",
            soft_wrap=True,
        )
    # open event streams last as long as their run: give them 5 s when the server stops
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # uvicorn's lines go through the studio's handler (text or JSON); the studio
        # writes the access lines itself, with each request's id and route
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _progress(path: Path) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=path.stat().st_size < 5_000_000,
    )


def _print_report(result: ScanResult | speech.SpeechScan | dict[str, Any], as_json: bool) -> None:
    summary = result if isinstance(result, dict) else result.summary()
    report = summary["report"]
    if as_json:
        console.print_json(json.dumps(summary, ensure_ascii=False, default=str))
        return
    console.print(
        f"file: [bold]{summary['file_format']}[/]  format: [bold]{summary['data_format']}[/]"
        + (f"  ({summary['detection_reason']})" if summary.get("detection_reason") else "")
    )
    console.print(
        f"rows: {report['rows_seen']:,}  valid: {report['rows_valid']:,}  "
        f"invalid: {report['rows_invalid']:,}  problems: {report['problems_total']:,}"
    )
    if report["problems"]:
        table = Table("row", "field", "problem", title=f"first {len(report['problems'])} problems")
        for p in report["problems"]:
            table.add_row(str(p["row"] or "-"), p["field"] or "-", p["message"])
        console.print(table)
    if report.get("warnings"):
        title = f"{report['warnings_total']:,} warning(s), rows kept"
        table = Table("row", "field", "warning", title=title)
        for w in report["warnings"]:
            table.add_row(str(w["row"] or "-"), w["field"] or "-", w["message"])
        console.print(table)


def _scan(file: Path, label: str, **choices: Any) -> ScanResult | speech.SpeechScan:
    """Validate a file with a progress bar (an archive of audio clips: every clip decoded);
    a user's mistake exits with its message."""
    settings = load_settings()
    try:
        options = ImportOptions(**choices).scan_options(settings)
        if speech.is_archive(file):
            with console.status("decoding the archive's audio clips"):
                return uploads.validate_upload(
                    settings=settings, path=file, filename=file.name, options=options
                )
        with _progress(file) as bar:
            task = bar.add_task(label, total=file.stat().st_size)
            return service.validate_file(
                path=file,
                filename=file.name,
                options=options,
                progress=lambda done: bar.update(task, completed=done),
            )
    except StudioError as exc:
        _fail(exc)


@data_app.command("validate")
def data_validate(
    file: FileArg,
    file_format: FileFormatOpt = None,
    data_format: DataFormatOpt = None,
    question_field: QuestionOpt = None,
    answer_field: AnswerOpt = None,
    normalize: NormalizeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a file; exit 1 when it has problems."""
    result = _scan(
        file,
        "validating",
        file_format=file_format,
        data_format=data_format,
        question_field=question_field,
        answer_field=answer_field,
        normalize=normalize,
    )
    _print_report(result, as_json)
    if not result.report.ok:
        raise typer.Exit(1)


def _open_studio(settings: Settings) -> Any:
    engine = make_engine(settings)
    migrate(engine)
    return session_factory(engine)


def _import_archive(**kwargs: Any) -> tuple[Any, speech.SpeechScan]:
    """A speech dataset (audio clips with a metadata file); no byte progress for these."""
    kwargs.pop("progress")
    dataset, result = uploads.import_upload(**kwargs)
    assert isinstance(result, speech.SpeechScan)
    return dataset, result


@data_app.command("import")
def data_import(
    file: FileArg,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: file name).")] = None,
    owner: Annotated[
        str | None,
        typer.Option(help="Username it belongs to (default: none, shared with every account)."),
    ] = None,
    drop_invalid: Annotated[
        bool, typer.Option("--drop-invalid", help="Import the valid rows, leave out the rest.")
    ] = False,
    file_format: FileFormatOpt = None,
    data_format: DataFormatOpt = None,
    question_field: QuestionOpt = None,
    answer_field: AnswerOpt = None,
    normalize: NormalizeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate a file and import it into the studio's data folder."""
    settings = load_settings()
    sessions = _open_studio(settings)
    try:
        options = ImportOptions(
            file_format=file_format,
            data_format=data_format,
            question_field=question_field,
            answer_field=answer_field,
            normalize=normalize,
        ).scan_options(settings)
        with sessions() as session, _progress(file) as bar:
            owner_id = accounts.find_user(session=session, username=owner).id if owner else None
            task = bar.add_task("importing", total=file.stat().st_size)
            import_any = service.import_file if not speech.is_archive(file) else _import_archive
            dataset, result = import_any(
                session=session,
                settings=settings,
                path=file,
                filename=file.name,
                name=name,
                options=options,
                drop_invalid=drop_invalid,
                owner_id=owner_id,
                progress=lambda done: bar.update(task, completed=done),
            )
    except DatasetInvalid as exc:
        _print_report(exc.extra, as_json)
        _fail(exc)
    except StudioError as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps({"id": dataset.id, **result.summary()}, default=str))
        return
    _print_report(result, False)
    console.print(
        f"imported as dataset [bold]{dataset.id}[/] "
        f"({dataset.rows:,} rows, sha256 {dataset.sha256[:12]})"
    )
    if result.normalization:
        console.print(f"normalization changed {result.normalization['rows_changed']:,} rows")


@data_app.command("preview")
def data_preview(
    file: FileArg,
    offset: Annotated[int, typer.Option(min=0, help="First row to show (0-based).")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many rows.")] = 10,
    data_format: DataFormatOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show rows of a file as the studio reads them (canonical chat turns)."""
    settings = load_settings()
    try:
        options = ImportOptions(data_format=data_format).scan_options(settings)
        buffer = io.BytesIO()
        scan_file(file, filename=file.name, options=options, out=buffer, max_rows=offset + limit)
    except StudioError as exc:
        _fail(exc)
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()[offset:]]
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        console.rule(f"row {row['row']}")
        for message in row.get("messages", []):
            console.print(f"[bold]{message['role']}[/]: {message['content']}")
        if "text" in row:
            console.print(row["text"])


@data_app.command("stats")
def data_stats(
    file: FileArg,
    data_format: DataFormatOpt = None,
    question_field: QuestionOpt = None,
    answer_field: AnswerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Statistics of a file: lengths, duplicates, script mix."""
    result = _scan(
        file,
        "reading",
        data_format=data_format,
        question_field=question_field,
        answer_field=answer_field,
    )
    stats = result.stats or {}
    if as_json:
        console.print_json(json.dumps(stats, ensure_ascii=False))
        return
    _print_report(result, False)
    if not stats:
        raise typer.Exit(1)
    table = Table("field", "rows", "chars p50", "chars p90", "chars max", "words p50", "words mean")
    for name, f in stats["fields"].items():
        c, w = f["chars"], f["words"]
        table.add_row(
            name,
            f"{f['rows_with_text']:,}",
            str(c.get("percentiles", {}).get("p50", 0)),
            str(c.get("percentiles", {}).get("p90", 0)),
            str(c["max"]),
            str(w.get("percentiles", {}).get("p50", 0)),
            str(w["mean"]),
        )
    console.print(table)
    dup = stats["duplicates"]
    mix = stats["script_mix"]["share_of_letters"]
    console.print(
        f"characters: {stats['characters']:,}  exact duplicates: {dup['exact']['rows']:,}  "
        f"near-exact duplicates: {dup['near_exact']['rows']:,}"
    )
    console.print("letters: " + "  ".join(f"{k} {v:.1%}" for k, v in mix.items()))


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="2 to 64 letters, digits, `.`, `-` or `_`.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin (sees everything, manages accounts).")
    ] = False,
) -> None:
    """Add an account to the local studio; asks for the password twice (hidden)."""
    password = typer.prompt(
        "password (at least 10 characters)", hide_input=True, confirmation_prompt=True
    )
    sessions = _open_studio(load_settings())
    try:
        with sessions() as session:
            user = accounts.create_user(
                session=session,
                username=username,
                password=password,
                role="admin" if admin else "member",
            )
    except StudioError as exc:
        _fail(exc)
    console.print(f"added {user.role} [bold]{user.username}[/] (id {user.id})")


@users_app.command("list")
def users_list() -> None:
    """List the accounts of the local studio."""
    sessions = _open_studio(load_settings())
    with sessions() as session:
        users = accounts.list_users(session=session)
    table = Table("id", "username", "role", "created")
    for user in users:
        table.add_row(str(user.id), user.username, user.role, f"{user.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


def _fail(exc: StudioError) -> NoReturn:
    err.print(f"[red]error:[/] {exc.detail}")
    raise typer.Exit(2 if exc.status_code >= 500 else 1)


@app.command()
def train(
    config: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="Run config (YAML); see README."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default: ./runs/NAME-TIME).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Resume the run in this folder."),
    ] = None,
) -> None:
    """Train a model headless, with a progress bar. Ctrl-C pauses (checkpoint, then exit);
    `--resume RUN_DIR` carries on exactly where it stopped."""
    from datetime import datetime

    from lastedocation.training.config import ConfigError, dump_config, load_config
    from lastedocation.training.recipe import train_run

    if (config is None) == (resume is None):
        raise typer.BadParameter("give a CONFIG to start a run, or --resume RUN_DIR")
    if resume is not None:
        folder = resume
    else:
        assert config is not None
        try:
            parsed = load_config(config)
        except ConfigError as exc:
            _fail(exc)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = run_dir or Path("runs") / f"{parsed.name}-{stamp}"
        folder.mkdir(parents=True, exist_ok=True)
        dump_config(parsed, folder / "config.yaml")
    console.print(f"run folder: [bold]{folder}[/]")
    with _TrainProgress() as progress:
        outcome = train_run(folder, observer=progress.on_event, handle_sigint=True)
    if outcome.state == "paused":
        console.print(f"paused at step {outcome.step}: resume with --resume {folder}")
    elif outcome.state == "failed":
        err.print(f"[red]failed:[/] {progress.failure}")
    else:
        console.print(f"{outcome.state} at step {outcome.step}; model in {folder / 'model'}")
    raise typer.Exit(outcome.exit_code)


class _TrainProgress:
    """A Rich progress bar fed by the trainer's events."""

    def __init__(self) -> None:
        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            "step {task.completed}/{task.total}",
            "loss {task.fields[loss]}",
            "{task.fields[speed]} tok/s",
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("training", total=None, loss="-", speed="-")
        self.failure = ""

    def __enter__(self) -> _TrainProgress:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "metrics":
            self.bar.update(
                self.task,
                completed=event["step"],
                total=event["total_steps"],
                loss=f"{event['loss']:.4f}",
                speed=f"{event['tokens_per_s']:,.0f}",
            )
        elif kind == "rewind":
            self.bar.update(self.task, completed=event["to_step"])
        elif kind == "eval":
            mark = " (best)" if event["best"] else ""
            self.bar.console.print(
                f"step {event['step']}: validation loss {event['val_loss']:.4f}, "
                f"perplexity {event['perplexity']:.1f}, "
                f"token accuracy {event['token_accuracy']:.3f}{mark}"
            )
        elif kind == "preflight":
            self.bar.console.print(
                f"pre-flight: {event['examples']:,} training examples, "
                f"{event['validation_examples']:,} validation, {event['tokens']:,} tokens, "
                f"{event['truncated']:,} truncated to {event['seq_len']}"
            )
        elif kind == "log" and event["level"] in ("warning", "error"):
            self.bar.console.print(f"[yellow]{event['message']}[/]")
        elif kind == "state" and event["state"] == "failed":
            self.failure = event.get("message", "")


@app.command()
def version() -> None:
    """Print the version."""
    from lastedocation import __version__

    console.print(__version__)


if __name__ == "__main__":
    app()
