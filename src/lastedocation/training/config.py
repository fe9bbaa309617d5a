"""The run config: every field documented, every problem reported at once.

A config is YAML (or JSON) with four sections, `data`, `model`, `training`
and `lora` (and `speech` for `task: speech`, Whisper fine-tuning); unknown keys are
errors (a typo must not be silently ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lastedocation.errors import InvalidInput

PRESETS = ("llama-tiny", "llama-small", "gpt2-tiny", "gpt2-small", "whisper-tiny-random")
SPEECH_PRESETS = ("whisper-tiny-random",)
SPEECH_LR = 1e-5  # a speech run's default: Whisper forgets what it knew at text-model rates


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    train: Path = Field(description="Training data: any file the studio imports, or its records.")
    validation: Path | None = Field(
        default=None, description="Validation data; default: split off the training data."
    )
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share held out when `validation` is not given."
    )
    split_key: str | None = Field(
        default=None, description="Field whose groups stay together in the split (e.g. qid)."
    )
    max_rows: int | None = Field(default=None, ge=1, description="Use only the first N rows.")
    data_format: Literal["qa", "alpaca", "openai", "sharegpt", "text"] | None = None
    question_field: str | None = None
    answer_field: str | None = None
    normalize: bool = Field(default=False, description="Persian normalization before training.")
    drop_invalid: bool = Field(default=False, description="Leave out rows that fail validation.")


class ModelConfig(_Section):
    source: Literal["scratch", "local", "hub"] = Field(
        default="scratch", description="scratch: a small model and tokenizer trained here."
    )
    preset: Literal[
        "llama-tiny", "llama-small", "gpt2-tiny", "gpt2-small", "whisper-tiny-random"
    ] = Field(
        default="llama-tiny",
        description="whisper-tiny-random: a few-layer random Whisper with the bundled "
        "tokenizer, for tests of speech runs",
    )
    path: Path | None = Field(
        default=None,
        description="Folder in Hugging Face format (local); for speech also a registry "
        "speech model's folder (transformers/, ctranslate2/) or a CTranslate2 folder.",
    )
    hub_id: str | None = Field(default=None, description="Model id on the Hugging Face Hub.")
    revision: str | None = None
    cache_dir: Path | None = Field(default=None, description="Where Hub downloads are kept.")
    vocab_size: int = Field(default=4000, ge=300, description="Scratch tokenizer's vocabulary.")


class LoraSettings(_Section):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="Default: the attention and MLP projections of the model."
    )
    merge: bool = Field(default=True, description="Also write the merged full model.")


class TrainingConfig(_Section):
    method: Literal["full", "lora", "qlora"] = "full"
    seq_len: int = Field(default=512, ge=8, description="Longest sequence in tokens.")
    packing: bool = Field(
        default=True, description="Pack several examples into one sequence (attention kept apart)."
    )
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="Overrides epochs.")
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 where the device has it (GPUs, CPUs with AVX512-BF16/AMX), "
        "fp16 on older GPUs, fp32 otherwise.",
    )
    eval_every: int = Field(default=50, ge=1, description="Steps between evaluations.")
    eval_max_batches: int | None = Field(default=None, ge=1)
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="Stop after this many evaluations without improvement."
    )
    save_every: int = Field(default=100, ge=1, description="Steps between checkpoints.")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept, besides the best.")
    log_every: int = Field(default=1, ge=1)
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch.")
    devices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs to train on; more than 1 runs under torchrun, each taking its "
        "share of every step (the effective batch is batch_size x grad_accum x devices). "
        "Without a GPU, that many CPU processes (gloo): for testing, not for speed.",
    )


class SpeechSettings(_Section):
    """Options of a speech run (`task: speech`): fine-tuning Whisper on audio clips with
    their transcripts."""

    language: str = Field(default="fa", description="Language of the transcripts (<|fa|>).")
    freeze_encoder: bool = Field(
        default=True,
        description="Train the decoder only: fewer weights to move on little data, and "
        "the encoder's output is computed once per clip",
    )
    max_audio_seconds: float = Field(
        default=30.0, gt=0, le=30, description="Longest clip; Whisper hears 30 s at a time."
    )
    max_label_tokens: int = Field(
        default=448,
        ge=8,
        le=448,
        description="Longest transcript in tokens, with the 4 prefix tokens and the end "
        "token (Whisper's decoder has 448 positions).",
    )
    eval_max_clips: int | None = Field(
        default=None, ge=1, description="Transcribe at most this many validation clips."
    )
    encoder_cache_mb: int = Field(
        default=2048,
        ge=0,
        description="Memory for the frozen encoder's outputs (kept per clip, reused every "
        "epoch and evaluation); clips beyond it are encoded again each time.",
    )


class RunConfig(_Section):
    name: str = "run"
    task: Literal["text", "speech"] = Field(
        default="text",
        description="text: a language model on rows of text; speech: Whisper on audio clips "
        "with transcripts (a speech dataset and a speech model).",
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    lora: LoraSettings = LoraSettings()
    speech: SpeechSettings = SpeechSettings()


class ConfigError(InvalidInput):
    """Every problem of a config, each naming the field and the fix."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        lines = "\n".join(f"  {field}: {message}" for field, message in problems)
        super().__init__(
            f"the run config has {len(problems)} problem(s):\n{lines}",
            problems=[{"field": f, "message": m} for f, m in problems],
        )
        self.problems = problems


