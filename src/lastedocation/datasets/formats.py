"""Dataset formats: detection (with the reason), field mapping, and conversion of
each record into the studio's canonical form, with every problem named.

Canonical records (what the store keeps and training reads):
    {"row": 12, "messages": [{"role": "user", "content": "..."}, ...], "meta": {...}}
    {"row": 12, "text": "...", "meta": {...}}                      (plain text)
`meta` keeps the record's other fields (for example `qid`, used to split).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lastedocation.datasets.reader import Problem

DataFormat = Literal["qa", "alpaca", "openai", "sharegpt", "text"]
DATA_FORMATS: tuple[DataFormat, ...] = ("qa", "alpaca", "openai", "sharegpt", "text")

QUESTION_FIELDS = ("question", "prompt", "query", "q", "input_text", "user")
ANSWER_FIELDS = ("answer", "response", "completion", "output", "a", "target", "assistant")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
}
_ROLES = ("system", "user", "assistant")
# Embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069) make text show
# in another order than it is stored ("Trojan Source"). Persian text needs ZWNJ and
# the marks RLM/LRM (U+200F, U+200E), which only nudge neutral characters: no warning.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class FormatSpec:
    """The data format and, for Q/A, which fields hold the question and the answer."""

    data_format: DataFormat
    question_field: str = "question"
    answer_field: str = "answer"
    text_field: str = "text"
    reason: str = "chosen by the user"

    @property
    def content_fields(self) -> tuple[str, ...]:
        """The fields that hold the text, in the user's words (for statistics)."""
        if self.data_format == "qa":
            return (self.question_field, self.answer_field)
        if self.data_format == "alpaca":
            return ("instruction", "input", "output")
        if self.data_format == "text":
            return (self.text_field,)
        return _ROLES

    @property
    def answer_label(self) -> str:
        return {"qa": self.answer_field, "alpaca": "output", "text": ""}.get(
            self.data_format, "assistant"
        )


@dataclass
class Converted:
    record: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    # worth a look, but the row stays valid
    warnings: list[Problem] = field(default_factory=list)
    # field (in the user's words) -> text, for statistics
    texts: list[tuple[str, str]] = field(default_factory=list)
    chars: int = 0


def detect_format(samples: Iterable[Any]) -> FormatSpec | None:
    """Guess the format from the first records; None when nothing fits."""
    rows = [s for s in samples if isinstance(s, Mapping)]
    if not rows:
        return None
    votes: Counter[str] = Counter()
    for row in rows:
        if isinstance(row.get("messages"), list):
            votes["openai"] += 1
        elif isinstance(row.get("conversations"), list):
            votes["sharegpt"] += 1
        elif "instruction" in row and "output" in row:
            votes["alpaca"] += 1
        elif _first_key(row, QUESTION_FIELDS) and _first_key(row, ANSWER_FIELDS):
            votes["qa"] += 1
        elif "text" in row:
            votes["text"] += 1
    if not votes:
        return None
    best, count = votes.most_common(1)[0]
    share = f"{count} of the first {len(rows)} rows"
    if best == "openai":
        return FormatSpec("openai", reason=f"{share} have a `messages` list (OpenAI chat)")
    if best == "sharegpt":
        return FormatSpec("sharegpt", reason=f"{share} have a `conversations` list (ShareGPT)")
    if best == "alpaca":
        return FormatSpec("alpaca", reason=f"{share} have `instruction` and `output` (Alpaca)")
    if best == "text":
        return FormatSpec("text", reason=f"{share} have only a `text` field (plain text)")
    pairs = Counter(
        (q, a)
        for r in rows
        if (q := _first_key(r, QUESTION_FIELDS)) and (a := _first_key(r, ANSWER_FIELDS))
    )
    question, answer = pairs.most_common(1)[0][0]
    return FormatSpec(
        "qa",
        question_field=question,
        answer_field=answer,
        reason=f"{share} have `{question}` and `{answer}` fields (question/answer pairs)",
    )


def _first_key(row: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in row), None)


def convert(row: int, data: Any, spec: FormatSpec, max_chars: int) -> Converted:
    """Turn one parsed record into a canonical record, or name every problem with it."""
    if not isinstance(data, Mapping):
        kind = type(data).__name__
        return Converted(
            None, [Problem(row, None, "wrong_type", f"expected an object, got {kind}")]
        )
    if spec.data_format == "qa":
        out = _convert_pairs(
            row, data, ((spec.question_field, "user"), (spec.answer_field, "assistant"))
        )
    elif spec.data_format == "alpaca":
        out = _convert_alpaca(row, data)
    elif spec.data_format == "openai":
        out = _convert_chat(row, data, "messages", "role", "content", {r: r for r in _ROLES})
    elif spec.data_format == "sharegpt":
        out = _convert_chat(row, data, "conversations", "from", "value", _SHAREGPT_ROLES)
    else:
        out = _convert_text(row, data, spec.text_field)
    used = {spec.question_field, spec.answer_field} if spec.data_format == "qa" else set()
    used |= {"messages", "conversations", "instruction", "input", "output", spec.text_field}
    meta = {k: v for k, v in data.items() if k not in used}
    out.problems.extend(_meta_problems(row, meta))
    if out.problems:
        out.record = None
    elif out.record is not None:
        out.record["meta"] = meta
    if out.chars > max_chars:
        message = f"the record has {out.chars:,} characters; the limit is {max_chars:,}"
        out.problems.append(Problem(row, None, "too_long", message))
        out.record = None
    return out


