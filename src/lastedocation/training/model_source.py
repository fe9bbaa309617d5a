"""Where the base model comes from: trained from scratch here (a small GPT-2 or
Llama with a byte-level BPE tokenizer trained on the dataset), a local folder
in Hugging Face format, or the Hugging Face Hub (downloaded once into a cache).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from lastedocation.training.config import ModelConfig

PAD, END, BOS = "<|pad|>", "<|end|>", "<|begin|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Turns are `<|role|>\n` + content + `<|end|>\n`; generation stops at <|end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
_PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": {"hidden": 64, "layers": 2, "heads": 4, "mlp": 172},
    "llama-small": {"hidden": 256, "layers": 6, "heads": 8, "mlp": 688},
    "gpt2-tiny": {"hidden": 64, "layers": 2, "heads": 4},
    "gpt2-small": {"hidden": 256, "layers": 6, "heads": 8},
}


class ModelSourceError(Exception):
    """The base model cannot be had; the message says what to do instead."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with the studio's chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, END, BOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=END, pad_token=PAD
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.model_max_length = 1 << 20
    return wrapped


def scratch_config(
    preset: str, tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> PretrainedConfig:
    shape = _PRESETS[preset]
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if preset.startswith("llama"):
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=shape["hidden"],
            intermediate_size=shape["mlp"],
            num_hidden_layers=shape["layers"],
            num_attention_heads=shape["heads"],
            num_key_value_heads=shape["heads"],
            max_position_embeddings=max(seq_len, 128),
            tie_word_embeddings=True,
            **ids,
        )
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=shape["hidden"],
        n_layer=shape["layers"],
        n_head=shape["heads"],
        n_positions=max(seq_len, 128),
        **ids,
    )


def build_scratch(
    config: ModelConfig, texts: Iterable[str], seq_len: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model_config = scratch_config(config.preset, tokenizer, seq_len)
    model = AutoModelForCausalLM.from_config(model_config, attn_implementation="sdpa")
    return model, tokenizer


def resolve_folder(config: ModelConfig) -> Path:
    """The local folder of a `local` or `hub` model (downloading a Hub model once)."""
    if config.source == "local":
        assert config.path is not None
        return config.path
    return download_from_hub(config.hub_id or "", config.revision, config.cache_dir)


def download_from_hub(
    hub_id: str,
    revision: str | None,
    cache_dir: Path | None,
    *,
    tqdm_class: type[Any] | None = None,
    patterns: list[str] | None = None,
) -> Path:
    """Download a model (weights as safetensors, config, tokenizer; or the files named by
    `patterns`) into the cache.

    Already-cached files are not fetched again. Offline, this fails with a message
    that says how to use a local folder instead. `tqdm_class` replaces
    huggingface_hub's progress bars (the studio reports progress through it).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id=hub_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=patterns
            or ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"],
            tqdm_class=tqdm_class,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"cannot download {hub_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "If this machine is offline, download the model on a machine with access "
            "(e.g. `hf download ORG/NAME --local-dir FOLDER`), copy the folder here and set "
            "model.source: local and model.path: FOLDER"
        ) from None
    return Path(folder)


def load_pretrained(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and tokenizer from a folder; only safetensors weights are accepted."""
    if not any(folder.glob("*.safetensors")):
        raise ModelSourceError(
            f"{folder} has no .safetensors weights; the studio does not load pickled weights "
            "(convert them with `save_pretrained(..., safe_serialization=True)`)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation="sdpa", use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load the model in {folder}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer


def lora_targets(model: PreTrainedModel) -> list[str]:
    """The projections LoRA adapts by default, by architecture."""
    kind = model.config.model_type
    if kind == "gpt2":
        return ["c_attn", "c_proj", "c_fc"]
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
