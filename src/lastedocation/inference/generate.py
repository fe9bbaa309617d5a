"""Chat generation: the prompt from the model's chat template, the answer streamed
as text deltas token by token, stopping at EOS, at a stop string or at the limit.

    for chunk in stream_chat(model, tokenizer, messages, GenerationSettings()):
        print(chunk.text, end="")

`model.generate` runs in a thread of its own and hands each new token through a
queue; the reader turns tokens into text. When the reader stops (a client went
away, the generator was closed) or sets `cancel`, a stopping criterion ends
`generate` at its next step, so no device time goes to text nobody reads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jinja2 import TemplateError
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from lastedocation.errors import InvalidInput

FinishReason = Literal["stop", "length"]
Messages = Sequence[dict[str, str]]
DEFAULT_MAX_NEW_TOKENS_LIMIT = 4096
MAX_STOP_STRINGS = 4


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Chunk:
    """New text; the last chunk of a stream also says why it ended and what it cost."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass
class GenerationSettings:
    """How to sample an answer; every problem is reported at once, naming the field."""

    temperature: float = 0.0  # 0: greedy (the same answer every time)
    top_p: float = 1.0
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0  # 1: off; above 1 discourages repeating tokens
    stop: list[str] = field(default_factory=list)
    seed: int | None = None  # reproducible sampling, while no other model samples at once
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not self.temperature >= 0:
            problems.append(("temperature", f"must be 0 (greedy) or more, got {self.temperature}"))
        if not 0 < self.top_p <= 1:
            problems.append(("top_p", f"must be above 0 and at most 1, got {self.top_p}"))
        if not 1 <= self.max_new_tokens <= self.max_new_tokens_limit:
            problems.append(
                (
                    "max_new_tokens",
                    f"must be between 1 and {self.max_new_tokens_limit} (the studio's limit), "
                    f"got {self.max_new_tokens}",
                )
            )
        if not self.repetition_penalty > 0:
            problems.append(
                ("repetition_penalty", f"must be above 0 (1 = off), got {self.repetition_penalty}")
            )
        if len(self.stop) > MAX_STOP_STRINGS:
            problems.append(
                ("stop", f"takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
            )
        if any(not s for s in self.stop):
            problems.append(("stop", "stop strings must not be empty"))
        if problems:
            lines = "; ".join(f"{name}: {message}" for name, message in problems)
            raise InvalidInput(
                f"bad generation settings: {lines}",
                problems=[{"field": name, "message": message} for name, message in problems],
            )


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The conversation as the model was trained to read it, ending where the
    assistant's answer begins."""
    if not messages:
        raise InvalidInput("messages is empty: send at least one message", field="messages")
    if tokenizer.chat_template is None:
        raise InvalidInput(
            "this model has no chat template, so it cannot chat: use a chat model, or save "
            "one with its tokenizer (`tokenizer.chat_template = ...; save_pretrained(folder)`)"
        )
    try:
        prompt = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
    except TemplateError as exc:  # e.g. a template that wants user/assistant turns to alternate
        raise InvalidInput(f"the model's chat template refused the messages: {exc}") from None
    return str(prompt)


def stream_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    settings: GenerationSettings,
    *,
    lock: threading.Lock | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Chunk]:
    """The answer to `messages`, as it is generated.

    Problems with the input (no chat template, a prompt longer than the model reads)
    are raised here, before any text. `lock` is held while generating (one answer
    at a time per model); setting `cancel` ends the stream at the next token.
    """
    prompt = render_prompt(tokenizer, messages)
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    prompt_tokens = int(encoded["input_ids"].shape[1])
    max_new = settings.max_new_tokens
    context = _context_size(model)
    if context is not None:
        if prompt_tokens >= context:
            raise InvalidInput(
                f"the conversation is {prompt_tokens} tokens, and this model reads at most "
                f"{context}: send fewer or shorter messages"
            )
        max_new = min(max_new, context - prompt_tokens)
    inputs = {key: value.to(model.device) for key, value in encoded.items()}
    return _stream(
        model,
        tokenizer,
        inputs,
        settings,
        max_new,
        prompt_tokens,
        lock,
        cancel or threading.Event(),
    )


def chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    settings: GenerationSettings,
    *,
    lock: threading.Lock | None = None,
) -> Completion:
    """The whole answer at once."""
    parts: list[str] = []
    for chunk in stream_chat(model, tokenizer, messages, settings, lock=lock):
        parts.append(chunk.text)
        if chunk.finish_reason is not None and chunk.usage is not None:
            return Completion("".join(parts), chunk.finish_reason, chunk.usage)
    raise AssertionError("a stream that was not cancelled ends with a finish reason")


