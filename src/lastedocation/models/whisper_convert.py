"""Whisper weights between CTranslate2 (what faster-whisper serves) and Transformers
(what fine-tuning trains).

    transformers_to_ctranslate2(hf_folder, ct2_folder)   # ctranslate2's own converter
    ctranslate2_to_transformers(ct2_folder, hf_folder)   # read model.bin, map the names back
    ensure_transformers(model_folder)                     # once, under a lock, atomically

Only CTranslate2 weights of the bundled Whisper base exist offline, so the way back is
ours: `model.bin` is read by `ct2_file` (bounded), and the name mapping inverts
ctranslate2's `WhisperLoader` (converters/transformers.py): CTranslate2 fuses q/k/v
(self-attention) and k/v (cross-attention) into one matrix with a zero bias for k,
which Whisper does not have, and stores equal variables once (aliases).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lastedocation.models.ct2_file import ConversionError, read_ctranslate2

CT2, HF = "ctranslate2", "transformers"
SIDE_FILES = ("tokenizer.json", "preprocessor_config.json")  # what faster-whisper reads
_TASK_TOKENS = {"<|transcribe|>", "<|translate|>"}


def _layers(variables: dict[str, torch.Tensor], side: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(found) + 1 if found else 0


def _state_dict(v: dict[str, torch.Tensor], enc: int, dec: int) -> dict[str, torch.Tensor]:
    """Transformers' names for CTranslate2's variables (ctranslate2's WhisperLoader, inverted)."""
    out: dict[str, torch.Tensor] = {}

    def linear(hf: str, ct2: str, rows: slice = slice(None), bias: bool = True) -> None:
        out[f"{hf}.weight"] = v[f"{ct2}/weight"][rows]
        if bias:
            out[f"{hf}.bias"] = v[f"{ct2}/bias"][rows]

    def norm(hf: str, ct2: str) -> None:
        out[f"{hf}.weight"], out[f"{hf}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]

    def attention(hf: str, ct2: str, fused: str, d: int) -> None:
        # fused is "qkv" (one matrix) or "q,kv" (cross-attention: q alone, k and v fused)
        first = f"{ct2}/linear_1" if fused == "q,kv" else f"{ct2}/linear_0"
        offset = 0 if fused == "q,kv" else d
        if fused == "q,kv":
            linear(f"{hf}.q_proj", f"{ct2}/linear_0")
        else:
            linear(f"{hf}.q_proj", first, slice(0, d))
        linear(f"{hf}.k_proj", first, slice(offset, offset + d), bias=False)
        linear(f"{hf}.v_proj", first, slice(offset + d, offset + 2 * d))
        linear(f"{hf}.out_proj", f"{ct2}/linear_{2 if fused == 'q,kv' else 1}")

    d = v["decoder/embeddings/weight"].shape[1]
    for side, count in (("encoder", enc), ("decoder", dec)):
        for i in range(count):
            hf, ct2 = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            attention(f"{hf}.self_attn", f"{ct2}/self_attention", "qkv", d)
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                attention(f"{hf}.encoder_attn", f"{ct2}/attention", "q,kv", d)
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        out[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return out


def _fused_k_bias_is_zero(v: dict[str, torch.Tensor], enc: int, dec: int, d: int) -> bool:
    """Whisper's k projections have no bias; CTranslate2 stores zeros in their place."""
    biases = [v[f"encoder/layer_{i}/self_attention/linear_0/bias"][d : 2 * d] for i in range(enc)]
    for i in range(dec):
        biases.append(v[f"decoder/layer_{i}/self_attention/linear_0/bias"][d : 2 * d])
        biases.append(v[f"decoder/layer_{i}/attention/linear_1/bias"][:d])
    return all(not bool(b.any()) for b in biases)


def ctranslate2_to_transformers(
    ct2: Path, out: Path, *, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a Transformers Whisper folder (safetensors, config, generation config,
    tokenizer, feature extractor) from a CTranslate2 Whisper folder."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no terminal
    spec, v = read_ctranslate2(ct2 / "model.bin")
    if any(n.endswith("_scale") for n in v):
        raise ConversionError("int8-quantized CTranslate2 weights cannot be converted back")
    config, tokenizer, ct2_config = whisper_config(ct2, v, spec)
    enc, dec, d = config.encoder_layers, config.decoder_layers, config.d_model
    try:
        if not _fused_k_bias_is_zero(v, enc, dec, d):
            raise ConversionError(f"{ct2.name}: k projections with a bias are not Whisper's")
        weights = _state_dict(v, enc, dec)
    except KeyError as exc:
        raise ConversionError(f"{ct2.name}/model.bin lacks the variable {exc}") from None
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    projection = v.get("decoder/projection/weight")
    if projection is not None and not torch.equal(projection, weights[_EMBED]):
        raise ConversionError("the output projection is not tied to the embeddings")
    # own storage for each: CTranslate2 stores equal variables once (aliases) and fuses q, k, v
    weights = {name: t.to(dtype, copy=True).contiguous() for name, t in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    if [m for m in missing if m != "proj_out.weight"] or unexpected:
        raise ConversionError(f"weights do not fit Whisper: {missing[:3]} {unexpected[:3]}")
    model.generation_config = generation_config(ct2_config, tokenizer, config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)  # type: ignore[no-untyped-call]
    features.save_pretrained(out)
    return out


_EMBED = "model.decoder.embed_tokens.weight"


def whisper_config(
    ct2: Path, v: dict[str, torch.Tensor] | None = None, spec: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The WhisperConfig of a CTranslate2 Whisper folder (shapes from model.bin, token
    ids from tokenizer.json, suppressed tokens from config.json), its tokenizer and its
    config.json. Without `v`, model.bin's header is read, not its weights."""
    from transformers import WhisperConfig

    if v is None:
        spec, v = read_ctranslate2(ct2 / "model.bin", meta=True)
    if spec != "WhisperSpec":
        raise ConversionError(f"{ct2.name}/model.bin holds a {spec or 'non-Whisper'} model")
    ct2_config = _read_json(ct2 / "config.json")
    tokenizer = whisper_tokenizer(ct2 / "tokenizer.json")
    tokens = _special_ids(tokenizer)
    try:
        vocab, d = v["decoder/embeddings/weight"].shape
        config = WhisperConfig(
            vocab_size=vocab,
            num_mel_bins=v["encoder/conv1/weight"].shape[1],
            d_model=d,
            encoder_layers=_layers(v, "encoder"),
            decoder_layers=_layers(v, "decoder"),
            encoder_attention_heads=int(v["encoder/num_heads"]),
            decoder_attention_heads=int(v["decoder/num_heads"]),
            encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
            max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
            max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
            pad_token_id=tokens["eot"],
            bos_token_id=tokens["eot"],
            eos_token_id=tokens["eot"],
            decoder_start_token_id=tokens["sot"],
            suppress_tokens=ct2_config.get("suppress_ids"),
            begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
            tie_word_embeddings=True,
        )
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"{ct2.name}/model.bin lacks a Whisper variable: {exc}") from None
    return config, tokenizer, ct2_config


def whisper_tokenizer(path: Path) -> Any:
    """The Whisper tokenizer from a `tokenizer.json` (CTranslate2 folders carry one)."""
    from transformers import WhisperTokenizer

    try:
        return WhisperTokenizer(tokenizer_file=str(path))
    except Exception as exc:  # tokenizers raises its own exception types
        raise ConversionError(f"{path.name} is not a Whisper tokenizer: {exc}") from None


def _special_ids(tokenizer: Any) -> dict[str, int]:
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>",
             "prev": "<|startofprev|>", "no_timestamps": "<|notimestamps|>"}  # fmt: skip
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}
    if any(i is None or (i == tokenizer.unk_token_id and k != "eot") for k, i in ids.items()):
        raise ConversionError("tokenizer.json lacks Whisper's special tokens")
    return ids


def generation_config(ct2_config: dict[str, Any], tokenizer: Any, config: Any) -> Any:
    """Whisper's generation settings (languages, tasks, suppressed tokens, alignment
    heads) from a CTranslate2 config.json and the tokenizer, as openai/whisper-* has them."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    lang_ids = ct2_config.get("lang_ids") or []
    languages = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
    tasks = {t.strip("<|>"): tokenizer.convert_tokens_to_ids(t) for t in sorted(_TASK_TOKENS)}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        alignment_heads=ct2_config.get("alignment_heads"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        suppress_tokens=ct2_config.get("suppress_ids"),
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"],
        is_multilingual=bool(languages),
        lang_to_id=languages,
        task_to_id=tasks,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        return_timestamps=False,
    )


def transformers_to_ctranslate2(hf: Path, out: Path, *, quantization: str = "float16") -> Path:
    """A faster-whisper folder from a Transformers Whisper folder, with ctranslate2's own
    converter; the tokenizer and feature-extractor files come along."""
    from ctranslate2.converters import TransformersConverter

    copy = [name for name in SIDE_FILES if (hf / name).is_file()]
    if "tokenizer.json" not in copy:
        raise ConversionError(f"{hf.name} has no tokenizer.json (faster-whisper needs it)")
    with tempfile.TemporaryDirectory(prefix=".ct2-", dir=out.parent) as staging:
        target = Path(staging) / "model"
        TransformersConverter(str(hf), copy_files=copy).convert(
            str(target), quantization=quantization
        )
        os.replace(target, out)
    return out


def ensure_transformers(model_folder: Path, fallback: Path | None = None) -> Path:
    """The Transformers form of a registry speech model, converted from its CTranslate2
    form the first time it is needed. Where the model folder is not writable, the copy
    goes to `fallback`."""
    target = model_folder / HF
    if (target / "config.json").is_file():
        return target
    source = model_folder / CT2
    if not (source / "model.bin").is_file():
        raise ConversionError(f"{model_folder.name} has neither {HF}/ nor {CT2}/model.bin")
    if not os.access(model_folder, os.W_OK):
        if fallback is None:
            raise ConversionError(f"{model_folder.name} is read-only")
        target = fallback
    return convert_once(source, target)


def convert_once(source: Path, target: Path) -> Path:
    """`ctranslate2_to_transformers(source, target)`, once: under a lock beside `target`
    (two runs starting together convert once), through a staging folder renamed into
    place (a crash leaves nothing half-made)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            ctranslate2_to_transformers(source, staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file() or path.stat().st_size > 8 * 2**20:
        raise ConversionError(f"{path.parent.name}/{path.name} is missing or too large")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConversionError(f"{path.parent.name}/{path.name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path.parent.name}/{path.name} is not a JSON object")
    return data
