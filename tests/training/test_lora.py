"""LoRA on a local base model: the checkpoints hold only the adapter, and the
merged model (plain Transformers) gives the adapter model's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lastedocation.training.model_source import build_scratch
from lastedocation.training.recipe import train_run
from tests.conftest import PERCQA
from tests.training.conftest import RunFactory


def _base_model(folder: Path) -> Path:
    texts = (
        row for i, row in enumerate(PERCQA.read_text(encoding="utf-8").splitlines()) if i < 300
    )
    from lastedocation.training.config import ModelConfig

    torch.manual_seed(0)
    model, tokenizer = build_scratch(
        ModelConfig(vocab_size=600), (t[:400] for t in texts), seq_len=128
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_lora_saves_adapter_only_and_merges_exactly(make_run: RunFactory, tmp_path: Path) -> None:
    base = _base_model(tmp_path / "base-model")
    run_dir = make_run(
        "lora",
        model={"source": "local", "path": str(base)},
        training={"method": "lora", "max_steps": 10, "lr": 0.01, "save_every": 5},
        lora={"r": 4, "alpha": 8},
    )
    outcome = train_run(run_dir)
    assert outcome.state == "completed", list((run_dir / "events.jsonl").read_text().splitlines())[
        -1
    ]

    for folder in (run_dir / "checkpoints").iterdir():
        names = {p.name for p in folder.iterdir()}
        assert "adapter.safetensors" in names and "model.safetensors" not in names
        adapter = load_file(folder / "adapter.safetensors")
        assert adapter and all("lora_" in key for key in adapter)
    full_size = (base / "model.safetensors").stat().st_size
    assert (run_dir / "adapter" / "adapter_model.safetensors").stat().st_size < full_size / 4

    ids = torch.tensor([[5, 17, 33, 42, 101, 7, 250, 3]])
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        before = base_model(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base_model, run_dir / "adapter").eval()
        with_adapter = adapted(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
        after_merge = merged(input_ids=ids).logits
    assert not torch.allclose(before, with_adapter, atol=1e-4)  # the adapter learned something
    assert torch.allclose(with_adapter, after_merge, atol=1e-5)
