"""Pre-flight: before a run is queued, run the trainer's own data path (tokenizer,
chat template, label mask, truncation) over every row, and estimate memory.

For a scratch model the tokenizer is trained here exactly as the trainer would
train it, and saved in the run's `base/` folder, so the trainer uses this one
instead of training it again and the counts are the run's counts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import psutil

from lastedocation.errors import InvalidInput
from lastedocation.training.config import RunConfig
from lastedocation.training.data import DataError, encode_file, iter_texts, prepare_records
from lastedocation.training.model_source import (
    ModelSourceError,
    resolve_folder,
    scratch_config,
    train_tokenizer,
)

# bytes per parameter while training with AdamW in fp32: weights, gradients, two moments
_FULL_BYTES_PER_PARAM = 16


def preflight(config: RunConfig, base: Path) -> dict[str, Any]:
    """Check every row; a scratch model's tokenizer and shape are saved in `base`."""
    try:
        with tempfile.TemporaryDirectory(prefix="preflight-") as work:
            train, validation = prepare_records(config.data, Path(work))
            try:
                tokenizer, model_config, params = _tokenizer_and_shape(config, train)
            except (OSError, ValueError, KeyError) as exc:  # a folder transformers cannot read
                raise InvalidInput(
                    f"pre-flight: the base model's tokenizer or config cannot be loaded: {exc}",
                    field="model",
                ) from None
            if config.model.source == "scratch":
                tokenizer.save_pretrained(base)
                model_config.save_pretrained(base)
            seq_len = config.training.seq_len
            encoded = encode_file(train, tokenizer, seq_len)
            held_out = encode_file(validation, tokenizer, seq_len) if validation else None
    except (DataError, ModelSourceError) as exc:
        raise InvalidInput(f"pre-flight: {exc}", field="data") from None
    if encoded.problems:
        first = encoded.problems[0]
        raise InvalidInput(
            f"pre-flight: row {first['row']} cannot be encoded: {first['message']}",
            row=first["row"],
            field="data",
        )
    lengths = sorted(len(example.ids) for example in encoded.examples)
    if not lengths:
        raise InvalidInput("pre-flight: no row has an answer left to learn", field="data")
    return {
        "examples": len(lengths),
        "validation_examples": len(held_out.examples) if held_out else 0,
        "tokens": encoded.tokens,
        "truncated": encoded.truncated,
        "skipped_no_target": encoded.skipped_no_target,
        "token_length": {
            "p50": lengths[len(lengths) // 2],
            "p95": lengths[int(len(lengths) * 0.95)],
            "max": lengths[-1],
        },
        "memory": memory_estimate(config, model_config, params),
    }


def _tokenizer_and_shape(config: RunConfig, train: Path) -> tuple[Any, Any, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.model.source == "scratch":
        tokenizer = train_tokenizer(iter_texts(train), config.model.vocab_size)
        model_config = scratch_config(config.model.preset, tokenizer, config.training.seq_len)
    else:
        folder = resolve_folder(config.model)
        tokenizer = _tokenizer(folder)
        model_config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForCausalLM.from_config(model_config)  # type: ignore[no-untyped-call]
        params = sum(p.numel() for p in model.parameters())
    return tokenizer, model_config, params


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    from lastedocation.training.model_source import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:  # as the trainer does
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def memory_estimate(config: RunConfig, model_config: Any, params: int) -> dict[str, Any]:
    """A rough upper estimate of training memory, and what the device has."""
    import torch

    training = config.training
    hidden = getattr(model_config, "hidden_size", None) or model_config.n_embd
    layers = getattr(model_config, "num_hidden_layers", None) or model_config.n_layer
    vocab = model_config.vocab_size
    tokens = training.batch_size * training.seq_len
    states: float
    if training.method == "full":
        states = params * _FULL_BYTES_PER_PARAM
    else:  # frozen weights (4 bytes, or ~0.6 for 4-bit) and a small adapter
        states = params * (0.6 if training.method == "qlora" else 4)
    # activations kept for backward: ~34 values per token per hidden unit per layer,
    # plus the logits (fp32) and their gradient
    activations = tokens * (34 * hidden * layers * 4 + 2 * vocab * 4)
    needed = int(states + activations)
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        device, available = "cuda", int(free)
    else:
        device, available = "cpu", int(psutil.virtual_memory().available)
    return {
        "parameters": params,
        "estimated_bytes": needed,
        "device": device,
        "available_bytes": available,
        "fits": needed < available,
    }