def _stream(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: dict[str, torch.Tensor],
    settings: GenerationSettings,
    max_new: int,
    prompt_tokens: int,
    lock: threading.Lock | None,
    cancel: threading.Event,
) -> Iterator[Chunk]:
    tokens: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    failure: list[BaseException] = []
    kwargs = _generate_kwargs(model, tokenizer, settings, max_new)
    worker = threading.Thread(
        target=_generate,
        args=(model, inputs, kwargs, tokens, cancel, lock, settings.seed, failure),
        name="generate",
        daemon=True,
    )
    eos = set(kwargs["eos_token_id"])
    text = _Detokenizer(tokenizer)
    stops = _StopMatcher(settings.stop)
    completion_tokens = 0
    finish: FinishReason | None = None
    worker.start()
    try:
        while finish is None:
            token = tokens.get()
            if token is None:  # generate ended: an error, the limit, or a cancel
                if failure:
                    raise failure[0]
                if cancel.is_set():
                    return
                finish = "length"
                delta = stops.flush(text.flush())
            else:
                completion_tokens += 1
                if token in eos:
                    finish = "stop"
                    delta = stops.flush(text.flush())
                else:
                    delta, stopped = stops.feed(text.add(token))
                    if stopped:
                        finish = "stop"
                    elif completion_tokens >= max_new:
                        finish = "length"
                        delta += stops.flush(text.flush())
            if finish is not None:
                cancel.set()  # after a stop string generate is still running
                worker.join()  # the model is free again before the answer ends
                yield Chunk(delta, finish, Usage(prompt_tokens, completion_tokens))
            elif delta:
                yield Chunk(delta)
    finally:
        cancel.set()  # the reader is done: generate stops at its next step
        # an abandoned stream may be garbage-collected in any thread, its worker's too
        if worker is not threading.current_thread():
            worker.join()


def _generate_kwargs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: GenerationSettings,
    max_new: int,
) -> dict[str, Any]:
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new,
        "eos_token_id": eos_ids,
        "pad_token_id": pad,
        "repetition_penalty": settings.repetition_penalty,
        "do_sample": settings.temperature > 0,
    }
    if settings.temperature > 0:
        # top_k=0: no top-k cut (transformers' default is 50; the OpenAI API has none)
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    return kwargs


def _generate(
    model: PreTrainedModel,
    inputs: dict[str, torch.Tensor],
    kwargs: dict[str, Any],
    tokens: queue.SimpleQueue[int | None],
    cancel: threading.Event,
    lock: threading.Lock | None,
    seed: int | None,
    failure: list[BaseException],
) -> None:
    """The generation thread: every new token goes into `tokens`, then None."""
    try:
        # wait for the model's other answer to end, unless this one is cancelled first
        while lock is not None and not lock.acquire(timeout=0.1):
            if cancel.is_set():
                return
        try:
            if cancel.is_set():
                return
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                model.generate(  # type: ignore[operator]
                    **inputs,
                    **kwargs,
                    streamer=_QueueStreamer(tokens),
                    stopping_criteria=[_Cancelled(cancel)],
                )
        finally:
            if lock is not None:
                lock.release()
    except BaseException as exc:  # handed to the reader, which raises it
        failure.append(exc)
    finally:
        tokens.put(None)


class _QueueStreamer(BaseStreamer):
    """Receives tokens from `generate`: first the prompt (skipped), then each new one."""

    def __init__(self, tokens: queue.SimpleQueue[int | None]) -> None:
        self.tokens = tokens
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.put(int(token))

    def end(self) -> None:
        pass  # the generation thread sends the end, also after an error


class _Cancelled(StoppingCriteria):
    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _Detokenizer:
    """Token ids to text deltas. Decoding from a token a little before the new one,
    and holding back text that ends in an incomplete character (a Persian letter is
    two UTF-8 bytes a byte-level tokenizer may split), gives exactly the text of
    decoding everything at once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # decoding starts here
        self.read = 0  # text up to here was returned

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class _StopMatcher:
    """Cuts the text before the first stop string. Text that could be the start of
    a stop string is held back until the next tokens show whether it is one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show, whether a stop string was reached)."""
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.pending = self.pending[: min(found)], ""
            return out, True
        keep = self._partial_stop()
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self, text: str) -> str:
        out, stopped = self.feed(text)
        if not stopped:
            out, self.pending = out + self.pending, ""
        return out

    def _partial_stop(self) -> int:
        """The length of the longest end of `pending` that begins a stop string."""
        longest = max((len(s) for s in self.stops), default=0)
        for size in range(min(longest - 1, len(self.pending)), 0, -1):
            tail = self.pending[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0


def _context_size(model: PreTrainedModel) -> int | None:
    """How many tokens (prompt and answer) the model reads, when its config says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
