"""Generation and the model cache, on real tiny models: one trained here on short
PerCQA answers (its greedy answers end with <|end|> after a few tokens), and
untrained ones with a long context that never stop on their own."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from lastedocation.errors import InvalidInput, NotFound
from lastedocation.inference.cache import LoadedModel, ModelCache
from lastedocation.inference.generate import (
    Chunk,
    GenerationSettings,
    chat,
    render_prompt,
    stream_chat,
)
from lastedocation.training.model_source import scratch_config, train_tokenizer
from tests.conftest import PERCQA
from tests.tiny import short_answers, train_tiny

QUESTION = [{"role": "user", "content": "زانو درد دارم، چه کنم؟"}]


def train_chat_model(root: Path) -> Path:
    """A tiny scratch llama trained on PerCQA rows whose answer is short (the thread's
    subject as the question), so its greedy answers are short and end with <|end|>."""
    data = short_answers(
        root / "short-answers.jsonl", rows=400, max_chars=40, subject_as_question=True
    )
    run_dir = train_tiny(
        root / "chat-run",
        data={"train": str(data), "split_key": "qid"},
        training={"max_steps": 100, "eval_every": 100, "save_every": 1000, "precision": "fp32"},
    )
    return run_dir / "model"


def untrained_model(folder: Path, context: int) -> Path:
    """A tiny llama with random weights reading `context` tokens (seeded: the same every
    time); greedy, it does not produce <|end|> for thousands of tokens."""
    with PERCQA.open(encoding="utf-8") as f:
        texts = [json.loads(line)["answer"] for _, line in zip(range(200), f, strict=False)]
    tokenizer = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(scratch_config("llama-tiny", tokenizer, context))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return train_chat_model(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_model(tmp_path_factory.mktemp("long") / "model", context=4096)


@pytest.fixture(scope="module")
def loaded(chat_folder: Path) -> LoadedModel:
    return ModelCache(max_models=1, min_free_memory_mb=0).get(chat_folder)


@pytest.fixture(scope="module")
def long_loaded(long_folder: Path) -> LoadedModel:
    return ModelCache(max_models=1, min_free_memory_mb=0).get(long_folder)


def stream(loaded: LoadedModel, **settings: Any) -> list[Chunk]:
    return list(
        stream_chat(loaded.model, loaded.tokenizer, QUESTION, GenerationSettings(**settings))
    )


def text_of(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


# -- streaming, EOS, length ---------------------------------------------------


def test_stream_is_plain_greedy_generation_cut_at_eos(loaded: LoadedModel) -> None:
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    reference = model.generate(**ids, max_new_tokens=100, do_sample=False)
    new = reference[0, ids["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|end|>")  # it stopped at EOS
    assert len(new) < 100

    chunks = stream(loaded, max_new_tokens=100)

    assert text_of(chunks) == tokenizer.decode(new, skip_special_tokens=True)
    assert text_of(chunks).strip(), "a non-empty answer"
    assert len([c for c in chunks if c.text]) > 1, "streamed token by token, not at once"
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.prompt_tokens == ids["input_ids"].shape[1]
    assert last.usage.completion_tokens == len(new)  # the end token counts, as at OpenAI
    assert "<|end|>" not in text_of(chunks)
    whole = chat(loaded.model, loaded.tokenizer, QUESTION, GenerationSettings(max_new_tokens=100))
    assert (whole.text, whole.finish_reason, whole.usage) == (text_of(chunks), "stop", last.usage)


def test_max_new_tokens_ends_with_length(loaded: LoadedModel) -> None:
    full = stream(loaded, max_new_tokens=100)
    chunks = stream(loaded, max_new_tokens=2)
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert text_of(full).startswith(text_of(chunks))
    assert len(text_of(chunks)) < len(text_of(full))


def test_answer_is_cut_at_the_context_window(tmp_path: Path) -> None:
    small = ModelCache(min_free_memory_mb=0).get(untrained_model(tmp_path / "m", context=128))
    chunks = stream(small, max_new_tokens=1000)
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "length"
    assert usage is not None and usage.total_tokens == 128

    too_long = [{"role": "user", "content": "سلام " * 100}]
    with pytest.raises(InvalidInput, match="reads at most 128"):
        stream_chat(small.model, small.tokenizer, too_long, GenerationSettings())


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(loaded: LoadedModel) -> None:
    first = stream(loaded, temperature=1.0, seed=7, max_new_tokens=40)
    again = stream(loaded, temperature=1.0, seed=7, max_new_tokens=40)
    greedy = stream(loaded, max_new_tokens=40)
    assert text_of(first) == text_of(again)
    assert text_of(first) != text_of(greedy)


# -- stop strings -------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled(loaded: LoadedModel) -> list[Chunk]:
    """A seeded sampled answer: more varied text than the greedy one."""
    chunks = stream(loaded, temperature=1.0, seed=3, max_new_tokens=60)
    assert len([c for c in chunks if c.text]) >= 6, text_of(chunks)
    return chunks


def test_stop_string_ends_the_answer_before_it(loaded: LoadedModel, sampled: list[Chunk]) -> None:
    full = text_of(sampled)
    middle = len(full) // 2
    stop = full[middle : middle + 2]
    chunks = stream(loaded, temperature=1.0, seed=3, max_new_tokens=60, stop=["§never§", stop])
    assert text_of(chunks) == full[: full.find(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and sampled[-1].usage is not None
    assert chunks[-1].usage.completion_tokens < sampled[-1].usage.completion_tokens


def test_stop_string_split_across_tokens(loaded: LoadedModel, sampled: list[Chunk]) -> None:
    """A stop string whose first character ends one token and whose second begins the
    next: the first character is held back, never sent, and the answer ends before it."""
    texts = [c.text for c in sampled if c.text]
    boundary, stop = 0, ""
    for before, after in itertools.pairwise(texts):
        boundary += len(before)
        candidate = before[-1] + after[0]
        if text_of(sampled).find(candidate) == boundary - 1:
            stop = candidate
            break
    assert stop, f"no token boundary to test in {texts}"

    chunks = stream(loaded, temperature=1.0, seed=3, max_new_tokens=60, stop=[stop])

    assert text_of(chunks) == text_of(sampled)[: boundary - 1]
    assert chunks[-1].finish_reason == "stop"


def test_text_held_back_for_a_stop_string_is_sent_when_it_does_not_follow(
    loaded: LoadedModel, sampled: list[Chunk]
) -> None:
    full = text_of(sampled)
    chunks = stream(loaded, temperature=1.0, seed=3, max_new_tokens=60, stop=[full[-1] + "§"])
    assert text_of(chunks) == full
    assert chunks[-1].finish_reason == sampled[-1].finish_reason


# -- settings and prompts -----------------------------------------------------


def test_bad_settings_are_all_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        GenerationSettings(
            temperature=-0.5, top_p=0, max_new_tokens=0, repetition_penalty=0, stop=[""] * 5
        )
    fields = [p["field"] for p in caught.value.extra["problems"]]
    assert fields == [
        "temperature",
        "top_p",
        "max_new_tokens",
        "repetition_penalty",
        "stop",
        "stop",
    ]
    assert "greedy" in caught.value.detail

    with pytest.raises(InvalidInput, match=r"between 1 and 64 \(the studio's limit\), got 65"):
        GenerationSettings(max_new_tokens=65, max_new_tokens_limit=64)
    with pytest.raises(InvalidInput, match=r"top_p: must be above 0 and at most 1, got 1\.5"):
        GenerationSettings(top_p=1.5)


def test_prompt_uses_the_chat_template(loaded: LoadedModel) -> None:
    prompt = render_prompt(loaded.tokenizer, [{"role": "system", "content": "کوتاه"}, *QUESTION])
    assert (
        prompt
        == f"<|system|>\nکوتاه<|end|>\n<|user|>\n{QUESTION[0]['content']}<|end|>\n<|assistant|>\n"
    )


def test_prompt_problems_are_clear(chat_folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chat_folder)
    with pytest.raises(InvalidInput, match="messages is empty"):
        render_prompt(tokenizer, [])
    tokenizer.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
    with pytest.raises(InvalidInput, match="refused the messages: roles must alternate"):
        render_prompt(tokenizer, QUESTION)
    tokenizer.chat_template = None
    with pytest.raises(InvalidInput, match="no chat template"):
        render_prompt(tokenizer, QUESTION)


# -- stopping early: closed streams, cancel, the model's lock ------------------


def count_steps(model: PreTrainedModel) -> Iterator[list[int]]:
    steps = [0]
    handle = model.register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    try:
        yield steps
    finally:
        handle.remove()


@pytest.fixture
def steps(long_loaded: LoadedModel) -> Iterator[list[int]]:
    """How many forward passes (one per generated token) the long model has made."""
    yield from count_steps(long_loaded.model)


def test_closing_the_stream_stops_generation(long_loaded: LoadedModel, steps: list[int]) -> None:
    full = GenerationSettings(max_new_tokens=4000)
    chunks = stream_chat(long_loaded.model, long_loaded.tokenizer, QUESTION, full)
    for _ in range(3):
        assert next(chunks).finish_reason is None
    chunks.close()  # as when a client goes away
    stopped_at = steps[0]
    assert stopped_at < 1000, "generation went on for nobody"
    assert steps[0] == stopped_at, "generation is over once close() returns"


def test_cancel_ends_the_stream(long_loaded: LoadedModel, steps: list[int]) -> None:
    cancel = threading.Event()
    settings = GenerationSettings(max_new_tokens=4000)
    chunks = stream_chat(
        long_loaded.model, long_loaded.tokenizer, QUESTION, settings, cancel=cancel
    )
    next(chunks)
    cancel.set()
    rest = list(chunks)
    assert all(c.finish_reason is None for c in rest), "a cancelled stream has no ending"
    assert steps[0] < 1000


def test_one_answer_at_a_time_per_model(long_loaded: LoadedModel) -> None:
    lock = threading.Lock()
    settings = GenerationSettings(max_new_tokens=3)
    model, tokenizer = long_loaded.model, long_loaded.tokenizer
    with lock:  # another answer is being generated
        cancel = threading.Event()
        waiting = stream_chat(model, tokenizer, QUESTION, settings, lock=lock, cancel=cancel)
        threading.Timer(0.3, cancel.set).start()
        assert list(waiting) == [], "it waited for the lock, then was cancelled"
    answer = chat(model, tokenizer, QUESTION, settings, lock=lock)
    assert answer.finish_reason == "length"
    assert lock.acquire(blocking=False), "the lock is free once the answer is done"


# -- the model cache ----------------------------------------------------------


@pytest.fixture
def folders(chat_folder: Path, tmp_path: Path) -> list[Path]:
    """Three model folders (copies of the chat model)."""
    return [Path(shutil.copytree(chat_folder, tmp_path / name)) for name in "abc"]


def test_cache_loads_once_for_inference(folders: list[Path]) -> None:
    cache = ModelCache(max_models=2, min_free_memory_mb=0)
    first = cache.get(folders[0])
    assert cache.get(folders[0]) is first
    assert not first.model.training
    assert first.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cache.loaded() == [folders[0].resolve()]


def test_cache_unloads_the_least_recently_used(folders: list[Path]) -> None:
    a, b, c = folders
    cache = ModelCache(max_models=2, min_free_memory_mb=0)
    first_a, first_b = cache.get(a), cache.get(b)
    assert cache.get(a) is first_a  # a is now the most recently used
    cache.get(c)
    assert cache.loaded() == [a.resolve(), c.resolve()]
    again_b = cache.get(b)  # loaded again: a goes
    assert again_b is not first_b
    assert cache.loaded() == [c.resolve(), b.resolve()]
    assert cache.unload(c) and not cache.unload(c)
    assert cache.loaded() == [b.resolve()]


def test_cache_unloads_when_memory_is_short(folders: list[Path]) -> None:
    # asking for more free memory than any machine has: every load unloads the others
    cache = ModelCache(max_models=3, min_free_memory_mb=1 << 40)
    for folder in folders:
        cache.get(folder)
        assert cache.loaded() == [folder.resolve()]


def test_cache_reloads_a_folder_written_again(folders: list[Path]) -> None:
    cache = ModelCache(min_free_memory_mb=0)
    first = cache.get(folders[0])
    later = (folders[0] / "config.json").stat().st_mtime + 10
    os.utime(folders[0] / "model.safetensors", (later, later))
    assert cache.get(folders[0]) is not first
    assert len(cache.loaded()) == 1


def test_cache_loads_a_model_once_for_concurrent_requests(folders: list[Path]) -> None:
    cache = ModelCache(min_free_memory_mb=0)
    start = threading.Barrier(3)
    got: list[LoadedModel] = []

    def request() -> None:
        start.wait()
        got.append(cache.get(folders[0]))

    threads = [threading.Thread(target=request) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 3 and got[0] is got[1] is got[2]


def test_cache_refuses_missing_and_pickled_models(tmp_path: Path, chat_folder: Path) -> None:
    cache = ModelCache(min_free_memory_mb=0)
    with pytest.raises(NotFound, match="does not exist"):
        cache.get(tmp_path / "gone")
    pickled = Path(shutil.copytree(chat_folder, tmp_path / "pickled"))
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(InvalidInput, match=r"no \.safetensors weights"):
        cache.get(pickled)
    assert cache.loaded() == []
