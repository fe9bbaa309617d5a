"""CLI commands that talk to a running studio over HTTP with an API token:
`lastedocation login` and `lastedocation runs ...`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

runs_app = typer.Typer(help="Watch and control runs on a running studio.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def credentials_path() -> Path:
    default = Path.home() / ".config" / "lastedocation" / "credentials.json"
    return Path(os.environ.get("LASTEDOCATION_CREDENTIALS", default))


def save_credentials(url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps({"url": url.rstrip("/"), "token": token}), encoding="utf-8")
    return path


def client() -> httpx.Client:
    try:
        saved = json.loads(credentials_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        err.print("[red]error:[/] not logged in: run `lastedocation login` first")
        raise typer.Exit(1) from None
    return httpx.Client(
        base_url=saved["url"], headers={"Authorization": f"Bearer {saved['token']}"}, timeout=60
    )


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One API call; an error answer is printed as the studio's own message."""
    with client() as http:
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            err.print(f"[red]error:[/] cannot reach the studio at {http.base_url}: {exc}")
            raise typer.Exit(1) from None
    _check(response)
    return response.json() if response.content else None


RunId = Annotated[int, typer.Argument(help="The run's id.")]


@runs_app.command("list")
def runs_list(
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
) -> None:
    """Runs, newest first."""
    runs = call("GET", "/api/v1/runs", params={"state": state} if state else None)
    table = Table("id", "name", "state", "step", "created")
    for run in runs:
        step = f"{run['step']}/{run['total_steps'] or '?'}"
        table.add_row(str(run["id"]), run["name"], run["state"], step, run["created_at"][:19])
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: RunId) -> None:
    """A run's state, progress and latest figures."""
    run = call("GET", f"/api/v1/runs/{run_id}")
    history = call("GET", f"/api/v1/runs/{run_id}/metrics", params={"max_points": 2})
    console.print(f"[bold]{run['name']}[/] (run {run['id']}): {run['state']}")
    allows = ", ".join(run["allowed_actions"])
    console.print(f"step {run['step']}/{run['total_steps'] or '?'}; allows: {allows}")
    if run["message"]:
        console.print(run["message"])
    if history["metrics"]:
        last = history["metrics"][-1]
        console.print(f"loss {last['loss']:.4f}, {last['tokens_per_s']:,.0f} tokens/s")
    if history["eval"]:
        best = min(history["eval"], key=lambda e: e["val_loss"])
        console.print(f"best validation loss {best['val_loss']:.4f} at step {best['step']}")


@runs_app.command("logs")
def runs_logs(
    run_id: RunId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing live events.")
    ] = False,
) -> None:
    """A run's log; with -f, follow it live (server-sent events)."""
    if not follow:
        for event in call("GET", f"/api/v1/runs/{run_id}/logs", params={"limit": 1000}):
            console.print(_line(event), markup=False, highlight=False)
        return
    with (
        client() as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", timeout=None) as response,
    ):
        if response.status_code >= 400:
            err.print(f"[red]error ({response.status_code}):[/] {response.read().decode()}")
            raise typer.Exit(1)
        for line in response.iter_lines():
            if line.startswith("data: "):
                console.print(_line(json.loads(line[6:])), markup=False, highlight=False)


def _line(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "metrics":
        return (
            f"step {event['step']}/{event['total_steps']}  loss {event['loss']:.4f}  "
            f"{event['tokens_per_s']:,.0f} tok/s"
        )
    if kind == "eval":
        return (
            f"step {event['step']}  validation loss {event['val_loss']:.4f}  "
            f"perplexity {event['perplexity']:.1f}"
        )
    if kind == "state":
        return f"[{event['state']}] {event.get('message') or ''}".rstrip()
    if kind == "log":
        return f"{event['level']}: {event['message']}"
    fields = {k: v for k, v in event.items() if k not in ("seq", "time", "type")}
    return f"{kind}: {fields}"


def _act(run_id: int, action: str, body: dict[str, Any] | None = None) -> None:
    answer = call("POST", f"/api/v1/runs/{run_id}/{action}", json=body)
    run = answer.get("run", answer)
    console.print(f"run {run['id']}: {run['state']}")


@runs_app.command("pause")
def runs_pause(run_id: RunId) -> None:
    """Checkpoint and free the device; resume continues exactly there."""
    _act(run_id, "pause")


@runs_app.command("resume")
def runs_resume(run_id: RunId) -> None:
    _act(run_id, "resume")


@runs_app.command("stop")
def runs_stop(run_id: RunId) -> None:
    _act(run_id, "stop")


@runs_app.command("checkpoints")
def runs_checkpoints(run_id: RunId) -> None:
    """The checkpoints a run can be restored from."""
    for item in call("GET", f"/api/v1/runs/{run_id}/checkpoints"):
        console.print(f"step {item['step']}  ({item['name']})", markup=False, highlight=False)


@runs_app.command("restore")
def runs_restore(
    run_id: RunId,
    step: Annotated[int, typer.Option(help="The checkpoint's step.")],
    new: Annotated[bool, typer.Option("--new", help="Start a new run from it instead.")] = False,
) -> None:
    """Train on from a checkpoint (in place, or as a new run with --new)."""
    _act(run_id, "restore", {"step": step, "as_new_run": new})


def login(
    url: Annotated[str, typer.Option(help="The studio's address.")] = "http://127.0.0.1:8000",
    username: Annotated[str | None, typer.Option(help="Your account (prompted if absent).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Use this API token instead of a password.")
    ] = None,
) -> None:
    """Sign in to a running studio; the CLI keeps an API token for later commands."""
    url = url.rstrip("/")
    with httpx.Client(base_url=url, timeout=60) as http:
        try:
            if token is None:
                name = username or typer.prompt("username")
                password = typer.prompt("password", hide_input=True)
                answer = http.post(
                    "/api/v1/auth/login", json={"username": name, "password": password}
                )
                _check(answer)
                http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
                created = http.post("/api/v1/auth/tokens", json={"name": "cli"})
                _check(created)
                token = str(created.json()["token"])
            http.headers["Authorization"] = f"Bearer {token}"
            me = http.get("/api/v1/auth/me")
            _check(me)
        except httpx.TransportError as exc:
            err.print(f"[red]error:[/] cannot reach the studio at {url}: {exc}")
            raise typer.Exit(1) from None
    path = save_credentials(url, token)
    console.print(f"signed in as [bold]{me.json()['username']}[/]; token kept in {path}")


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        err.print(f"[red]error ({response.status_code}):[/] {detail}")
        raise typer.Exit(1)
