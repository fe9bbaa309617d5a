"""`lastedocation backup ...`: back up, list, verify, prune and restore, on the server.

    lastedocation backup now --target nas
    lastedocation backup restore --target nas --snapshot latest   # into an empty data folder

These run here, against the data folder and the targets in the settings (the same
LASTEDOCATION_* variables or TOML file as the server), so a new machine can restore
before any studio exists. A backup from here and one the server's schedule starts
take the same lock and never overlap.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lastedocation.backup import jobs, restore
from lastedocation.backup.runner import Backups, engine_for
from lastedocation.backup.targets import find
from lastedocation.errors import StudioError
from lastedocation.settings import Settings, load_settings

app = typer.Typer(
    help="Back up the whole studio to a folder, S3, SFTP or Google Drive, and restore it.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

TargetOpt = Annotated[
    str | None, typer.Option("--target", "-t", help="A target's name (default: the only one).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _fail(exc: StudioError) -> NoReturn:
    err.print(f"[red]error:[/] {exc.detail}", soft_wrap=True, highlight=False)
    raise typer.Exit(2 if exc.status_code >= 500 else 1)


def _backups(settings: Settings) -> Backups:
    from lastedocation.db import make_engine, migrate, session_factory

    engine = make_engine(settings)
    migrate(engine)
    return Backups(settings=settings, sessions=session_factory(engine))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _run_job(kind: str, target: str | None, options: dict[str, Any] | None = None) -> Any:
    """Queue a job in the local studio and run it here, with a progress bar."""
    settings = load_settings()
    try:
        backups = _backups(settings)
        chosen = backups.target(target)
        with backups.sessions() as session:
            job = jobs.queue_job(
                session, kind=kind, target=chosen, trigger="cli", options=options or {}
            )
        with _progress() as bar:
            task = bar.add_task(f"{kind}: {chosen.name}", total=None)

            def listen(event: dict[str, Any]) -> None:
                if event["type"] == "step":
                    bar.update(task, description=f"{kind} {chosen.name}: {event['step']}")
                elif event["type"] == "progress" and event.get("bytes_total"):
                    bar.update(task, completed=event["bytes_done"], total=event["bytes_total"])

            done = backups.run(job.id, listener=listen)
    except StudioError as exc:
        _fail(exc)
    return done


@app.command()
def targets(as_json: JsonOpt = False) -> None:
    """The targets in the settings: where, encrypted or not, schedule and retention."""
    settings = load_settings()
    rows = [
        {
            "name": t.name,
            "kind": t.label,
            "where": t.where,
            "encrypted": t.encrypted,
            "schedule": t.schedule,
            "keep": f"last {t.keep_last}, daily {t.keep_daily}, weekly {t.keep_weekly}",
        }
        for t in settings.backup_targets
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        err.print("no backup target is configured (backup_targets in the settings)")
        raise typer.Exit(1)
    table = Table("name", "kind", "where", "encrypted", "schedule", "keep")
    for row in rows:
        table.add_row(
            *(str(row[key]) for key in ("name", "kind", "where")),
            "yes" if row["encrypted"] else "no",
            str(row["schedule"] or "-"),
            str(row["keep"]),
        )
    console.print(table)


@app.command()
def now(target: TargetOpt = None) -> None:
    """Back up the studio now (a running training keeps training)."""
    job = _run_job("backup", target)
    if job.state != "done":
        err.print(f"[red]backup {job.state}:[/] {job.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    for note in job.options.get("notes", []):
        err.print(f"note: {note}", soft_wrap=True, highlight=False)
    console.print(
        f"snapshot {job.snapshot_id}: {job.files} files, {_size(job.bytes_total)}, "
        f"{_size(job.bytes_sent)} sent, in {job.duration_s:.1f} s"
    )


@app.command("list")
def list_snapshots(target: TargetOpt = None, as_json: JsonOpt = False) -> None:
    """The snapshots the target holds, oldest first."""
    settings = load_settings()
    try:
        found = engine_for(settings, find(settings.backup_targets, target)).snapshots()
    except StudioError as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps([vars(snap) for snap in found]))
        return
    table = Table("snapshot", "time", "host", "tags")
    for snap in found:
        table.add_row(
            snap.short_id, snap.time[:19].replace("T", " "), snap.hostname, ", ".join(snap.tags)
        )
    console.print(table)


@app.command()
def verify(
    target: TargetOpt = None,
    quick: Annotated[
        bool, typer.Option(help="Check the structure only; do not read every object back.")
    ] = False,
) -> None:
    """Read back what the target holds and check every hash; names what is missing or
    corrupt (exit code 1)."""
    job = _run_job("verify", target, {"read_data": not quick})
    for problem in job.problems:
        console.print(f"[red]problem:[/] {problem}", soft_wrap=True, highlight=False)
    if job.state != "done":
        err.print(f"[red]verify {job.state}:[/] {job.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    console.print(f"verified in {job.duration_s:.1f} s: no problems")


@app.command()
def prune(target: TargetOpt = None) -> None:
    """Apply the target's retention now (keep_last, keep_daily, keep_weekly)."""
    job = _run_job("prune", target)
    if job.state != "done":
        err.print(f"[red]prune {job.state}:[/] {job.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    removed = job.options.get("removed", [])
    console.print(f"removed {len(removed)} snapshot(s)")


@app.command("restore")
def restore_command(
    target: TargetOpt = None,
    snapshot: Annotated[str, typer.Option(help="A snapshot id, or latest.")] = "latest",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Restore over a studio that is already here (what is there is moved to "
            "DATA_DIR/backup/replaced-*, not deleted). Stop the server first.",
        ),
    ] = False,
) -> None:
    """Restore a snapshot into this machine's data folder (an empty one, unless --force):
    every account, dataset, run, model and evaluation; paused and interrupted runs
    resume from their restored checkpoints."""
    settings = load_settings()
    try:
        engine = engine_for(settings, find(settings.backup_targets, target))
        with _progress() as bar:
            task = bar.add_task(f"restoring {snapshot}", total=None)
            done = restore.restore(
                engine=engine,
                snapshot_id=snapshot,
                data_dir=settings.data_dir,
                database_url=settings.database_url,
                force=force,
                on_progress=lambda got, total: bar.update(task, completed=got, total=total),
            )
    except StudioError as exc:
        _fail(exc)
    if done.moved_aside is not None:
        err.print(f"what was here is now in {done.moved_aside}")
    console.print(
        f"restored snapshot {snapshot} into {settings.data_dir}: {done.files} files, "
        f"{_size(done.bytes)}, {done.database} database; start the studio with "
        "`lastedocation serve`"
    )


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover
