"""The speech recipe: fine-tune Whisper on a speech dataset. setup, train, evaluate,
save_checkpoint, finish; one linear loop, the text recipe's contract.

    outcome = train_speech_run(run_dir)      # `task: speech` in run_dir/config.yaml

The run folder is the same interface as a text run's: config.yaml in; events.jsonl,
heartbeat, checkpoints/, base/ (tokenizer, feature extractor), model/ out; `control`
read at every step boundary. Pause is a checkpoint and exit; resume loads the newest
checkpoint that verifies (trainable weights, optimizer, scheduler, scaler, RNG states,
position in the data), so a paused run's loss curve equals an uninterrupted one.

Audio becomes log-mel features (the model's WhisperFeatureExtractor, 30 s windows);
labels are the transcript after Whisper's prefix. With a frozen encoder (the default)
the encoder's output depends on the clip alone, so it is computed once per clip (one
clip at a time, so it is the same bits every time) and kept while memory allows.
Evaluation transcribes the validation clips greedily (Whisper's suppressed tokens; the
same token ids as faster-whisper at temperature 0) and scores WER and CER, at step 0
(the base model), every `eval_every` steps and at the end.
"""

from __future__ import annotations

import contextlib
import inspect
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
from safetensors.torch import load_file, save_file
from transformers import get_scheduler
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as hf_logging

from lastedocation.errors import InvalidInput
from lastedocation.training import checkpoint as ckpt
from lastedocation.training.config import RunConfig, load_config
from lastedocation.training.data import IGNORE, DataError
from lastedocation.training.events import Control, EventLog, Heartbeat
from lastedocation.training.model_source import ModelSourceError
from lastedocation.training.recipe import EXIT_COMPLETED, EXIT_FAILED, EXIT_PAUSED, Outcome
from lastedocation.training.runtime import (
    Signals,
    autocast_dtype,
    finite,
    rng_state,
    set_rng_state,
)
from lastedocation.training.whisper_data import (
    PREFIX,
    Clip,
    ClipPlan,
    check_clips,
    error_rates,
    label_batch,
    prepare_clips,
    summary,
)
from lastedocation.training.whisper_model import load_whisper

LORA_TARGETS = r".*\.(q_proj|k_proj|v_proj|out_proj)$"
DECODER_LORA_TARGETS = r".*decoder.*\.(q_proj|k_proj|v_proj|out_proj)$"
Observer = Callable[[dict[str, Any]], None]


@dataclass
class SpeechState:
    """What, besides tensors, a checkpoint must restore."""

    step: int = 0
    batches: int = 0
    tokens: int = 0
    audio_seconds: float = 0.0
    best_loss: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0


def train_speech_run(
    run_dir: Path, *, observer: Observer | None = None, handle_sigint: bool = False
) -> Outcome:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    events = EventLog(run_dir / "events.jsonl", observer)
    try:
        with Heartbeat(run_dir / "heartbeat") as heartbeat, Signals(handle_sigint) as signals:
            return _SpeechRun(run_dir, events, heartbeat, signals).execute()
    finally:
        events.close()


