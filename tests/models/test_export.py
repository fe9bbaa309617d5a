"""Export: a trained tiny model (full and LoRA) goes out as a clean folder and an
archive, comes back through `extract_archive`, loads with plain Transformers and
gives the same logits; the smoke test and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lastedocation.errors import Conflict, InvalidInput
from lastedocation.models.archive import extract_archive
from lastedocation.models.card import render_model_card
from lastedocation.models.export import export_model, merge_lora, smoke_test
from lastedocation.models.weights import check_model_folder
from lastedocation.training.config import ModelConfig
from lastedocation.training.model_source import CHAT_TEMPLATE, build_scratch
from lastedocation.training.runtime import set_generation_ids
from tests.models.conftest import logits

LIMITS = {"max_total_bytes": 50 * 2**20, "max_files": 100}
CARD = {
    "name": "persian-tiny",
    "base_model": "scratch:llama-tiny",
    "license": "apache-2.0",
    "datasets": ["PerCQA/PerCQA-Dataset"],
    "training_data": "PerCQA rows with short answers.",
    "config": {"training": {"lr": 0.005, "max_steps": 20, "method": "full"}, "lora": {"r": 8}},
    "metrics": {"final_eval": {"val_loss": 2.5, "perplexity": 12.18}, "steps": 20},
    "evaluation": [
        {"model": "base", "perplexity": 40.0, "chrf": 5.0},
        {"model": "fine-tuned | v1", "perplexity": 12.5, "chrf": 9.25},
    ],
}


def _front_matter(readme: Path) -> dict[str, object]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    loaded = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(loaded, dict)
    return loaded


def test_full_model_exported_as_archive_reloads_with_identical_logits(
    full_run: Path, tmp_path: Path
) -> None:
    source = full_run / "model"
    before = logits(source)
    out, archive = tmp_path / "export" / "persian-tiny", tmp_path / "persian-tiny.tar.gz"
    result = export_model(source, out, card_info=CARD, archive=archive)

    assert result["archive"] == str(archive) and archive.is_file()
    names = sorted(p.name for p in out.iterdir())
    assert "README.md" in names and "model.safetensors" in names
    assert "generation_config.json" in names and "tokenizer.json" in names
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no partial folder

    folder = extract_archive(archive, tmp_path / "unpacked", **LIMITS)
    assert folder == tmp_path / "unpacked" / "persian-tiny"
    assert sorted(p.name for p in folder.iterdir()) == names
    assert torch.equal(logits(folder), before)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == CHAT_TEMPLATE

    report = smoke_test(folder, CHAT_TEMPLATE)
    assert report["stopped_at_eos"] and report["eos_token_id"] == [tokenizer.eos_token_id]
    assert report["new_tokens"] >= 1


def test_lora_merged_exported_as_zip_gives_the_adapter_models_logits(
    full_run: Path, lora_run: Path, tmp_path: Path
) -> None:
    base, adapter = full_run / "model", lora_run / "adapter"
    with torch.no_grad():
        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
        before = logits(trained)
    assert not torch.allclose(before, logits(base), atol=1e-4)  # the adapter changed something

    merged = merge_lora(adapter, base, tmp_path / "merged")
    assert merged["parameters"] == check_model_folder(base)["parameters"]
    assert merged["has_chat_template"]
    assert torch.allclose(logits(tmp_path / "merged"), before, atol=1e-5)

    export_model(
        tmp_path / "merged", tmp_path / "out" / "lora", card_info=CARD, archive=tmp_path / "l.zip"
    )
    folder = extract_archive(tmp_path / "l.zip", tmp_path / "unpacked", **LIMITS)
    assert torch.equal(logits(folder), logits(tmp_path / "merged"))
    assert smoke_test(folder, CHAT_TEMPLATE)["stopped_at_eos"]


def test_export_and_merge_refuse_pickles_and_leave_nothing(
    full_run: Path, lora_run: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(full_run / "model", source)
    (source / "training_args.bin").write_bytes(b"\x80\x04\x95")
    with pytest.raises(InvalidInput, match=r"training_args\.bin is refused: pickle"):
        export_model(source, tmp_path / "out" / "m", card_info=CARD)
    assert not (tmp_path / "out").exists()  # refused before anything was written

    (source / "training_args.bin").unlink()
    (source / "generation_config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read the model's configuration"):
        export_model(source, tmp_path / "out" / "m", card_info=CARD)
    assert list((tmp_path / "out").iterdir()) == []  # the partial folder is gone

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "adapter", adapter)
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(InvalidInput, match=r"adapter_model\.bin is refused"):
        merge_lora(adapter, full_run / "model", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()

    (tmp_path / "taken").mkdir()
    with pytest.raises(Conflict, match="already exists"):
        export_model(full_run / "model", tmp_path / "taken", card_info=CARD)


def test_smoke_test_refuses_a_different_chat_template(full_run: Path) -> None:
    with pytest.raises(InvalidInput, match="chat template differs"):
        smoke_test(full_run / "model", CHAT_TEMPLATE.replace("<|end|>", "</s>"))


def test_smoke_test_requires_an_eos_token_id(full_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-eos"
    shutil.copytree(full_run / "model", folder)
    for name in ("generation_config.json", "config.json"):
        config = json.loads((folder / name).read_text())
        config.pop("eos_token_id")
        (folder / name).write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match="no eos_token_id"):
        smoke_test(folder, CHAT_TEMPLATE)
    # export repairs it from the tokenizer, and the export then passes
    export_model(folder, tmp_path / "fixed", card_info=CARD)
    assert smoke_test(tmp_path / "fixed", CHAT_TEMPLATE)["stopped_at_eos"]


def test_smoke_test_warns_when_the_model_never_ends_its_turn(
    short_qa: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    texts = [json.loads(line)["answer"] for line in short_qa.read_text().splitlines()]
    model, tokenizer = build_scratch(ModelConfig(vocab_size=600), texts, seq_len=64)
    set_generation_ids(model, tokenizer)  # an untrained model: it rambles
    model.save_pretrained(tmp_path / "untrained")
    tokenizer.save_pretrained(tmp_path / "untrained")
    report = smoke_test(tmp_path / "untrained", CHAT_TEMPLATE, max_new_tokens=16)
    assert not report["stopped_at_eos"] and report["new_tokens"] == 16
    assert "undertrained" in report["warning"]
    # an EOS that is not the template's end of turn: generation would never stop right
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|user|>")
    model.save_pretrained(tmp_path / "wrong-eos")
    tokenizer.save_pretrained(tmp_path / "wrong-eos")
    with pytest.raises(InvalidInput, match="not the token the chat template ends a turn with"):
        smoke_test(tmp_path / "wrong-eos", CHAT_TEMPLATE, max_new_tokens=4)


def test_model_card_has_hub_metadata_and_every_section(full_run: Path, tmp_path: Path) -> None:
    export_model(full_run / "model", tmp_path / "m", card_info={**CARD, "repo_id": "me/tiny"})
    readme = tmp_path / "m" / "README.md"
    meta = _front_matter(readme)
    assert meta["language"] == ["fa"] and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["PerCQA/PerCQA-Dataset"]
    assert "base_model" not in meta  # "scratch:llama-tiny" is not a Hub id
    assert "persian" in meta["tags"]  # type: ignore[operator]
    text = readme.read_text(encoding="utf-8")
    summary = check_model_folder(tmp_path / "m")
    assert f"{summary['parameters']:,} parameters" in text
    for heading in (
        "## Base model",
        "## Training data",
        "## Training configuration",
        "## Evaluation results",
        "## How to use",
        "## Limitations",
    ):
        assert heading in text
    assert "| lr | 0.005 |" in text and "lora.r" not in text  # a full fine-tune
    assert "| final_eval.perplexity | 12.18 |" in text
    assert "| model | perplexity | chrf |" in text and "| fine-tuned \\| v1 | 12.5 | 9.25 |" in text
    assert 'from_pretrained("me/tiny")' in text


def test_model_card_minimal_and_hub_base() -> None:
    text = render_model_card(
        {"name": "x", "base_model": "HooshvareLab/gpt2-fa", "config": {"lora": {"r": 4}}}
    )
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "HooshvareLab/gpt2-fa" and "license" not in meta
    assert "datasets" not in meta and "## Evaluation results" not in text
    assert "| lora.r | 4 |" in text
    assert "https://huggingface.co/HooshvareLab/gpt2-fa" in text


def test_model_card_shows_an_evaluation_and_a_few_example_answers() -> None:
    long_answer = "پاسخ " * 100
    evaluation = {
        "perplexity": 12.3456,
        "exact_match": 0.25,
        "examples": [
            {"prompt": f"پرسش {i}", "reference": "بله", "prediction": long_answer} for i in range(5)
        ],
    }
    text = render_model_card({"name": "x", "dataset_id": 7, "evaluation": evaluation, "tags": None})
    assert "| perplexity | 12.35 |" in text and "| exact_match | 0.25 |" in text
    assert "| prompt | reference | prediction |" in text
    assert "| پرسش 2 |" in text and "| پرسش 3 |" not in text  # three examples at most
    assert long_answer not in text and "…" in text
    assert "The studio's dataset 7." in text
