"""The model card: README.md with Hub metadata (YAML front matter) and what a user
needs to know: base model, training data, configuration, evaluation, how to use it,
limits.

    text = render_model_card(card_info, summary)

`card_info` is a plain mapping; every key is optional except `name`:

    name             the model's name (the card's title)
    base_model       a Hub id ("owner/name"), a local path or "scratch:<preset>"
    license          a Hub license id ("apache-2.0"); left out when not given
    datasets         Hub dataset ids for the metadata (list of str)
    dataset_id       the studio's dataset id, when no Hub id is known
    training_data    a sentence about the data
    config           the run's config (its `training` and `lora` sections become the
                     hyperparameters table)
    metrics          the run's metrics (final and best evaluation, final loss)
    evaluation       evaluation results: {metric: value} or a list of rows
                     ({"model": ..., metric: value, ...}), nested dicts flattened
    tags             extra Hub tags
    repo_id          where the model will live on the Hub (used in the code example)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from lastedocation.models.weights import ModelSummary

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
EXAMPLE_QUESTION = "پایتخت ایران کجاست؟"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def front_matter(info: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub metadata: language, license, base model, tags, datasets."""
    meta: dict[str, Any] = {"language": ["fa"]}
    if info.get("license"):
        meta["license"] = str(info["license"])
    base = info.get("base_model")
    if isinstance(base, str) and _HUB_ID.match(base):  # only Hub ids mean anything there
        meta["base_model"] = base
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["lastedocation", "persian", "text-generation", *(info.get("tags") or ())]
    if info.get("datasets"):
        meta["datasets"] = [str(d) for d in info["datasets"]]
    return meta


def _hyperparameters(info: Mapping[str, Any]) -> dict[str, Any]:
    config = info.get("config") or {}
    params = dict(info.get("hyperparameters") or {})
    for section in ("training", "lora"):
        if section == "lora" and (config.get("training") or {}).get("method") == "full":
            continue  # a full fine-tune has no LoRA settings worth showing
        for key, value in _flatten(config.get(section) or {}).items():
            params.setdefault(key if section == "training" else f"lora.{key}", value)
    return params


def _scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers and words of a result (lists, such as example answers, left out)."""
    return {k: v for k, v in _flatten(values).items() if isinstance(v, (int, float, str, bool))}


def _evaluation(evaluation: Any) -> list[str]:
    if isinstance(evaluation, Mapping):
        parts = [_table(["Metric", "Value"], list(_scalars(evaluation).items()))]
        examples = [e for e in evaluation.get("examples") or [] if isinstance(e, Mapping)]
        if examples:
            shown = [{k: _shorten(v) for k, v in _scalars(e).items()} for e in examples[:3]]
            columns = list(dict.fromkeys(key for row in shown for key in row))
            rows = [[row.get(c) for c in columns] for row in shown]
            parts += ["### Example answers", _table(columns, rows)]
        return parts
    results = [_scalars(row) for row in evaluation]
    columns = list(dict.fromkeys(key for row in results for key in row))
    return [_table(columns, [[row.get(c) for c in columns] for row in results])]


def _shorten(value: Any, limit: int = 160) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _base_section(info: Mapping[str, Any]) -> str:
    base = info.get("base_model")
    if not base:
        return "Not recorded."
    if isinstance(base, str) and base.startswith("scratch:"):
        preset = base.removeprefix("scratch:")
        return (
            f"Trained from scratch (the `{preset}` shape), with a byte-level BPE tokenizer "
            "trained on the same data."
        )
    if isinstance(base, str) and _HUB_ID.match(base):
        return f"Fine-tuned from [{base}](https://huggingface.co/{base})."
    return f"Fine-tuned from `{base}`."


def _data_section(info: Mapping[str, Any]) -> str:
    lines = [str(info["training_data"])] if info.get("training_data") else []
    if info.get("datasets"):
        lines.append("Datasets: " + ", ".join(f"`{d}`" for d in info["datasets"]) + ".")
    elif info.get("dataset_id") is not None:
        lines.append(f"The studio's dataset {info['dataset_id']}.")
    return "\n\n".join(lines) or "Not recorded."


def _usage(repo: str) -> str:
    return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo}")
model = AutoModelForCausalLM.from_pretrained("{repo}")

messages = [{{"role": "user", "content": "{EXAMPLE_QUESTION}"}}]
inputs = tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
)
output = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def render_model_card(info: Mapping[str, Any], summary: ModelSummary | None = None) -> str:
    """README.md text for a model folder (YAML front matter, then the card)."""
    name = str(info["name"])
    meta = yaml.safe_dump(front_matter(info), allow_unicode=True, sort_keys=False)
    about = "A Persian (Farsi) language model trained with LASTEDOCATION"
    if summary is not None:
        about += (
            f": {summary['architecture']}, {summary['parameters']:,} parameters "
            f"({summary['dtype']})"
        )
    parts = [f"---\n{meta}---", f"# {name}", about + ".", "## Base model", _base_section(info)]
    parts += ["## Training data", _data_section(info), "## Training configuration"]
    params = _hyperparameters(info)
    parts.append(
        _table(["Setting", "Value"], sorted(params.items())) if params else "Not recorded."
    )
    metrics = _scalars(info.get("metrics") or {})
    if metrics:
        parts += ["### Training metrics", _table(["Metric", "Value"], sorted(metrics.items()))]
    if info.get("evaluation"):
        parts += ["## Evaluation results", *_evaluation(info["evaluation"])]
    parts += ["## How to use", _usage(str(info.get("repo_id") or "path/to/this/model")), _LIMITS]
    return "\n\n".join(parts) + "\n"


_LIMITS = """## Limitations

- The model knows only what its base model and its training data taught it; it can
  state wrong facts fluently. Check its answers before relying on them.
- It was trained for Persian; other languages may work poorly or not at all.
- Small models (and short training runs) repeat themselves and lose track of long
  conversations.
- It has no safety tuning beyond what the base model had."""
