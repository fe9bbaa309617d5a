"""The training recipe: setup, train, save_checkpoint, finish. One linear loop.

    outcome = train_run(run_dir)      # reads run_dir/config.yaml

The run folder is the whole interface: config.yaml in; events.jsonl,
heartbeat, checkpoints/, base/ (tokenizer, model config), model/ (and adapter/
for LoRA) out; `control` read at every step boundary. Resuming is starting
again: the newest checkpoint that verifies is loaded (model, optimizer,
scheduler, scaler, RNG states, position in the data) and a `rewind` event tells
readers which later events it supersedes.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    get_scheduler,
)
from transformers.utils import logging as hf_logging

from lastedocation.errors import InvalidInput
from lastedocation.training import checkpoint as ckpt
from lastedocation.training.config import load_config
from lastedocation.training.data import (
    IGNORE,
    Batch,
    BatchPlan,
    DataError,
    Example,
    encode_file,
    iter_texts,
    prepare_records,
)
from lastedocation.training.distributed import World, join_world
from lastedocation.training.events import Control, EventLog, Heartbeat, SilentEventLog
from lastedocation.training.model_source import (
    ModelSourceError,
    build_scratch,
    load_pretrained,
    lora_targets,
    resolve_folder,
)
from lastedocation.training.runtime import (
    Signals,
    autocast_dtype,
    finite,
    rng_state,
    set_generation_ids,
    set_rng_state,
)

EXIT_COMPLETED, EXIT_FAILED, EXIT_PAUSED = 0, 1, 3
Observer = Callable[[dict[str, Any]], None]


@dataclass
class Outcome:
    state: str  # completed | paused | stopped | failed
    step: int
    exit_code: int


@dataclass
class TrainState:
    """What, besides tensors, a checkpoint must restore."""

    step: int = 0
    batches: int = 0
    tokens: int = 0
    best_loss: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0


def train_run(
    run_dir: Path, *, observer: Observer | None = None, handle_sigint: bool = False
) -> Outcome:
    if _is_speech(run_dir / "config.yaml"):
        from lastedocation.training.whisper import train_speech_run

        return train_speech_run(run_dir, observer=observer, handle_sigint=handle_sigint)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    world = join_world()
    events = EventLog(run_dir / "events.jsonl", observer) if world.is_main else SilentEventLog()
    beats = run_dir / "heartbeat" if world.is_main else run_dir / f".heartbeat.rank{world.rank}"
    try:
        with (
            Heartbeat(beats, pid=world.launcher_pid) as heartbeat,
            Signals(handle_sigint) as signals,
        ):
            return _Run(run_dir, events, heartbeat, signals, world).execute()
    finally:
        events.close()
        world.close()


def _is_speech(config: Path) -> bool:
    """A speech config runs the Whisper recipe (training/whisper.py); a config that does
    not load goes the text way, which reports its problems."""
    try:
        return load_config(config).task == "speech"
    except InvalidInput:
        return False


class _Run:
    def __init__(
        self,
        run_dir: Path,
        events: EventLog,
        heartbeat: Heartbeat,
        signals: Signals,
        world: World | None = None,
    ) -> None:
        self.dir = run_dir
        self.world = world or World()
        self.earlier_events = events.seq > 0  # this run was started before
        self.events = events
        self.heartbeat = heartbeat
        self.signals = signals
        self.checkpoints = run_dir / "checkpoints"
        self.state = TrainState()
        self.saved_step = -1
        self.device = self.world.device()

    # -- setup ---------------------------------------------------------------

    def execute(self) -> Outcome:
        try:
            self.config = load_config(self.dir / "config.yaml")
            self.setup()
            return self.train()
        except (InvalidInput, DataError, ModelSourceError, ckpt.CheckpointError) as exc:
            return self._fail(str(exc.detail if isinstance(exc, InvalidInput) else exc))
        except torch.cuda.OutOfMemoryError as exc:
            return self._fail(f"out of device memory: {exc}; lower batch_size or seq_len")
        except Exception as exc:  # unexpected: keep the traceback in the log
            self.events.emit("log", level="error", message=traceback.format_exc())
            return self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> Outcome:
        self.events.emit("state", state="failed", message=message, sync=True)
        return Outcome("failed", self.state.step, EXIT_FAILED)

    def setup(self) -> None:
        cfg = self.config.training
        removed = ckpt.clean_partial(self.checkpoints)
        if removed:
            self.events.emit("log", level="warning", message=f"removed partial {removed}")
        resume = ckpt.latest_valid(self.checkpoints)
        self.events.emit(
            "state", state="starting", resume_from=resume[1]["step"] if resume else None, sync=True
        )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        with self.world.main_first():  # it writes data/ and base/; the others read them
            train_path, val_path = prepare_records(self.config.data, self.dir / "data")
            self.model, self.tokenizer = self._build_model(train_path)
        self.model.to(self.device)
        self.world.broadcast_parameters(self.model)
        self._preflight(train_path, val_path)
        self._build_optimizer()
        if resume is not None:
            self._load_checkpoint(resume[0], resume[1])
        if resume is not None or self.earlier_events:
            # what an earlier process logged after this step is void (a process killed
            # before its first checkpoint starts again from step 0)
            self.events.emit("rewind", to_step=self.state.step, sync=True)
        self.heartbeat.step = self.state.step

    def _build_model(self, train_path: Path) -> tuple[Any, PreTrainedTokenizerBase]:
        model_cfg, cfg = self.config.model, self.config.training
        base = self.dir / "base"
        tokenizer: PreTrainedTokenizerBase
        if model_cfg.source == "scratch":
            if (base / "config.json").is_file():  # resuming: same tokenizer, same shape
                tokenizer = AutoTokenizer.from_pretrained(base)
                model = AutoModelForCausalLM.from_config(
                    AutoConfig.from_pretrained(base), attn_implementation="sdpa"
                )
            else:
                self.events.emit("log", level="info", message="training a tokenizer on the data")
                model, tokenizer = build_scratch(model_cfg, iter_texts(train_path), cfg.seq_len)
                tokenizer.save_pretrained(base)
                model.config.save_pretrained(base)
        else:
            folder = resolve_folder(model_cfg)
            model, tokenizer = load_pretrained(folder)
            tokenizer.save_pretrained(base)
        if cfg.method in ("lora", "qlora"):
            from peft import LoraConfig, get_peft_model

            lora = self.config.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules or lora_targets(model),
                    task_type="CAUSAL_LM",
                ),
            )
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.params = params
        self.events.emit(
            "log",
            level="info",
            message=f"model: {params:,} parameters, {trainable:,} trainable",
            parameters=params,
            trainable=trainable,
        )
        return model, tokenizer

    def _preflight(self, train_path: Path, val_path: Path | None) -> None:
        cfg = self.config.training
        self.train_data = encode_file(train_path, self.tokenizer, cfg.seq_len)
        self.val_data = encode_file(val_path, self.tokenizer, cfg.seq_len) if val_path else None
        if self.train_data.problems:
            first = self.train_data.problems[0]
            raise DataError(f"row {first['row']} cannot be encoded: {first['message']}")
        if not self.train_data.examples:
            raise DataError("no training example has an answer to learn")
        lengths = sorted(len(e.ids) for e in self.train_data.examples)
        self.events.emit(
            "preflight",
            examples=len(lengths),
            validation_examples=len(self.val_data.examples) if self.val_data else 0,
            validation_skipped_no_target=self.val_data.skipped_no_target if self.val_data else 0,
            tokens=self.train_data.tokens,
            truncated=self.train_data.truncated,
            skipped_no_target=self.train_data.skipped_no_target,
            token_length={
                "p50": lengths[len(lengths) // 2],
                "p95": lengths[int(len(lengths) * 0.95)],
                "max": lengths[-1],
            },
            seq_len=cfg.seq_len,
        )
        pad = self.tokenizer.pad_token_id
        assert pad is not None

        def plan(examples: list[Example]) -> BatchPlan:
            return BatchPlan(
                examples,
                seq_len=cfg.seq_len,
                batch_size=cfg.batch_size,
                packing=cfg.packing,
                pad_id=pad,
                seed=cfg.seed,
            )

        self.plan = plan(self.train_data.examples)
        has_validation = self.val_data is not None and self.val_data.examples
        self.val_plan = plan(self.val_data.examples) if self.val_data and has_validation else None
        per_epoch_steps = max(1, -(-self.plan.per_epoch // cfg.grad_accum))
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch_steps))

    def _build_optimizer(self) -> None:
        cfg = self.config.training
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(0.9, 0.95),
            fused=self.device.type in ("cpu", "cuda"),
        )
        name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
        self.scheduler = get_scheduler(
            name,
            self.optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.dtype = autocast_dtype(cfg.precision, self.device)
        # note: float16 needs a GradScaler; bfloat16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    # -- train ---------------------------------------------------------------

    def train(self) -> Outcome:
        cfg = self.config.training
        self.model.train()
        self.events.emit(
            "state", state="running", step=self.state.step, total_steps=self.total_steps
        )
        if self.val_plan is not None and self.state.step == 0:
            # the starting point, so every later evaluation has something to beat
            self.events.emit("eval", step=0, best=False, **self.evaluate())  # type: ignore[arg-type]
        control = Control(self.dir / "control", self.dir / "events.jsonl")
        recent: list[float] = []
        window: list[dict[str, float]] = []
        while self.state.step < self.total_steps:
            request = control.poll() if self.world.is_main else None
            if self.signals.received and request is None and self.world.is_main:
                request = {"action": "pause", "request_id": f"signal-{self.signals.received}"}
            self.signals.received = None  # under torchrun every process gets the signal
            request = self.world.decide(request)
            if request is not None:
                outcome = self._handle(request)
                if outcome is not None:
                    return outcome
            started = time.perf_counter()
            metrics = self._step()
            metrics["seconds"] = time.perf_counter() - started
            recent = [*recent, metrics["seconds"]][-20:]
            window.append(metrics)
            self.state.step += 1
            self.heartbeat.step = self.state.step
            if self.state.step % cfg.log_every == 0 or self.state.step == self.total_steps:
                self._emit_metrics(window, recent)
                window = []
            stop_early = False
            if self.val_plan is not None and self.state.step % cfg.eval_every == 0:
                stop_early = self._evaluate()
            elif self.state.step % cfg.save_every == 0:
                self.save_checkpoint()
            if stop_early:
                self.events.emit("log", level="info", message="early stopping: no improvement")
                break
        if self.val_plan is not None and self.state.step % cfg.eval_every != 0:
            self._evaluate()
        return self.finish("completed")

    def _handle(self, request: dict[str, str]) -> Outcome | None:
        action = request["action"]
        self.save_checkpoint()
        self.events.emit("control", **request, step=self.state.step, sync=True)
        if action == "pause":
            self.events.emit("state", state="paused", step=self.state.step, sync=True)
            return Outcome("paused", self.state.step, EXIT_PAUSED)
        if action == "stop":
            return self.finish("stopped")
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _loss_sums(self, batch: Batch, count_right: bool = False) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over the target tokens (and, when asked, how many
        of them the model predicted right)."""
        with self._autocast():
            logits = self.model(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                position_ids=None
                if batch.position_ids is None
                else batch.position_ids.to(self.device),
            ).logits
        # note: shifting the labels (not slicing the logits) avoids copying the
        # whole logits tensor forward and backward
        logits = logits.float()
        targets = F.pad(batch.labels, (0, 1), value=IGNORE)[:, 1:].to(self.device)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        if not count_right:
            return loss, 0
        return loss, int(((logits.argmax(-1) == targets) & (targets != IGNORE)).sum())

    def _step(self) -> dict[str, float]:
        cfg = self.config.training
        world = self.world
        # each process takes its share of the step's micro-batches: k*size + rank
        first = self.state.batches
        batches = [
            self.plan.batch(first + i * world.size + world.rank) for i in range(cfg.grad_accum)
        ]
        self.state.batches += cfg.grad_accum * world.size
        (targets_all,) = world.sum([sum(b.target_tokens for b in batches)])
        targets = int(targets_all)
        total_loss = 0.0
        for batch in batches:
            loss_sum, _ = self._loss_sums(batch)
            # note: dividing by the whole step's target count makes accumulation exact
            loss = loss_sum / max(targets, 1)
            self.scaler.scale(loss).backward()
            total_loss += float(loss.detach())  # this is a CPU-GPU sync point
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        world.sum_gradients(trainable)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, real, padded, samples = world.sum(
            [
                total_loss,
                sum(b.real_tokens for b in batches),
                sum(b.input_ids.numel() for b in batches),
                sum(b.samples for b in batches),
            ]
        )
        self.state.tokens += int(real)
        return {
            "loss": total_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "real_tokens": real,
            "padded_tokens": padded,
            "target_tokens": targets,
            "samples": samples,
        }

    def _emit_metrics(self, window: list[dict[str, float]], recent: list[float]) -> None:
        """One metrics event for the steps since the last one (log_every steps)."""
        m = {key: sum(step[key] for step in window) for key in window[0]}
        m["loss"] /= len(window)
        m["grad_norm"] /= len(window)
        m["lr"] = window[-1]["lr"]
        seconds = m["seconds"]
        mean = sum(recent) / len(recent)
        device_mb = (
            torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None
        )
        self.events.emit(
            "metrics",
            step=self.state.step,
            total_steps=self.total_steps,
            epoch=round(self.state.batches / self.plan.per_epoch, 4),
            loss=m["loss"],
            perplexity=math.exp(min(m["loss"], 50)),
            lr=m["lr"],
            grad_norm=m["grad_norm"],
            tokens_per_s=round(m["real_tokens"] / seconds, 1),
            samples_per_s=round(m["samples"] / seconds, 2),
            padding_share=round(1 - m["real_tokens"] / m["padded_tokens"], 4),
            tokens_seen=self.state.tokens,
            step_seconds=round(seconds / len(window), 4),
            eta_s=round(mean * (self.total_steps - self.state.step), 1),
            rss_mb=round(psutil.Process().memory_info().rss / 2**20, 1),
            device_memory_mb=round(device_mb, 1) if device_mb is not None else None,
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        assert self.val_plan is not None
        self.model.eval()
        loss_sum, correct, count = 0.0, 0.0, 0.0
        batches = self.val_plan.eval_batches(self.config.training.eval_max_batches)
        for index, batch in enumerate(batches):
            if index % self.world.size != self.world.rank:
                continue  # another process evaluates this one
            loss, right = self._loss_sums(batch, count_right=True)
            loss_sum += float(loss)
            correct += right
            count += batch.target_tokens
        loss_sum, correct, count = self.world.sum([loss_sum, correct, count])
        self.model.train()
        val_loss = loss_sum / max(count, 1)
        return {
            "val_loss": val_loss,
            "perplexity": math.exp(min(val_loss, 50)),
            "token_accuracy": correct / max(count, 1),
            "tokens": int(count),
        }

    def _evaluate(self) -> bool:
        """Evaluate, keep the best checkpoint; True when early stopping says stop."""
        cfg = self.config.training
        result = self.evaluate()
        improved = result["val_loss"] < self.state.best_loss
        if improved:
            self.state.best_loss = result["val_loss"]
            self.state.best_step = self.state.step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
        self.events.emit("eval", step=self.state.step, best=improved, **result)  # type: ignore[arg-type]
        if improved or self.state.step % cfg.save_every == 0:
            self.save_checkpoint()
        patience = cfg.early_stopping_patience
        return patience is not None and self.state.evals_without_improvement >= patience

    # -- checkpoints ---------------------------------------------------------

    def _lora(self) -> bool:
        return self.config.training.method in ("lora", "qlora")

    def save_checkpoint(self) -> None:
        step = self.state.step
        if step == self.saved_step:
            return
        if not self.world.is_main:  # the weights are the same everywhere: one writer
            self.saved_step = step
            return

        def write(folder: Path) -> None:
            if self._lora():
                from peft import get_peft_model_state_dict

                weights = {
                    k: v.contiguous() for k, v in get_peft_model_state_dict(self.model).items()
                }
                save_file(weights, folder / "adapter.safetensors")
            else:
                save_model(self.model, str(folder / "model.safetensors"))
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
            torch.save(self.scaler.state_dict(), folder / "scaler.pt")
            torch.save(rng_state(), folder / "rng.pt")

        state = vars(self.state) | {"best_loss": finite(self.state.best_loss)}
        ckpt.write_checkpoint(
            self.checkpoints, step, write, {"state": state, "events_seq": self.events.seq}
        )
        self.saved_step = step
        ckpt.prune(self.checkpoints, self.config.training.keep_last, {self.state.best_step})
        self.events.emit(
            "checkpoint",
            step=step,
            name=ckpt.checkpoint_name(step),
            best=step == self.state.best_step,
        )

    def _load_checkpoint(self, folder: Path, manifest: dict[str, Any]) -> None:
        if self._lora():
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(folder / "adapter.safetensors"))
        else:
            load_model(self.model, str(folder / "model.safetensors"), device=str(self.device))
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        self.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
        set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
        state = dict(manifest["state"])
        state["best_loss"] = math.inf if state["best_loss"] is None else state["best_loss"]
        self.state = TrainState(**state)

    # -- finish --------------------------------------------------------------

    def finish(self, final_state: str) -> Outcome:
        """Write the model people will use, then say how the run ended."""
        self.save_checkpoint()
        if not self.world.is_main:
            return Outcome(final_state, self.state.step, EXIT_COMPLETED)
        out = self.dir / "model"
        self.model.eval()
        model: Any = self.model
        if self._lora():
            model.save_pretrained(self.dir / "adapter")
            if not self.config.lora.merge:
                self.tokenizer.save_pretrained(self.dir / "adapter")
                return self._ended(final_state)
            model = model.merge_and_unload()
        set_generation_ids(model, self.tokenizer)
        model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        return self._ended(final_state)

    def _ended(self, final_state: str) -> Outcome:
        self.events.emit(
            "state",
            state=final_state,
            step=self.state.step,
            best_step=self.state.best_step,
            sync=True,
        )
        return Outcome(final_state, self.state.step, EXIT_COMPLETED)


def main_exit_code(run_dir: Path) -> int:
    """`python -m lastedocation.training RUN_DIR`: train (or resume) and exit."""
    if not (run_dir / "config.yaml").is_file():
        print(f"error: {run_dir} has no config.yaml", flush=True)
        return EXIT_FAILED
    outcome = train_run(run_dir)
    if outcome.state == "paused" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun takes any other code for a crash and tears the group down noisily;
        # the events already say "paused"
        return EXIT_COMPLETED
    return outcome.exit_code
