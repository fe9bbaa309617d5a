"""SSE fan-out benchmark against a real `lastedocation serve` process.

* Starts a real server on 127.0.0.1 (a fresh temporary data folder), creates an admin,
  uploads PerCQA rows and starts a tiny run whose trainer emits >= 100 events/s.
* Opens N concurrent SSE clients on `/api/v1/runs/{id}/events`, each from the current last
  seq, for a fixed time: delivery latency (receive wall time - event `time`) p50/p99/max,
  events per client, and a gap-free seq check per client.
* Samples the server process's RSS every 0.1 s (peak and growth).
* Trainer throughput (mean `tokens_per_s`) while the clients are attached, next to the same
  config trained headless (`train_run`, no server running): target ratio >= 0.97.

Run from the repository root: `.venv/bin/python bench/sse_bench.py` (options: `--clients`,
`--seconds`, `--rows`, `--headless-steps`, `--json PATH`). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import ADMIN, PERCQA, add_account, sign_in  # noqa: E402
from tests.server import StudioServer  # noqa: E402

from lastedocation.settings import Settings  # noqa: E402
from lastedocation.training.events import read_events  # noqa: E402

CONFIG: dict[str, Any] = {
    "model": {"source": "scratch", "preset": "llama-tiny", "vocab_size": 400},
    "data": {"split_key": "qid"},
    "training": {
        "seq_len": 48,
        "batch_size": 2,
        "packing": False,
        "precision": "fp32",
        "max_steps": 1_000_000,
        "eval_every": 1_000_000,
        "save_every": 1_000_000,
        "log_every": 1,
        "threads": 1,
    },
}
WARMUP_STEPS = 20  # left out of the headless mean
TIME_RE = re.compile(rb'"time": ([0-9.]+)')


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self.cpu: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                now = time.time()
                self.samples.append((now, self.proc.memory_info().rss))
                times = self.proc.cpu_times()
                self.cpu.append((now, times.user + times.system))
            except psutil.Error:
                return
            self.halt.wait(self.every)

    def window(self, start: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples if start <= t <= end]

    def cpu_share(self, start: float, end: float) -> float:
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class Prober(threading.Thread):
    """GET a cheap endpoint every 0.5 s: is the rest of the API still answering?"""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.times: list[float] = []
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=10) as client:
            while not self.halt.is_set():
                began = time.monotonic()
                try:
                    response = client.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"HTTP {response.status_code}")
                    self.times.append(time.monotonic() - began)
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                self.halt.wait(0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_run(client: httpx.Client, run_id: int, until: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            run = client.get(f"/api/v1/runs/{run_id}", timeout=10).json()
        except httpx.HTTPError as exc:
            run = {"state": f"unanswered ({type(exc).__name__})"}
        if until(run):
            return run
        time.sleep(0.2)
    return {**run, "gave_up": True}


def last_seq(events_path: Path) -> int:
    with events_path.open("rb") as f:
        f.seek(max(0, events_path.stat().st_size - 65536))
        lines = [line for line in f.read().split(b"\n") if line.strip()]
    for line in reversed(lines):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError):
            continue
    return 0


async def sse_client(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], start: int, stop_at: float
) -> dict[str, Any]:
    """Read the stream from `start` until `stop_at` (wall time); parse just id and time."""
    out: dict[str, Any] = {"seqs": [], "latencies": [], "status": None, "error": None}
    out["max_silence"] = 0.0
    buffer = b""
    try:
        async with (
            asyncio.timeout(stop_at - time.time() + 10),
            http.stream("GET", url, headers={**headers, "Last-Event-ID": str(start)}) as r,
        ):
            out["status"] = r.status_code
            out["connected"] = time.time()
            if r.status_code != 200:
                return out
            previous = time.time()
            async for chunk in r.aiter_raw():
                now = time.time()
                out["max_silence"] = max(out["max_silence"], now - previous)
                previous = now
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if not block.startswith(b"id: "):
                        continue
                    seq = int(block[4 : block.index(b"\n")])
                    match = TIME_RE.search(block)
                    out["seqs"].append(seq)
                    if match:
                        out["latencies"].append(now - float(match.group(1)))
                if now >= stop_at:
                    break
    except TimeoutError:
        out["error"] = "TimeoutError: no chunk for 10 s past the end"
    except (httpx.HTTPError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


async def fan_out(
    url: str, headers: dict[str, str], clients: int, start: int, seconds: float
) -> tuple[list[dict[str, Any]], float, float]:
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=max(30.0, seconds + 10))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        began = time.time()
        stop_at = began + seconds
        results = await asyncio.gather(
            *(sse_client(http, url, headers, start, stop_at) for _ in range(clients))
        )
        return list(results), began, time.time()


def shut_down(server: StudioServer) -> str:
    """SIGTERM; SIGKILL if it has not exited 15 s later."""
    assert server.process is not None
    began = time.monotonic()
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
        return f"clean in {time.monotonic() - began:.1f} s"
    except subprocess.TimeoutExpired:
        server.kill()
        return "HUNG on SIGTERM for 15 s, killed"


def reap_trainer(data_dir: Path) -> bool:
    """Give our run's trainer 10 s to exit; kill it if it is still alive then (it
    outlives the server by design). True if it had to be killed."""
    left = False
    for beat in (data_dir / "runs").glob("*/heartbeat"):
        try:
            trainer = psutil.Process(int(json.loads(beat.read_text())["pid"]))
            if "lastedocation" not in " ".join(trainer.cmdline()):
                continue
            try:
                trainer.wait(10)
            except psutil.TimeoutExpired:
                trainer.kill()
                trainer.wait(10)
                left = True
        except (psutil.Error, ValueError, KeyError, OSError):
            continue
    return left


def headless(config_path: Path, work: Path, steps: int) -> list[dict[str, Any]]:
    """The same config trained by `train_run` in a fresh subprocess, no server running."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["training"]["max_steps"] = steps
    run_dir = work / "headless"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code = (
        "import sys; from pathlib import Path;"
        "from lastedocation.training.recipe import train_run;"
        "o = train_run(Path(sys.argv[1])); sys.exit(0 if o.state == 'completed' else 1)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], check=False)
    events = list(read_events(run_dir / "events.jsonl"))
    if done.returncode != 0:
        states = [e for e in events if e["type"] == "state"]
        raise SystemExit(f"headless training failed: {states[-1] if states else done}")
    return [e for e in events if e["type"] == "metrics"]


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_dir = work / "studio"
    add_account(Settings(data_dir=data_dir, import_sample_dataset=False), ADMIN, role="admin")
    server = StudioServer(data_dir, log_path=work / "server.log").start()
    assert server.process is not None
    sampler = RssSampler(server.process.pid)
    sampler.start()
    r: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            sign_in(client)
            rows = PERCQA.read_bytes().splitlines()[: args.rows]
            dataset = client.post(
                "/api/v1/datasets", files={"file": ("percqa.jsonl", b"\n".join(rows) + b"\n")}
            )
            assert dataset.status_code == 201, dataset.text
            run = client.post("/api/v1/runs", json={"dataset_id": dataset.json()["id"], **CONFIG})
            assert run.status_code == 201, run.text
            run_id = int(run.json()["id"])
            wait_run(client, run_id, lambda x: x["state"] == "running" and x["step"] >= 30, 120)
            run_dir = data_dir / "runs" / f"{run_id:06d}"
            events_path = run_dir / "events.jsonl"

            # a quiet window: server up, trainer running, no SSE clients
            quiet_start = time.time()
            time.sleep(args.quiet)
            quiet_end = time.time()

            start = last_seq(events_path)
            url = f"{server.url}/api/v1/runs/{run_id}/events"
            headers = {"Authorization": client.headers["Authorization"]}
            prober = Prober(f"{server.url}/api/v1/runs/{run_id}", headers)
            prober.start()
            me = psutil.Process()
            cpu_before = sum(me.cpu_times()[:2])
            results, sse_start, sse_end = asyncio.run(
                fan_out(url, headers, args.clients, start, args.seconds)
            )
            r["client_cpu_cores"] = (sum(me.cpu_times()[:2]) - cpu_before) / (sse_end - sse_start)
            prober.halt.set()
            prober.join()
            r["api_probe_p50_s"] = percentile(prober.times, 50)
            r["api_probe_max_s"] = max(prober.times, default=float("nan"))
            r["api_probe_failures"] = len(prober.failures)
            began = time.monotonic()
            try:
                r["stop_status"] = client.post(
                    f"/api/v1/runs/{run_id}/stop", timeout=15
                ).status_code
            except httpx.HTTPError as exc:
                r["stop_status"] = f"no answer ({type(exc).__name__})"
            active = ("running", "stopping")
            final = wait_run(client, run_id, lambda x: x["state"] not in active, 30)
            r["final_state"] = final["state"] + (" (gave up waiting)" if "gave_up" in final else "")
            r["stop_to_final_s"] = time.monotonic() - began
    finally:
        time.sleep(0.3)
        sampler.halt.set()
        sampler.join()
        r["server_shutdown"] = shut_down(server)
        r["trainer_left_running"] = reap_trainer(data_dir)

    # -- trainer: event rate and throughput, from its own event log -------------------
    events = list(read_events(events_path))

    def between(a: float, b: float, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in events if a <= e["time"] <= b and (kind is None or e["type"] == kind)]

    r["event_rate_quiet"] = len(between(quiet_start, quiet_end)) / (quiet_end - quiet_start)
    r["event_rate_sse"] = len(between(sse_start, sse_end)) / (sse_end - sse_start)
    quiet_tps = [e["tokens_per_s"] for e in between(quiet_start, quiet_end, "metrics")]
    sse_tps = [e["tokens_per_s"] for e in between(sse_start, sse_end, "metrics")]
    r["tokens_per_s_quiet"] = statistics.mean(quiet_tps) if quiet_tps else float("nan")
    r["tokens_per_s_sse"] = statistics.mean(sse_tps) if sse_tps else float("nan")
    r["steps_sse"] = len(sse_tps)

    # -- clients ------------------------------------------------------------------------
    latencies = [lat for res in results for lat in res["latencies"]]
    per_client = [len(res["seqs"]) for res in results]
    statuses: dict[str, int] = {}
    for res in results:
        statuses[str(res["status"])] = statuses.get(str(res["status"]), 0) + 1
    gap_free = 0
    for res in results:
        seqs = res["seqs"]
        if seqs and seqs == list(range(start + 1, start + 1 + len(seqs))):
            gap_free += 1
    produced = len([e for e in events if e["seq"] > start and e["time"] <= sse_end])
    lags = [produced - len(res["seqs"]) for res in results]
    r |= {
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies) if latencies else float("nan"),
        "events_received_total": len(latencies),
        "events_per_client_min": min(per_client),
        "events_per_client_mean": statistics.mean(per_client),
        "events_per_client_max": max(per_client),
        "events_produced_in_window": produced,
        "clients_gap_free": gap_free,
        "lag_at_end_max_events": max(lags),
        "lag_at_end_mean_events": statistics.mean(lags),
        "client_errors": [res["error"] for res in results if res["error"]][:5],
        "client_error_count": sum(1 for res in results if res["error"]),
        "http_statuses": statuses,
        "max_silence_s": max(res["max_silence"] for res in results),
        "connect_spread_s": (
            max(res.get("connected", sse_start) for res in results)
            - min(res.get("connected", sse_start) for res in results)
        ),
        "sse_wall_s": sse_end - sse_start,
    }

    # -- server memory and CPU --------------------------------------------------------
    before = sampler.window(quiet_start, sse_start)
    during = sampler.window(sse_start, sse_end)
    r["rss_before_mb"] = (statistics.mean(before) if before else 0) / 2**20
    r["rss_peak_mb"] = max(rss for _, rss in sampler.samples) / 2**20
    r["rss_end_of_sse_mb"] = (during[-1] if during else 0) / 2**20
    r["rss_growth_mb"] = r["rss_peak_mb"] - r["rss_before_mb"]
    r["server_cpu_quiet"] = sampler.cpu_share(quiet_start, quiet_end)
    r["server_cpu_sse"] = sampler.cpu_share(sse_start, sse_end)
    log = (work / "server.log").read_text(encoding="utf-8", errors="replace")
    bad = re.compile(r"error|traceback|exception| 5\d\d ", re.I)
    # the final line of each traceback (`module.Error: message`) says the most
    final = re.compile(r"^[\w.]*(Error|Exception|Timeout)\b")
    error_lines = [line for line in log.splitlines() if bad.search(line)]
    error_lines.sort(key=lambda line: final.search(line) is None)
    r["server_log_error_lines"] = len(error_lines)
    kinds: dict[str, int] = {}
    for line in error_lines:
        kinds[line[:160]] = kinds.get(line[:160], 0) + 1
    ranked = sorted(kinds.items(), key=lambda kv: (final.search(kv[0]) is None, -kv[1]))
    r["server_log_sample"] = [f"{n}x {line}" for line, n in ranked][:5]

    # -- headless ---------------------------------------------------------------------
    metrics = headless(run_dir / "config.yaml", work, args.headless_steps)
    steady = [m["tokens_per_s"] for m in metrics[WARMUP_STEPS:]]
    r["tokens_per_s_headless"] = statistics.mean(steady)
    r["ratio_sse_vs_headless"] = r["tokens_per_s_sse"] / r["tokens_per_s_headless"]
    r["ratio_quiet_vs_headless"] = r["tokens_per_s_quiet"] / r["tokens_per_s_headless"]
    return r


