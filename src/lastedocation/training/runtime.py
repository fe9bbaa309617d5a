"""Process-level pieces of a run: signals, precision, RNG state, generation ids."""

from __future__ import annotations

import math
import random
import signal
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Signals:
    """SIGTERM (and SIGINT when asked) become a pause at the next step boundary."""

    def __init__(self, handle_sigint: bool) -> None:
        self.received: str | None = None
        self._handled = [signal.SIGTERM] + ([signal.SIGINT] if handle_sigint else [])
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for sig in self._handled:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # a CPU with native bf16 (AVX512-BF16, AMX) runs bf16 matmuls ~4x faster than
    # fp32; bench/train_bench.py measured 1.6-1.7x for a whole training step
    return torch.bfloat16 if _cpu_has_bf16() else None


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    for config in (model.config, model.generation_config):
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.bos_token_id is not None:
            config.bos_token_id = tokenizer.bos_token_id
