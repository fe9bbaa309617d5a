"""From a trained model to one people can use: merge LoRA, export a clean folder
with a model card (and an archive), and a smoke test of the result.

    merge_lora(run_dir / "adapter", base_folder, merged)
    export_model(merged, out, card_info={"name": "my-model", ...}, archive=out_zip)
    smoke_test(out, expected_chat_template=CHAT_TEMPLATE)

Every folder is written beside its destination and renamed into place when
complete, so a failed export leaves nothing half-written. Weights are written as
safetensors only (Transformers 5 writes nothing else) and checked again after.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from lastedocation.errors import Conflict, InvalidInput
from lastedocation.models.archive import make_archive
from lastedocation.models.card import render_model_card
from lastedocation.models.weights import (
    INDEX_FILE,
    PICKLED_SUFFIXES,
    ModelSummary,
    check_model_folder,
    read_safetensors_header,
)

CONFIG_FILES = ("config.json", "generation_config.json", INDEX_FILE)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
SMOKE_PROMPT = "سلام! لطفاً خودت را در یک جمله معرفی کن."


class ExportResult(TypedDict):
    folder: str
    archive: str | None
    summary: ModelSummary


def _build(out: Path, write: Callable[[Path], None]) -> None:
    """Run `write(tmp)` on a fresh folder beside `out`, then rename it to `out`."""
    if out.exists():
        raise Conflict(f"{out} already exists; export into a new folder", rule="destination")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_adapter(folder: Path) -> None:
    if not (folder / "adapter_config.json").is_file():
        raise InvalidInput(
            f"{folder} has no adapter_config.json; pass the LoRA adapter folder of a run "
            "(RUN_DIR/adapter)",
            rule="adapter folder",
        )
    weights = folder / "adapter_model.safetensors"
    for path in folder.iterdir():
        if path.suffix.lower() in PICKLED_SUFFIXES:
            raise InvalidInput(
                f"{path.name} is refused: pickle-based adapter weights can run code when loaded",
                file=path.name,
                rule="safetensors only",
            )
    if not weights.is_file():
        raise InvalidInput(f"{folder} has no adapter_model.safetensors", rule="adapter folder")
    read_safetensors_header(weights)


def merge_lora(adapter_folder: Path, base_folder: Path, out: Path) -> ModelSummary:
    """Merge a LoRA adapter into its base model and save a full model folder at `out`.

    The tokenizer (with its chat template) comes from the adapter folder when the
    run saved one there, else from the base; generation ids come from the tokenizer.
    """
    from peft import PeftModel

    from lastedocation.training.model_source import load_pretrained
    from lastedocation.training.runtime import set_generation_ids

    _check_adapter(adapter_folder)
    check_model_folder(base_folder)
    model, tokenizer = load_pretrained(base_folder)  # safetensors only, as in training
    if (adapter_folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter_folder)
    merged = PeftModel.from_pretrained(model, adapter_folder).merge_and_unload()
    merged.eval()
    set_generation_ids(merged, tokenizer)

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _build(out, write)
    return check_model_folder(out)


def _generation_config(source: Path, tmp: Path) -> None:
    """generation_config.json with the EOS id set (the smoke test insists on it)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    try:
        if (source / "generation_config.json").is_file():
            config = GenerationConfig.from_pretrained(source)
        else:
            config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"cannot read the model's configuration or tokenizer in {source.name}: {exc}",
            rule="model folder",
        ) from None
    if config.eos_token_id is None or config.pad_token_id is None:
        if config.eos_token_id is None:
            config.eos_token_id = tokenizer.eos_token_id
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(tmp)


def export_model(
    source_folder: Path,
    out_folder: Path,
    *,
    card_info: Mapping[str, Any],
    archive: Path | None = None,
) -> ExportResult:
    """A clean model folder at `out_folder`: weights, config, tokenizer, generation
    config and a README.md model card; and, when `archive` is given, an archive of it."""
    summary = check_model_folder(source_folder)
    keep = [*summary["weight_files"], *CONFIG_FILES, *TOKENIZER_FILES]

    def write(tmp: Path) -> None:
        for name in keep:
            if (source_folder / name).is_file():
                shutil.copyfile(source_folder / name, tmp / name)  # follows Hub-cache symlinks
        _generation_config(source_folder, tmp)
        exported = check_model_folder(tmp)
        text = render_model_card(card_info, exported)
        (tmp / "README.md").write_text(text, encoding="utf-8")

    _build(out_folder, write)
    if archive is not None:
        make_archive(out_folder, archive)
    return {
        "folder": str(out_folder),
        "archive": str(archive) if archive is not None else None,
        "summary": check_model_folder(out_folder),
    }


def _failed(folder: Path, problem: str) -> InvalidInput:
    return InvalidInput(f"smoke test of {folder.name} failed: {problem}", rule="smoke test")


def smoke_test(
    folder: Path,
    expected_chat_template: str | None,
    *,
    prompt: str = SMOKE_PROMPT,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Load `folder` fresh with plain Transformers, chat once greedily, and check that
    the saved chat template is the expected one and that generation stops at EOS.

    A model that does not finish an answer within `max_new_tokens` (undertrained) is
    reported with a warning, not refused; an EOS id that is not the template's
    end-of-turn token, or generation running past EOS, is refused.
    Returns a report; raises InvalidInput naming the problem when a check fails.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    model.eval()
    if tokenizer.chat_template != expected_chat_template:
        raise _failed(
            folder,
            "the saved chat template differs from the one used in training; "
            "save the training tokenizer with the model",
        )
    eos = model.generation_config.eos_token_id
    if eos is None:
        raise _failed(
            folder,
            "generation_config.json has no eos_token_id, so generation would never stop; "
            "set it to the chat template's end-of-turn token",
        )
    eos_ids = [eos] if isinstance(eos, int) else list(eos)
    inputs: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    stops = [i for i, token in enumerate(new) if token in eos_ids]
    if stops and stops[0] != len(new) - 1:
        raise _failed(folder, "generation went on after the end-of-turn token")
    turn_end = _turn_end_token(tokenizer)
    if turn_end is not None and turn_end not in eos_ids:
        raise _failed(
            folder,
            f"eos_token_id {eos_ids} is not the token the chat template ends a turn with "
            f"({turn_end}): generation would not stop at the end of an answer",
        )
    report = {
        "prompt": prompt,
        "answer": tokenizer.decode(new, skip_special_tokens=True),
        "new_tokens": len(new),
        "stopped_at_eos": bool(stops),
        "eos_token_id": eos_ids,
        "chat_template_matches": True,
    }
    if not stops:  # configured right, but this model did not finish an answer in time
        report["warning"] = (
            f"no end-of-turn token in {max_new_tokens} generated tokens: the model may be "
            "undertrained (generation is configured to stop there)"
        )
    return report


def _turn_end_token(tokenizer: Any) -> int | None:
    """The token the chat template writes right after an assistant's answer."""
    marker = "\u2063"  # a character no answer contains, to find where the answer ends
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": marker}],
        tokenize=False,
    )
    tail = str(ids).split(marker, 1)[-1]
    following = tokenizer(tail, add_special_tokens=False)["input_ids"]
    return int(following[0]) if following else None