class _SpeechRun:
    def __init__(
        self, run_dir: Path, events: EventLog, heartbeat: Heartbeat, signals: Signals
    ) -> None:
        self.dir = run_dir
        self.earlier_events = events.seq > 0  # this run was started before
        self.events = events
        self.heartbeat = heartbeat
        self.signals = signals
        self.checkpoints = run_dir / "checkpoints"
        self.state = SpeechState()
        self.saved_step = -1
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cache: dict[Path, torch.Tensor] = {}  # audio file -> the frozen encoder's output
        self.cache_bytes = 0

    # -- setup ---------------------------------------------------------------

    def execute(self) -> Outcome:
        try:
            self.config: RunConfig = load_config(self.dir / "config.yaml")
            self.setup()
            return self.train()
        except (InvalidInput, DataError, ModelSourceError, ckpt.CheckpointError) as exc:
            return self._fail(str(exc.detail if isinstance(exc, InvalidInput) else exc))
        except torch.cuda.OutOfMemoryError as exc:
            return self._fail(f"out of device memory: {exc}; lower batch_size")
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
        self._build_model()
        self._preflight()
        self._build_optimizer()
        if resume is not None:
            self._load_checkpoint(resume[0], resume[1])
        if resume is not None or self.earlier_events:
            # what an earlier process logged after this step is void
            self.events.emit("rewind", to_step=self.state.step, sync=True)
        self.heartbeat.step = self.state.step

    def _build_model(self) -> None:
        speech = self.config.speech
        self.whisper, self.tokenizer, self.features = load_whisper(self.config, self.dir / "base")
        self.whisper.to(self.device)
        self.frozen = speech.freeze_encoder
        if self.frozen:
            self.whisper.model.encoder.requires_grad_(False)
        self.model: Any = self.whisper
        if self.config.training.method == "lora":
            from peft import LoraConfig, get_peft_model

            lora = self.config.lora
            targets = DECODER_LORA_TARGETS if self.frozen else LORA_TARGETS
            self.model = get_peft_model(
                self.whisper,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules or targets,
                ),
            )
        generation = self.whisper.generation_config
        self.eot = int(self.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
        self.suppress = list(generation.suppress_tokens or [])
        self.begin_suppress = list(generation.begin_suppress_tokens or [])
        forward = inspect.signature(self.whisper.forward).parameters
        self.cache_arg = "cache" if "cache" in forward else "past_key_values"
        params = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.events.emit(
            "log",
            level="info",
            message=f"model: {params:,} parameters, {trainable:,} trainable",
            parameters=params,
            trainable=trainable,
        )

    def _preflight(self) -> None:
        cfg, speech = self.config.training, self.config.speech
        self.train_clips, self.val_clips = prepare_clips(self.config, self.tokenizer)
        every = self.train_clips + self.val_clips
        self.seconds = dict(
            zip((c.audio for c in every), check_clips(every, speech.max_audio_seconds), strict=True)
        )
        checked = summary(self.train_clips, self.val_clips, list(self.seconds.values()))
        self.events.emit("preflight", **checked, seq_len=speech.max_label_tokens)
        if speech.eval_max_clips is not None:
            self.val_clips = self.val_clips[: speech.eval_max_clips]
        self.plan = ClipPlan(len(self.train_clips), cfg.batch_size, cfg.seed)
        per_epoch_steps = max(1, -(-self.plan.per_epoch // cfg.grad_accum))
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch_steps))
        longest = max((len(c.ids) for c in self.val_clips), default=0)
        # a transcript twice as long as the longest reference is wrong already
        self.max_new_tokens = min(self.whisper.config.max_target_positions - PREFIX, 2 * longest)

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
        if self.val_clips and self.state.step == 0:
            # the base model's score: what fine-tuning has to beat
            self.events.emit("eval", step=0, best=False, **self.evaluate())
        control = Control(self.dir / "control", self.dir / "events.jsonl")
        recent: list[float] = []
        window: list[dict[str, float]] = []
        while self.state.step < self.total_steps:
            request = control.poll()
            if self.signals.received and request is None:
                request = {"action": "pause", "request_id": f"signal-{self.signals.received}"}
            self.signals.received = None
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
            if self.val_clips and self.state.step % cfg.eval_every == 0:
                stop_early = self._evaluate()
            elif self.state.step % cfg.save_every == 0:
                self.save_checkpoint()
            if stop_early:
                self.events.emit("log", level="info", message="early stopping: no improvement")
                break
        if self.val_clips and self.state.step % cfg.eval_every != 0:
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

    def _log_mel(self, clip: Clip) -> torch.Tensor:
        """The clip's log-mel features (outside autocast: they are float32 by design)."""
        from lastedocation.speech.audio import decode

        audio = decode(clip.audio, max_seconds=self.config.speech.max_audio_seconds)
        features = self.features(audio.samples, sampling_rate=16_000, return_tensors="pt")
        mel: torch.Tensor = features.input_features[0]
        return mel.to(self.device)

    def _encoded(self, clips: list[Clip]) -> torch.Tensor | None:
        """The frozen encoder's output for `clips` (None when the encoder trains)."""
        if not self.frozen:
            return None
        encoder = self.whisper.model.encoder
        states = []
        for clip in clips:
            cached = self.cache.get(clip.audio)
            if cached is None:
                mel = self._log_mel(clip)[None]
                was_training = encoder.training
                encoder.eval()  # frozen means fixed: no dropout either
                with torch.no_grad(), self._autocast():
                    cached = encoder(mel).last_hidden_state[0]
                encoder.train(was_training)
                size = cached.numel() * cached.element_size()
                if self.cache_bytes + size <= self.config.speech.encoder_cache_mb * 2**20:
                    self.cache[clip.audio] = cached
                    self.cache_bytes += size
            states.append(cached)
        return torch.stack(states)

    def _logits(self, clips: list[Clip], decoder_ids: torch.Tensor) -> torch.Tensor:
        encoded = self._encoded(clips)
        features = None if encoded is not None else torch.stack([self._log_mel(c) for c in clips])
        with self._autocast():
            out = self.whisper(
                input_features=features,
                encoder_outputs=None if encoded is None else BaseModelOutput(encoded),
                decoder_input_ids=decoder_ids.to(self.device),
                use_cache=False,
            )
        return out.logits.float()  # type: ignore[no-any-return]

    def _loss_sums(self, clips: list[Clip]) -> tuple[torch.Tensor, int, int]:
        """Summed cross-entropy over the label tokens, how many the model predicted
        right, and how many there are."""
        inputs, labels = label_batch(clips, self.eot)
        logits = self._logits(clips, inputs)
        targets = labels.to(self.device)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=IGNORE, reduction="sum"
        )
        right = int(((logits.argmax(-1) == targets) & (targets != IGNORE)).sum())
        return loss, right, int((targets != IGNORE).sum())

    def _step(self) -> dict[str, float]:
        cfg = self.config.training
        first = self.state.batches
        batches = [
            [self.train_clips[i] for i in self.plan.batch(first + k)] for k in range(cfg.grad_accum)
        ]
        self.state.batches += cfg.grad_accum
        targets = sum(len(c.ids) - PREFIX for batch in batches for c in batch)
        total_loss = 0.0
        for batch in batches:
            loss_sum, _, _ = self._loss_sums(batch)
            # note: dividing by the whole step's target count makes accumulation exact
            loss = loss_sum / max(targets, 1)
            self.scaler.scale(loss).backward()
            total_loss += float(loss.detach())  # this is a CPU-GPU sync point
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = sum(self.seconds[c.audio] for batch in batches for c in batch)
        self.state.tokens += targets
        self.state.audio_seconds += seconds
        return {
            "loss": total_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "target_tokens": targets,
            "samples": sum(len(b) for b in batches),
            "audio_seconds": seconds,
        }

    def _emit_metrics(self, window: list[dict[str, float]], recent: list[float]) -> None:
        """One metrics event for the steps since the last one (log_every steps)."""
        m = {key: sum(step[key] for step in window) for key in window[0]}
        loss = m["loss"] / len(window)
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
            loss=loss,
            perplexity=math.exp(min(loss, 50)),
            lr=window[-1]["lr"],
            grad_norm=m["grad_norm"] / len(window),
            tokens_per_s=round(m["target_tokens"] / seconds, 1),
            samples_per_s=round(m["samples"] / seconds, 2),
            audio_seconds_per_s=round(m["audio_seconds"] / seconds, 2),
            audio_seconds_seen=round(self.state.audio_seconds, 2),
            tokens_seen=self.state.tokens,
            step_seconds=round(seconds / len(window), 4),
            eta_s=round(mean * (self.total_steps - self.state.step), 1),
            rss_mb=round(psutil.Process().memory_info().rss / 2**20, 1),
            device_memory_mb=round(device_mb, 1) if device_mb is not None else None,
        )

    # -- evaluate ------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Teacher-forced loss, then greedy transcripts scored by WER and CER."""
        self.model.eval()
        loss_sum, right, count = 0.0, 0, 0
        size = self.config.training.batch_size
        for start in range(0, len(self.val_clips), size):
            loss, correct, tokens = self._loss_sums(self.val_clips[start : start + size])
            loss_sum, right, count = loss_sum + float(loss), right + correct, count + tokens
        hypotheses = [self.transcribe(clip) for clip in self.val_clips]
        self.model.train()
        val_loss = loss_sum / max(count, 1)
        references = [c.text for c in self.val_clips]
        return {
            "val_loss": val_loss,
            "perplexity": math.exp(min(val_loss, 50)),
            "token_accuracy": right / max(count, 1),
            "tokens": count,
            **error_rates(references, hypotheses),
            "clips": len(hypotheses),
            "examples": [
                {"reference": r, "transcript": h}
                for r, h in zip(references[:3], hypotheses[:3], strict=True)
            ],
        }

    @torch.no_grad()
    def transcribe(self, clip: Clip) -> str:
        """Greedy decoding with a key/value cache, from Whisper's prefix."""
        states = self._encoded([clip])
        if states is None:
            mel = self._log_mel(clip)[None]
            with self._autocast():
                states = self.whisper.model.encoder(mel).last_hidden_state
        # note: on a CPU, autocast casts every weight again at each call, once a token
        # (20 tokens of Whisper base: 1.0 s in bf16, 0.5 s in fp32), so decode in fp32
        on_cpu = self.device.type == "cpu"
        encoded = BaseModelOutput(last_hidden_state=states.float() if on_cpu else states)
        ids = torch.tensor([clip.ids[:PREFIX]], device=self.device)
        out: list[int] = []
        cache = None
        for _ in range(self.max_new_tokens):
            with contextlib.nullcontext() if on_cpu else self._autocast():
                step = self.whisper(
                    encoder_outputs=encoded,
                    decoder_input_ids=ids,
                    use_cache=True,
                    **{self.cache_arg: cache},
                )
            cache = getattr(step, self.cache_arg)
            logits = step.logits[0, -1].float()
            logits[self.suppress] = -math.inf
            if not out:
                logits[self.begin_suppress] = -math.inf
            token = int(logits.argmax())
            if token == self.eot:
                break
            out.append(token)
            ids = torch.tensor([[token]], device=self.device)
        return str(self.tokenizer.decode(out, skip_special_tokens=True)).strip()

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
        self.events.emit("eval", step=self.state.step, best=improved, **result)
        if improved or self.state.step % cfg.save_every == 0:
            self.save_checkpoint()
        patience = cfg.early_stopping_patience
        return patience is not None and self.state.evals_without_improvement >= patience

    # -- checkpoints ---------------------------------------------------------

    def _trainable(self) -> dict[str, torch.Tensor]:
        """The weights training changes (a frozen encoder is the base's, not saved again)."""
        return {
            n: p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad
        }

    def save_checkpoint(self) -> None:
        step = self.state.step
        if step == self.saved_step:
            return

        def write(folder: Path) -> None:
            save_file(self._trainable(), folder / "trainable.safetensors")
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
        weights = load_file(folder / "trainable.safetensors", device=str(self.device))
        if set(weights) != set(self._trainable()):
            raise ckpt.CheckpointError(f"{folder.name} does not match this run's model")
        self.model.load_state_dict(weights, strict=False)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        self.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
        set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
        state = dict(manifest["state"])
        state["best_loss"] = math.inf if state["best_loss"] is None else state["best_loss"]
        self.state = SpeechState(**state)

    # -- finish --------------------------------------------------------------

    def finish(self, final_state: str) -> Outcome:
        """Write the model people will use (Transformers form, LoRA merged), then say
        how the run ended; registering it makes the CTranslate2 form."""
        self.save_checkpoint()
        self.model.eval()
        model: Any = self.model
        if self.config.training.method == "lora":
            model.save_pretrained(self.dir / "adapter")
            model = model.merge_and_unload()
        out = self.dir / "model"
        model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        self.features.save_pretrained(out)
        self.events.emit(
            "state",
            state=final_state,
            step=self.state.step,
            best_step=self.state.best_step,
            sync=True,
        )
        return Outcome(final_state, self.state.step, EXIT_COMPLETED)
