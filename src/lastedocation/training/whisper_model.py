"""Where a speech run's Whisper comes from: a registry speech model (its transformers/
form, converted once from its ctranslate2/ form when missing), a Hugging Face Whisper
folder (an admin's, or a Hub download), or `whisper-tiny-random`, a few-layer random
Whisper with the bundled model's tokenizer, so tests train real Whisper code in seconds.

    tokenizer = speech_tokenizer(config.model, language)        # no weights (pre-flight)
    model, tokenizer, features = load_whisper(config, base)     # the trainer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lastedocation.models.ct2_file import ConversionError
from lastedocation.models.whisper_convert import (
    CT2,
    HF,
    convert_once,
    ensure_transformers,
    generation_config,
    whisper_tokenizer,
)
from lastedocation.training.config import ModelConfig, RunConfig
from lastedocation.training.model_source import ModelSourceError, download_from_hub

TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>: ids after the tokenizer's, as in every Whisper
# a few layers, small width: trains in seconds on a CPU; dropout on, so a test of exact
# resume also checks that the RNG state comes back
TINY_RANDOM: dict[str, Any] = {
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "dropout": 0.1,
}


def _bundled() -> Path:
    from lastedocation.speech import bundled

    try:
        return bundled.joined_model()
    except Exception as exc:  # a StudioError naming the packages to install
        raise ModelSourceError(str(exc)) from None


def speech_folder(model: ModelConfig, base: Path) -> Path:
    """The Transformers Whisper folder of a `local` or `hub` speech model; a CTranslate2
    form is converted first (a registry model's into its own folder, once)."""
    if model.source == "hub":
        return download_from_hub(model.hub_id or "", model.revision, model.cache_dir)
    assert model.path is not None
    path = model.path
    try:
        if (path / HF / "config.json").is_file() or (path / CT2 / "model.bin").is_file():
            return ensure_transformers(path, fallback=base / HF)
        if (path / "config.json").is_file():
            return path
        if (path / "model.bin").is_file():  # a bare CTranslate2 folder: convert a copy
            return convert_once(path, base / HF)
    except ConversionError as exc:
        raise ModelSourceError(f"the speech model cannot be converted: {exc.detail}") from None
    raise ModelSourceError(f"{path.name} holds no Whisper model")


def speech_tokenizer(model: ModelConfig, language: str) -> Any:
    """The run's tokenizer, without loading (or converting) weights: what the pre-flight
    needs to count every transcript's tokens."""
    from transformers import AutoTokenizer

    if model.source == "scratch":
        return with_prefix(whisper_tokenizer(_bundled() / "tokenizer.json"), language)
    if model.source == "hub":
        folder = download_from_hub(model.hub_id or "", model.revision, model.cache_dir)
        return with_prefix(AutoTokenizer.from_pretrained(folder), language)
    assert model.path is not None
    for folder in (model.path / HF, model.path):
        if (folder / "config.json").is_file():
            return with_prefix(AutoTokenizer.from_pretrained(folder), language)
    for folder in (model.path / CT2, model.path):
        if (folder / "tokenizer.json").is_file():
            return with_prefix(whisper_tokenizer(folder / "tokenizer.json"), language)
    raise ModelSourceError(f"{model.path.name} has no Whisper tokenizer")


def with_prefix(tokenizer: Any, language: str) -> Any:
    """Transcripts encode as <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
    text <|endoftext|>."""
    token = f"<|{language}|>"
    if not hasattr(tokenizer, "set_prefix_tokens"):
        raise ModelSourceError(
            f"the model's tokenizer ({type(tokenizer).__name__}) is not Whisper's"
        )
    if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
        raise ModelSourceError(f"the model's tokenizer has no {token} token")
    tokenizer.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
    return tokenizer


def load_whisper(config: RunConfig, base: Path) -> tuple[Any, Any, Any]:
    """The model, tokenizer and feature extractor a speech run starts from; the tokenizer,
    feature extractor and (for scratch) model config are kept in `base`."""
    from transformers import (
        AutoTokenizer,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    language = config.speech.language
    if config.model.source == "scratch":
        if (base / "config.json").is_file():  # resuming: the same shape and tokenizer
            tokenizer = AutoTokenizer.from_pretrained(base)
            model_config = WhisperConfig.from_pretrained(base)
        else:
            bundled = _bundled()
            tokenizer = whisper_tokenizer(bundled / "tokenizer.json")
            model_config = tiny_random_config(tokenizer)
            model_config.save_pretrained(base)
        model = WhisperForConditionalGeneration(model_config)
        if not (base / "generation_config.json").is_file():
            ct2_config = _json(_bundled() / "config.json")
            generation_config(ct2_config, tokenizer, model_config).save_pretrained(base)
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(base)
        features = WhisperFeatureExtractor(feature_size=model_config.num_mel_bins)
    else:
        folder = speech_folder(config.model, base)
        if not any(folder.glob("*.safetensors")):
            raise ModelSourceError(f"{folder.name} has no .safetensors weights")
        try:
            model_config = WhisperConfig.from_pretrained(folder)
            if model_config.model_type != "whisper":
                raise ModelSourceError(f"{folder.name} is a {model_config.model_type} model")
            model = WhisperForConditionalGeneration.from_pretrained(folder, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            features = (
                WhisperFeatureExtractor.from_pretrained(folder)
                if (folder / "preprocessor_config.json").is_file()
                else WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
            )
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"cannot load the Whisper model in {folder}: {exc}") from None
    tokenizer = with_prefix(tokenizer, language)
    tokenizer.save_pretrained(base)
    features.save_pretrained(base)
    return model, tokenizer, features


def shape_of(model: ModelConfig) -> Any:
    """The WhisperConfig of a run's model, without its weights (the pre-flight's
    memory estimate); a CTranslate2-only model's comes from its model.bin header."""
    from transformers import WhisperConfig

    from lastedocation.models.whisper_convert import whisper_config

    if model.source == "scratch":
        return tiny_random_config(whisper_tokenizer(_bundled() / "tokenizer.json"))
    if model.source == "hub":
        folder = download_from_hub(model.hub_id or "", model.revision, model.cache_dir)
        return WhisperConfig.from_pretrained(folder)
    assert model.path is not None
    for folder in (model.path / HF, model.path):
        if (folder / "config.json").is_file():
            return WhisperConfig.from_pretrained(folder)
    try:
        ct2 = model.path / CT2 if (model.path / CT2).is_dir() else model.path
        return whisper_config(ct2)[0]
    except ConversionError as exc:
        raise ModelSourceError(exc.detail) from None


def memory_estimate(config: RunConfig, shape: Any) -> dict[str, Any]:
    """A rough upper estimate of training memory, and what the device has."""
    import psutil
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):  # shapes only: no memory, no time
        model = WhisperForConditionalGeneration(shape)
    params = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.model.encoder.parameters())
    frozen = config.speech.freeze_encoder
    trainable = 0 if config.training.method == "lora" else params - (encoder if frozen else 0)
    d, frames = shape.d_model, shape.max_source_positions
    tokens = config.speech.max_label_tokens
    # per clip: the decoder's activations and logits, the cross-attention's keys and
    # values over 1500 frames, and the encoder's activations when it trains
    per_clip = tokens * (34 * d * shape.decoder_layers + 2 * shape.vocab_size) * 4
    per_clip += frames * d * shape.decoder_layers * 4 * 4
    if not frozen:
        per_clip += frames * 34 * d * shape.encoder_layers * 4
    needed = int(trainable * 16 + (params - trainable) * 4 + config.training.batch_size * per_clip)
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


def tiny_random_config(tokenizer: Any) -> Any:
    from transformers import WhisperConfig

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return WhisperConfig(
        vocab_size=len(tokenizer) + TIMESTAMPS,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        begin_suppress_tokens=[220, eot],
        **TINY_RANDOM,
    )


def _json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