def parse_config(raw: dict[str, Any], *, base_dir: Path | None = None) -> RunConfig:
    """Validate a config dict; relative paths are taken from `base_dir`."""
    problems: list[tuple[str, str]] = []
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(config)"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown field; check its spelling"
            problems.append((field, message))
        raise ConfigError(problems) from None
    if base_dir is not None:
        _resolve_paths(config, base_dir)
    if config.task == "speech" and "lr" not in config.training.model_fields_set:
        config.training.lr = SPEECH_LR
    problems.extend(_semantic_problems(config))
    if problems:
        raise ConfigError(problems)
    return config


MAX_CONFIG_BYTES = 1024 * 1024  # a run config is a few hundred bytes


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML without aliases: `*name` can repeat a node exponentially often (a "billion
    laughs" document of a few hundred bytes), and a run config never needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a run config", mark
            )
        return super().compose_node(parent, index)


def load_config(path: Path) -> RunConfig:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([("(file)", f"{path} is larger than {MAX_CONFIG_BYTES:,} bytes")])
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc}")]) from None
    except RecursionError:
        raise ConfigError([("(file)", f"{path} is nested too deeply")]) from None
    if not isinstance(raw, dict):
        raise ConfigError([("(file)", f"{path} must hold a mapping of sections")])
    return parse_config(raw, base_dir=path.parent)


def dump_config(config: RunConfig, path: Path) -> None:
    data = config.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _resolve_paths(config: RunConfig, base: Path) -> None:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    config.data.train = resolve(config.data.train) or config.data.train
    config.data.validation = resolve(config.data.validation)
    config.model.path = resolve(config.model.path)
    config.model.cache_dir = resolve(config.model.cache_dir)


def _semantic_problems(config: RunConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    data, model, training = config.data, config.model, config.training
    if not data.train.is_file():
        problems.append(("data.train", f"no file at {data.train}"))
    if data.validation is not None and not data.validation.is_file():
        problems.append(("data.validation", f"no file at {data.validation}"))
    if bool(data.question_field) != bool(data.answer_field):
        problems.append(("data.question_field", "give question_field and answer_field together"))
    gpus = torch.cuda.device_count()
    if gpus and config.training.devices > gpus:
        problems.append(
            ("training.devices", f"this machine has {gpus} GPU(s): ask for at most {gpus}")
        )
    if model.source == "local":
        if model.path is None:
            problems.append(("model.path", "source is local: give the model folder"))
        elif config.task == "speech":
            problems.extend(_speech_folder_problems(model.path))
        elif not (model.path / "config.json").is_file():
            problems.append(("model.path", f"{model.path} has no config.json (not a HF model)"))
    if model.source == "hub" and not model.hub_id:
        problems.append(("model.hub_id", "source is hub: give the model id, e.g. org/name"))
    if model.source == "scratch" and training.method != "full":
        problems.append(
            ("training.method", "a model trained from scratch has no base to adapt: use full")
        )
    if config.task == "speech":
        problems.extend(_speech_problems(config))
    elif model.source == "scratch" and model.preset in SPEECH_PRESETS:
        problems.append(("model.preset", f"{model.preset} is a speech model: set task: speech"))
    if training.method == "qlora" and config.task == "text":
        problems.extend(_qlora_problems())
    if training.warmup_steps and training.max_steps and training.warmup_steps >= training.max_steps:
        problems.append(("training.warmup_steps", "must be smaller than training.max_steps"))
    return problems


def _qlora_problems() -> list[tuple[str, str]]:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return [("training.method", "qlora needs a CUDA GPU; use lora on this machine")]
    if importlib.util.find_spec("bitsandbytes") is None:
        return [("training.method", "qlora needs bitsandbytes: pip install bitsandbytes")]
    return []


_FORMAT = "a text-run option: a speech dataset's rows are audio files with transcripts"
_TEXT_ONLY = {  # field: why a speech run refuses it
    "data_format": _FORMAT,
    "question_field": _FORMAT,
    "answer_field": _FORMAT,
    "split_key": "a text-run option: a speech run keeps every clip of one transcript on "
    "the same side of the split",
    "normalize": "a text-run option: a speech run trains on the transcripts as they are "
    "(WER and CER compare them after Persian normalization)",
    "drop_invalid": "a text-run option: a speech run refuses a bad clip, naming its row",
}


def _speech_problems(config: RunConfig) -> list[tuple[str, str]]:
    """What a speech run cannot do, each naming its field."""
    problems: list[tuple[str, str]] = []
    model, training, data = config.model, config.training, config.data
    if model.source == "scratch" and model.preset not in SPEECH_PRESETS:
        problems.append(
            (
                "model.preset",
                "a speech run needs a Whisper model: model.source registry with a speech "
                "model's id (the bundled whisper-base), hub, or the preset "
                + " or ".join(SPEECH_PRESETS),
            )
        )
    if training.method == "qlora":
        problems.append(("training.method", "speech runs train full or lora"))
    if training.devices > 1:
        problems.append(("training.devices", "speech runs train on one device"))
    for key, why in _TEXT_ONLY.items():
        if getattr(data, key) not in (None, False):
            problems.append((f"data.{key}", why))
    language = config.speech.language
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if language not in LANGUAGES:
        problems.append(("speech.language", f"{language!r} is not a Whisper language code"))
    return problems


def _speech_folder_problems(path: Path) -> list[tuple[str, str]]:
    whisper = (
        path / "config.json",
        path / "transformers" / "config.json",
        path / "ctranslate2" / "model.bin",
        path / "model.bin",
    )
    if any(p.is_file() for p in whisper):
        return []
    return [("model.path", f"{path} holds no Whisper model (Transformers or CTranslate2)")]
