"""Label masks, packing and truncation: the data path training uses."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lastedocation.training.data import (
    IGNORE,
    BatchPlan,
    collate_packed,
    encode_record,
    pack,
)
from lastedocation.training.model_source import scratch_config, train_tokenizer

TEXTS = ["سلام، حال شما چطور است؟", "خوبم، ممنون.", "کتاب‌ها روی میز هستند.", "hello world"] * 20


def test_loss_only_on_answer_tokens() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    record = {
        "row": 1,
        "messages": [
            {"role": "system", "content": "مودب باش"},
            {"role": "user", "content": "سلام"},
            {"role": "assistant", "content": "خوبم، ممنون."},
            {"role": "user", "content": "کتاب کجاست؟"},
            {"role": "assistant", "content": "روی میز."},
        ],
    }
    example, truncated = encode_record(record, tokenizer, 512)
    assert not truncated and len(example.ids) == len(example.labels)
    learned = tokenizer.decode(
        [i for i, label in zip(example.ids, example.labels, strict=True) if label != IGNORE]
    )
    assert learned == "خوبم، ممنون.<|end|>\nروی میز.<|end|>\n"
    whole = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    assert tokenizer.decode(example.ids) == whole


def test_truncation_is_counted_and_text_is_learned_whole() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    example, truncated = encode_record({"row": 1, "text": "کتاب‌ها " * 50}, tokenizer, 16)
    assert truncated and len(example.ids) == 16
    assert example.labels[0] == IGNORE and all(label != IGNORE for label in example.labels[1:])


def test_packing_keeps_examples_apart() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    records = [
        {
            "row": i,
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
        }
        for i, (q, a) in enumerate([("سلام", "خوبم"), ("کتاب؟", "روی میز"), ("hello", "world")])
    ]
    examples = [encode_record(r, tokenizer, 64)[0] for r in records]
    bins = pack(examples, 64, seed=0)
    assert sorted(i for b in bins for i in b) == [0, 1, 2] and len(bins) == 1
    batch = collate_packed(examples, bins, tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(
        scratch_config("llama-tiny", tokenizer, 64), attn_implementation="sdpa"
    ).eval()
    packed = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits[0]
    at = 0
    for index in bins[0]:
        ids = torch.tensor([examples[index].ids])
        alone = model(input_ids=ids).logits[0]
        assert torch.allclose(packed[at : at + ids.shape[1]], alone, atol=1e-5)
        at += ids.shape[1]
    assert batch.real_tokens == at and batch.samples == 3


def test_batch_plan_is_the_same_in_every_process() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    examples = [encode_record({"row": i, "text": t}, tokenizer, 32)[0] for i, t in enumerate(TEXTS)]
    plans = [
        BatchPlan(examples, seq_len=32, batch_size=4, packing=p, pad_id=0, seed=5)
        for p in (True, True, False)
    ]
    for k in (0, 3, plans[0].per_epoch + 1):
        assert torch.equal(plans[0].batch(k).input_ids, plans[1].batch(k).input_ids)
    first, second = plans[2].batch(0), plans[2].batch(plans[2].per_epoch)
    assert not torch.equal(first.input_ids, second.input_ids)  # a new order each epoch
    padded = plans[2].batch(0)
    assert padded.real_tokens == int(padded.attention_mask.sum())


def test_long_question_is_cut_in_the_middle_and_the_answer_kept() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    record = {
        "row": 1,
        "messages": [
            {"role": "user", "content": "سلام " * 200 + "پایان؟"},
            {"role": "assistant", "content": "خوبم، ممنون."},
        ],
    }
    example, truncated = encode_record(record, tokenizer, 64)
    assert truncated and len(example.ids) == 64
    text = tokenizer.decode(example.ids)
    assert text.startswith("<|user|>\nسلام") and "پایان؟<|end|>\n<|assistant|>\n" in text
    learned = [i for i, label in zip(example.ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "خوبم، ممنون.<|end|>\n"