def report(r: dict[str, Any]) -> None:
    def row(label: str, value: str, note: str = "") -> None:
        print(f"  {label:<42} {value:>16}  {note}")

    print(f"\nSSE fan-out: {r['clients']} clients x {r['seconds']:.0f} s, on 127.0.0.1")
    rate_note = "" if r["event_rate_sse"] >= 100 else "BELOW the 100/s target"
    row("trainer events/s (no clients)", f"{r['event_rate_quiet']:.1f}")
    row("trainer events/s (clients attached)", f"{r['event_rate_sse']:.1f}", rate_note)
    row("latency p50", f"{r['latency_p50_s'] * 1000:.0f} ms")
    row("latency p99", f"{r['latency_p99_s'] * 1000:.0f} ms")
    row("latency max", f"{r['latency_max_s'] * 1000:.0f} ms")
    row("longest silence on one stream", f"{r['max_silence_s']:.2f} s")
    row("events produced in window", f"{r['events_produced_in_window']}")
    row(
        "events per client min/mean/max",
        f"{r['events_per_client_min']}/{r['events_per_client_mean']:.0f}"
        f"/{r['events_per_client_max']}",
    )
    row("events received, all clients", f"{r['events_received_total']}")
    row(
        "client lag at end mean/max (events)",
        f"{r['lag_at_end_mean_events']:.0f}/{r['lag_at_end_max_events']}",
    )
    gap_ok = "PASS" if r["clients_gap_free"] == r["clients"] else "FAIL"
    row("clients with a gap-free seq", f"{r['clients_gap_free']}/{r['clients']}", gap_ok)
    row("HTTP statuses", json.dumps(r["http_statuses"]))
    row("client errors", f"{r['client_error_count']}", "; ".join(r["client_errors"][:2]))
    row("connect spread", f"{r['connect_spread_s']:.2f} s")
    row("bench client CPU (cores)", f"{r['client_cpu_cores']:.2f}")
    row(
        "GET /runs/{id} under load p50/max",
        f"{r['api_probe_p50_s'] * 1000:.0f}/{r['api_probe_max_s'] * 1000:.0f} ms",
        f"{r['api_probe_failures']} failed",
    )
    row("server RSS before", f"{r['rss_before_mb']:.1f} MB")
    row("server RSS peak", f"{r['rss_peak_mb']:.1f} MB")
    row("server RSS growth (peak - before)", f"{r['rss_growth_mb']:+.1f} MB")
    row("server CPU (cores), no clients", f"{r['server_cpu_quiet']:.2f}")
    row("server CPU (cores), clients attached", f"{r['server_cpu_sse']:.2f}")
    row("server log error lines", f"{r['server_log_error_lines']}")
    row("trainer tokens/s headless", f"{r['tokens_per_s_headless']:.0f}")
    row("trainer tokens/s, server, no clients", f"{r['tokens_per_s_quiet']:.0f}")
    row("trainer tokens/s, clients attached", f"{r['tokens_per_s_sse']:.0f}")
    row("ratio quiet / headless", f"{r['ratio_quiet_vs_headless']:.3f}")
    ratio = r["ratio_sse_vs_headless"]
    row("ratio attached / headless", f"{ratio:.3f}", "PASS" if ratio >= 0.97 else "FAIL (< 0.97)")
    row("run state after stop", f"{r['final_state']}", f"stop -> HTTP {r['stop_status']}")
    row("stop request to final state", f"{r['stop_to_final_s']:.1f} s")
    row("server shutdown", r["server_shutdown"][:16], r["server_shutdown"][16:])
    row("trainer still up 10 s after (killed)", str(r["trainer_left_running"]))
    for line in r["server_log_sample"]:
        print(f"  server log: {line[:160]}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds with no clients")
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--headless-steps", type=int, default=1500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def main() -> int:
    args = _parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sse-bench-") as tmp:
        results = bench(args, Path(tmp))
    results["bench_wall_s"] = time.monotonic() - began
    report(results)
    print(f"\n  total bench time: {results['bench_wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