def _text(
    out: Converted,
    row: int,
    data: Mapping[str, Any],
    name: str,
    *,
    label: str | None = None,
    required: bool = True,
) -> str | None:
    """The text of field `name`, or None with its problem added to `out`. `label` is
    the field in the user's words when it is not `name` (`messages[0].content`)."""
    label = label or name
    if name not in data or data[name] is None:
        if not required:
            return ""
        out.problems.append(Problem(row, label, "missing_field", f"the field `{label}` is missing"))
        return None
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = (
            "list"
            if isinstance(value, list)
            else "object"
            if isinstance(value, Mapping)
            else type(value).__name__
        )
        out.problems.append(
            Problem(row, label, "wrong_type", f"`{label}` must be text, got {kind}")
        )
        return None
    text = value if isinstance(value, str) else str(value)
    problem = _utf8_problem(row, label, text)
    if problem:
        out.problems.append(problem)
        return None
    if required and not text.strip():
        out.problems.append(Problem(row, label, "empty_field", f"the field `{label}` is empty"))
        return None
    if bidi := _BIDI_CONTROLS.search(text):
        character = f"U+{ord(bidi.group()):04X} {unicodedata.name(bidi.group())}"
        message = (
            f"`{label}` holds the bidirectional control {character} at character "
            f"{bidi.start() + 1}: the text may show in another order than it is stored"
        )
        out.warnings.append(Problem(row, label, "bidi_control", message))
    return text


def _utf8_problem(row: int, name: str, text: str) -> Problem | None:
    # readers decode with surrogateescape: a lone surrogate marks an invalid byte
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Problem(
            row, name, "bad_utf8", f"invalid UTF-8 in `{name}` at character {exc.start + 1}"
        )
    return None


def _meta_problems(row: int, meta: Mapping[str, Any]) -> list[Problem]:
    """The other fields are stored as they came, so invalid UTF-8 in a name or a value
    could not be written. Only CSV keeps it (as surrogates, in flat string values): the
    JSON parsers refuse it."""
    problems = []
    for name, value in meta.items():
        strings = [name, value] if isinstance(value, str) else [name]
        for text in strings:
            if problem := _utf8_problem(row, name.encode(errors="replace").decode(), text):
                problems.append(problem)
                break
    return problems


def _convert_pairs(
    row: int, data: Mapping[str, Any], fields: tuple[tuple[str, str], ...]
) -> Converted:
    out = Converted(None)
    messages = []
    for name, role in fields:
        text = _text(out, row, data, name)
        if text is not None:
            messages.append({"role": role, "content": text})
            out.texts.append((name, text))
            out.chars += len(text)
    if not out.problems:
        out.record = {"row": row, "messages": messages}
    return out


def _convert_alpaca(row: int, data: Mapping[str, Any]) -> Converted:
    out = Converted(None)
    values: dict[str, str] = {}
    for name in ("instruction", "input", "output"):
        text = _text(out, row, data, name, required=name != "input")
        if text is not None:
            values[name] = text
            out.texts.append((name, text))
            out.chars += len(text)
    if not out.problems:
        prompt = values["instruction"]
        if values["input"].strip():
            prompt = f"{prompt}\n\n{values['input']}"
        out.record = {
            "row": row,
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": values["output"]},
            ],
        }
    return out


def _convert_chat(
    row: int,
    data: Mapping[str, Any],
    list_key: str,
    role_key: str,
    content_key: str,
    roles: Mapping[str, str],
) -> Converted:
    out = Converted(None)
    turns = data.get(list_key)
    if turns is None:
        out.problems.append(
            Problem(row, list_key, "missing_field", f"the field `{list_key}` is missing")
        )
        return out
    if not isinstance(turns, list) or not turns:
        message = f"`{list_key}` must be a non-empty list of turns"
        out.problems.append(
            Problem(
                row,
                list_key,
                "wrong_type" if not isinstance(turns, list) else "empty_field",
                message,
            )
        )
        return out
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        where = f"{list_key}[{i}]"
        if not isinstance(turn, Mapping):
            out.problems.append(Problem(row, where, "wrong_type", f"`{where}` must be an object"))
            continue
        raw_role = turn.get(role_key)
        role = roles.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
        if role is None:
            allowed = ", ".join(sorted(roles))
            message = f"`{where}.{role_key}` is {raw_role!r}; expected one of {allowed}"
            out.problems.append(Problem(row, f"{where}.{role_key}", "bad_role", message))
        # the content is checked even after a bad role: every wrong field is named
        text = _text(out, row, turn, content_key, label=f"{where}.{content_key}")
        if role is None or text is None:
            continue
        messages.append({"role": role, "content": text})
        out.texts.append((role, text))
        out.chars += len(text)
    if not out.problems:
        order = _order_problem(messages)
        if order:
            out.problems.append(Problem(row, list_key, "roles_order", order))
        else:
            out.record = {"row": row, "messages": messages}
    return out


def _order_problem(messages: list[dict[str, str]]) -> str | None:
    """Roles read: an optional system turn, then user and assistant taking turns,
    ending with the assistant."""
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if "system" in roles:
        return "a `system` turn may only come first"
    if not roles:
        return "there is no user or assistant turn"
    for i, role in enumerate(roles):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return (
                f"turn {i + 1} is `{role}` but `{expected}` was expected "
                "(turns alternate, starting with user)"
            )
    if roles[-1] != "assistant":
        return "the conversation ends with a user turn; it must end with an assistant answer"
    return None


def _convert_text(row: int, data: Mapping[str, Any], name: str) -> Converted:
    out = Converted(None)
    text = _text(out, row, data, name)
    if text is not None:
        out.texts.append((name, text))
        out.chars = len(text)
        out.record = {"row": row, "text": text}
    return out
