"""Benchmark: training throughput of our trainer against plain Hugging Face and raw PyTorch.

* Tokens/s of `train_run` (from scratch, fp32, packing off) against a plain
  `transformers.Trainer` and the simplest raw PyTorch loop (forward with labels, backward,
  clip, AdamW, cosine LR). All three train the same model shape from the same seeded
  initialisation on the same token ids in the same batches (our `BatchPlan`, padded to the
  longest row), so a lower tokens/s is trainer overhead, not other work; equal mean losses
  show it. Target: ours >= 0.97x the Trainer.
* Packing vs padding, both ours: real tokens/s and padding share. Target: >= 1.5x.
* MFU: 6 x parameters x tokens/s (attention FLOPs left out) over the TFLOP/s of a 2048^3
  matmul timed here, fp32 and bf16; and ours with `precision: bf16` (CPU autocast): faster?

Tokens/s is real (non-padding) tokens over wall time, end to end: a step lasts from the
end of the step before it to its own end, so batch building, logging and callbacks count
for everyone (the Trainer builds batches between `on_step_end` and `on_step_begin`, while
ours, `step_seconds`, include it). The first WARMUP (5) steps of each run are not timed.
Ours is clocked by an observer on the `metrics` events; its real tokens are differences of
`tokens_seen`. This machine drifts by several percent over minutes and stalls now and then
for seconds, so each variant runs twice in mirrored order (A B C D E E D C B A), and its
figure is its real tokens over the sum, step by step, of the faster of its two runs' times
for that step (both runs see the same batches). One process, THREADS CPU threads, a
temporary folder; about 3 minutes with the defaults:

    .venv/bin/python bench/train_bench.py [--rows 1000] [--steps 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import yaml
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
)
from transformers.utils import logging as hf_logging

from lastedocation.training.data import IGNORE, Batch, BatchPlan, encode_file
from lastedocation.training.events import read_events
from lastedocation.training.recipe import train_run

PERCQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "percqa" / "train.jsonl"
THREADS, SEED, LR, WARMUP = 2, 0, 3e-4, 5
TARGET_VS_TRAINER, TARGET_PACKING = 0.97, 1.5
Result = dict[str, Any]
LABELS = {
    "ours": "ours (padded, fp32)",
    "hf_trainer": "HF Trainer (padded, fp32)",
    "raw": "raw loop (padded, fp32)",
    "ours_packed": "ours (packed, fp32)",
    "ours_bf16": "ours (padded, bf16 autocast)",
}


def timed(ends: list[float], real: list[int]) -> Result:
    """Real tokens and end-to-end seconds of each step after the first WARMUP."""
    seconds, real = [b - a for a, b in itertools.pairwise(ends[WARMUP - 1 :])], real[WARMUP:]
    return {"real": real, "seconds": seconds, "tokens_per_s": sum(real) / sum(seconds)}


def run_ours(work: Path, name: str, args: argparse.Namespace, **training: Any) -> Result:
    """`train_run` on a fresh run folder; figures from its `metrics` events."""
    run_dir = work / name
    run_dir.mkdir()
    config = {
        "name": name,
        "data": {"train": str(PERCQA), "max_rows": args.rows, "validation_fraction": 0},
        "model": {"source": "scratch", "preset": args.preset},
        "training": {
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "packing": False,
            "precision": "fp32",
            "max_steps": args.steps,
            "lr": LR,
            "seed": SEED,
            "threads": THREADS,
            "save_every": args.steps + 1,  # only the final save, after the timed steps
            **training,
        },
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    metrics: list[dict[str, Any]] = []
    ends: list[float] = []

    def observe(event: dict[str, Any]) -> None:
        if event["type"] == "metrics":
            ends.append(time.perf_counter())
            metrics.append(event)

    outcome = train_run(run_dir, observer=observe)
    if outcome.state != "completed":
        last = [e for e in read_events(run_dir / "events.jsonl") if e["type"] == "state"][-1]
        raise SystemExit(f"{name}: training {outcome.state}: {last.get('message')}")
    seen = [0] + [m["tokens_seen"] for m in metrics]
    real = [b - a for a, b in itertools.pairwise(seen)]
    padded = [r / (1 - m["padding_share"]) for r, m in zip(real, metrics, strict=True)]
    return timed(ends, real) | {
        "in_step_seconds": [m["step_seconds"] for m in metrics[WARMUP:]],
        "mean_loss": sum(m["loss"] for m in metrics) / len(metrics),
        "padding_share": 1 - sum(real) / sum(padded),
        "real_tokens": sum(real),
    }


def fresh_model(base: Path) -> torch.nn.Module:
    """The model shape of our run, initialised from the same seed as our trainer does."""
    torch.manual_seed(SEED)
    config = AutoConfig.from_pretrained(base)
    model: torch.nn.Module = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model


class _StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, *_: Any, **__: Any) -> None:
        self.ends.append(time.perf_counter())


def run_trainer(work: Path, base: Path, batches: list[Batch], pad_id: int) -> Result:
    """A plain `transformers.Trainer`; its rows are our batches' rows, in our order."""
    rows = []
    for b in batches:
        for i, n in enumerate(b.attention_mask.sum(1).tolist()):
            ids, labels = b.input_ids[i, :n], b.labels[i, :n]
            rows.append(
                {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
            )
    padding = {"input_ids": pad_id, "labels": IGNORE, "attention_mask": 0}

    def collate(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pads to the longest row; labels with -100."""
        return {
            key: pad_sequence([f[key] for f in features], batch_first=True, padding_value=value)
            for key, value in padding.items()
        }

    training_args = TrainingArguments(
        output_dir=str(work / "hf-trainer"),
        per_device_train_batch_size=batches[0].samples,
        max_steps=len(batches),
        learning_rate=LR,
        lr_scheduler_type="cosine",
        adam_beta2=0.95,  # ours uses betas (0.9, 0.95); everything else is a default
        train_sampling_strategy="sequential",  # keeps our batches as they are
        use_cpu=True,
        dataloader_num_workers=0,
        seed=SEED,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    clock = _StepClock()
    trainer = Trainer(
        model=fresh_model(base),
        args=training_args,
        train_dataset=rows,
        data_collator=collate,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)  # it would print the final metrics dict
    output = trainer.train()
    real = [b.real_tokens for b in batches]
    return timed(clock.ends, real) | {"mean_loss": output.training_loss}


def run_raw(base: Path, plan: BatchPlan, steps: int) -> Result:
    """The simplest loop that does the same step: our batches, built inside the loop."""
    model = fresh_model(base)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=steps)
    ends: list[float] = []
    real: list[int] = []
    losses: list[float] = []
    for k in range(steps):
        batch = plan.batch(k)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        real.append(batch.real_tokens)
        ends.append(time.perf_counter())
    return timed(ends, real) | {"mean_loss": sum(losses) / len(losses)}


def matmul_tflops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """TFLOP/s of an n x n @ n x n matmul: the practical peak of this CPU."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e12


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    peak = {"fp32": matmul_tflops(torch.float32), "bf16": matmul_tflops(torch.bfloat16)}
    print(f"matmul peak: fp32 {peak['fp32']:.3f}, bf16 {peak['bf16']:.3f} TFLOP/s", flush=True)
    runs: dict[str, list[Result]] = {"ours": [run_ours(work, "ours-1", args)]}
    print(f"{LABELS['ours']}, run 1: {runs['ours'][0]['tokens_per_s']:.0f} tokens/s", flush=True)

    # The others reuse that run's tokenizer, model config and canonical records.
    base = work / "ours-1" / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = encode_file(work / "ours-1" / "data" / "all.jsonl", tokenizer, args.seq_len)
    pad_id = tokenizer.pad_token_id
    plan = BatchPlan(
        data.examples,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        packing=False,
        pad_id=pad_id,
        seed=SEED,
    )
    if args.steps > plan.per_epoch:
        raise SystemExit(f"--rows {args.rows} gives {plan.per_epoch} batches: raise --rows")
    batches = [plan.batch(k) for k in range(args.steps)]
    if sum(b.real_tokens for b in batches) != runs["ours"][0]["real_tokens"]:
        raise SystemExit("the rebuilt batches differ from our trainer's: not the same data")
    # A padded row carries one example (mean_len real tokens), a packed row about seq_len
    # of them: packing mean_len/seq_len as many rows gives both about the same real tokens
    # per step, so per-step costs (optimizer, clipping, logging) weigh the same in both and
    # the ratio shows what padding wastes (net of the longer rows packing attends over).
    mean_len = data.tokens / len(data.examples)
    packed_batch = max(1, round(args.batch_size * mean_len / args.seq_len))
    runners: dict[str, Callable[[str], Result]] = {
        "ours": lambda name: run_ours(work, name, args),
        "hf_trainer": lambda _: run_trainer(work, base, batches, pad_id),
        "raw": lambda _: run_raw(base, plan, args.steps),
        "ours_packed": lambda name: run_ours(
            work, name, args, packing=True, batch_size=packed_batch
        ),
        "ours_bf16": lambda name: run_ours(work, name, args, precision="bf16"),
    }
    # Every variant twice, in mirrored order (see the top); the first "ours" ran above.
    for key in [*list(runners)[1:], *reversed(runners)]:
        repeat = len(runs.setdefault(key, [])) + 1
        runs[key].append(runners[key](f"{key}-{repeat}"))
        tokens_per_s = runs[key][-1]["tokens_per_s"]
        print(f"{LABELS[key]}, run {repeat}: {tokens_per_s:.0f} tokens/s", flush=True)
    # Measured again at the end: if the machine's speed drifted, no ratio here can be trusted.
    peak["fp32, again at the end"] = matmul_tflops(torch.float32)

    params = sum(p.numel() for p in fresh_model(base).parameters())
    r: dict[str, Any] = {key: combine(results) for key, results in runs.items()}
    for key, result in r.items():
        dtype = "bf16" if key == "ours_bf16" else "fp32"
        result["mfu"] = 6 * params * result["tokens_per_s"] / (peak[dtype] * 1e12)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    return r | {
        "settings": settings | {"threads": THREADS, "warmup_steps_excluded": WARMUP},
        "data": {"examples": len(data.examples), "mean_tokens": mean_len, "parameters": params},
        "matmul_tflops": peak,
        "packed_batch_size": packed_batch,
        "ours_vs_trainer": r["ours"]["tokens_per_s"] / r["hf_trainer"]["tokens_per_s"],
        "ours_vs_raw": r["ours"]["tokens_per_s"] / r["raw"]["tokens_per_s"],
        "packing_vs_padding": r["ours_packed"]["tokens_per_s"] / r["ours"]["tokens_per_s"],
        "bf16_vs_fp32": r["ours_bf16"]["tokens_per_s"] / r["ours"]["tokens_per_s"],
    }


def combine(results: list[Result]) -> Result:
    """One variant's repeats: real tokens over the sum of each step's best time."""
    if any(r["real"] != results[0]["real"] for r in results):
        raise SystemExit("the repeats of one variant saw different batches")

    def best(key: str) -> float:
        return float(sum(min(times) for times in zip(*(r[key] for r in results), strict=True)))

    tokens = sum(results[0]["real"])
    combined = {
        "tokens_per_s": tokens / best("seconds"),
        "runs_tokens_per_s": [r["tokens_per_s"] for r in results],
        "mean_loss": results[0]["mean_loss"],  # the repeats train the same
    }
    if "in_step_seconds" in results[0]:
        combined["tokens_per_s_in_step"] = tokens / best("in_step_seconds")
        combined["padding_share"] = results[0]["padding_share"]
    return combined


def report(r: dict[str, Any]) -> None:
    s, d, peak = r["settings"], r["data"], r["matmul_tflops"]
    print(
        f"\n{d['parameters']:,}-parameter {s['preset']}, seq_len {s['seq_len']}, "
        f"{d['examples']} examples (mean {d['mean_tokens']:.0f} tokens), batch {s['batch_size']} "
        f"(packed: {r['packed_batch_size']}), {s['steps']} steps a run, first "
        f"{s['warmup_steps_excluded']} not timed, {s['threads']} threads\n"
    )
    print(f"{'figure':<44} {'value':>8}  {'target':<8} {'result':<6} runs 1 / 2")

    def row(label: str, value: str, target: str = "", result: str = "", runs: str = "") -> None:
        print(f"{label:<44} {value:>8}  {target:<8} {result:<6} {runs}".rstrip())

    def check(label: str, value: float, target: float) -> None:
        row(label, f"{value:.3f}x", f">= {target}x", "PASS" if value >= target else "FAIL")

    for kind, tflops in peak.items():
        row(f"matmul 2048^3 {kind} TFLOP/s", f"{tflops:.3f}")
    for key, label in LABELS.items():
        runs = " / ".join(f"{v:.0f}" for v in r[key]["runs_tokens_per_s"])
        row(f"{label} tokens/s", f"{r[key]['tokens_per_s']:.0f}", runs=runs)
        row(f"{label} mean loss", f"{r[key]['mean_loss']:.4f}")
        row(f"{label} MFU", f"{r[key]['mfu']:.1%}")
    row("ours tokens/s inside _step only", f"{r['ours']['tokens_per_s_in_step']:.0f}")
    check("ours / HF Trainer", r["ours_vs_trainer"], TARGET_VS_TRAINER)
    row("ours / raw loop", f"{r['ours_vs_raw']:.3f}x")
    row("padding share, padded", f"{r['ours']['padding_share']:.1%}")
    row("padding share, packed", f"{r['ours_packed']['padding_share']:.1%}")
    check("packing / padding", r["packing_vs_padding"], TARGET_PACKING)
    faster = "yes" if r["bf16_vs_fp32"] > 1 else "no"
    row("bf16 autocast / fp32", f"{r['bf16_vs_fp32']:.3f}x", "faster?", faster)
    drift = peak["fp32, again at the end"] / peak["fp32"]
    if not 0.9 <= drift <= 1.1:
        print(f"WARNING: the machine's matmul speed changed {drift - 1:+.0%} during the run")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="first N PerCQA rows")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--preset", default="llama-small", help="from-scratch model preset")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8, help="padded rows per step")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.steps <= WARMUP + 1:
        parser.error(f"--steps must be more than {WARMUP + 1} ({WARMUP} are warm-up)")
    return args


def main() -> int:
    args = _parse_args()
    if not PERCQA.is_file():
        raise SystemExit(f"PerCQA is missing at {PERCQA}")
    torch.set_num_threads(THREADS)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as work:
        results = bench(args, Path(work))
    results["seconds"] = time.perf_counter() - started
    report(results)
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
