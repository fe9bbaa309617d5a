"""Answer-quality metrics for Persian text: exact match, token F1, chrF, BLEU, ROUGE.

Every metric compares texts after `normalize_answer`, so a prediction is not
penalised for how it was typed, only for what it says:

- letters: Arabic yeh/kaf (ي ى ك) become Persian (ی ک); ة and ۀ become ه; أ إ ٱ
  become ا (آ stays: it is its own letter), ؤ becomes و; presentation forms
  (ligatures such as ﻻ) fold by NFKC;
- digits: Persian (۰-۹) and Arabic-Indic (٠-٩) digits become ASCII 0-9; ٫ between
  digits is a decimal point and thousands separators (٬ or ,) between digits go,
  so ۱٬۲۰۰ = 1,200 = 1200 and ۳٫۵ = 3.5; `.` and `/` stay only between digits
  (3.5, 1402/05/12);
- ZWNJ is a joiner inside one word, so it is removed; the same word typed with a
  space where the ZWNJ belongs is joined for the verb prefixes می/نمی and the
  plural suffixes ها/های. So می‌روم = میروم = می روم (one token), and
  کتاب‌ها = کتابها = کتاب ها. Other spaces are word boundaries;
- diacritics (harakat, superscript alef, hamza marks), tatweel and invisible
  format characters (ZWJ, LRM/RLM, BOM, soft hyphen) are removed;
- punctuation and symbols (، ؛ ؟ « » and ASCII, emoji) become spaces; Latin is
  lower-cased; whitespace collapses to single spaces.

Scores are on a 0-1 scale (sacrebleu's 0-100 is divided by 100). Corpus-level
metrics (chrF, BLEU) come from sacrebleu; ROUGE from `rouge-score` with our
tokenizer, because its own drops every non-Latin character (a Persian pair
scores 0). BLEU is computed on our tokens joined by spaces with
`tokenize="none"`: sacrebleu's default 13a leaves Persian punctuation glued to
words ("سلام،" is one token) and neither 13a nor intl folds letter forms or
digits; `effective_order` keeps short answers (under four words) scorable.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from sacrebleu import BLEU, CHRF

from lastedocation.errors import InvalidInput

ZWNJ = "\u200c"
_LETTERS = {
    "ي": "ی",
    "ى": "ی",
    "ك": "ک",
    "ة": "ه",
    "ۀ": "ه",
    "أ": "ا",
    "إ": "ا",
    "ٱ": "ا",
    "ؤ": "و",
}
_INVISIBLE = {"\u0640", "\u200b", "\u200d", "\u200e", "\u200f", "\u00ad", "\ufeff", ZWNJ}
_DIGIT_GROUPS = re.compile(r"(?<=\d)[٬,](?=\d{3})")
_DECIMAL = re.compile(r"(?<=\d)٫(?=\d)")
_LOOSE_SEPARATOR = re.compile(r"(?<![0-9])[./]|[./](?![0-9])")
_PREFIX = re.compile(r"(?<!\S)(ن?می) (?=\S)")
_SUFFIX = re.compile(r"(?<=\S) (های|ها)(?!\S)")


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    """One character, normalized (the same answer for the same character)."""
    if char in _LETTERS:
        return _LETTERS[char]
    if char in _INVISIBLE:
        return ""
    if char in "./":
        return char  # kept for now; only the ones between digits survive
    category = unicodedata.category(char)
    if category == "Nd":
        return str(unicodedata.digit(char))
    if category == "Mn":  # harakat, superscript alef, hamza above/below
        return ""
    if category == "Cf":  # other invisible format characters (bidi controls)
        return ""
    if category[0] in "PS":
        return " "
    return char.lower()


def normalize_answer(text: str) -> str:
    """The text as metrics compare it (see the module docstring for every rule)."""
    text = unicodedata.normalize("NFKC", text)
    text = _DIGIT_GROUPS.sub("", text)
    text = _DECIMAL.sub(".", text)
    text = "".join(map(_fold, text))
    text = _LOOSE_SEPARATOR.sub(" ", text)
    text = " ".join(text.split())
    text = _PREFIX.sub(r"\1", text)
    return _SUFFIX.sub(r"\1", text)


def tokenize(text: str) -> list[str]:
    """Words of the normalized text: split on whitespace, Persian words kept whole."""
    return normalize_answer(text).split()


class PersianTokenizer:
    """`tokenize` in the shape `rouge_score.RougeScorer(tokenizer=...)` expects."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalized texts are equal, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style F1 over the bags of `tokenize` tokens (two empty texts: 1.0)."""
    pred_tokens, ref_tokens = tokenize(pred), tokenize(ref)
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_pairs(preds: Sequence[str], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise InvalidInput(
            f"{len(preds)} predictions for {len(refs)} references; give one prediction per "
            "reference, in the same order"
        )


def chrf(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (character 6-grams, beta 2) of the normalized texts, 0-1."""
    _check_pairs(preds, refs)
    if not preds:
        return 0.0
    metric = CHRF()
    result = metric.corpus_score(
        [normalize_answer(p) for p in preds], [[normalize_answer(r) for r in refs]]
    )
    return float(result.score) / 100


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (up to 4-grams, effective order) over `tokenize` tokens, 0-1."""
    _check_pairs(preds, refs)
    if not preds:
        return 0.0
    metric = BLEU(tokenize="none", effective_order=True)
    result = metric.corpus_score(
        [" ".join(tokenize(p)) for p in preds], [[" ".join(tokenize(r)) for r in refs]]
    )
    return min(1.0, float(result.score) / 100)  # exp/log round-off can give 1.0000000000000004


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_ROUGE_ORDER = (1, 2, 1)  # the shortest text that has a unit to count


def rouge(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures over the pairs, 0-1."""
    _check_pairs(preds, refs)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    if not preds:
        return totals
    from rouge_score import rouge_scorer  # imports nltk (0.3 s): only when scoring

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=PersianTokenizer())
    for pred, ref in zip(preds, refs, strict=True):
        scores = scorer.score(ref, pred)  # rouge_score takes (target, prediction)
        pred_tokens, ref_tokens = tokenize(pred), tokenize(ref)
        for name, order in zip(ROUGE_TYPES, _ROUGE_ORDER, strict=True):
            if len(pred_tokens) < order and len(ref_tokens) < order:
                # no n-gram on either side (a one-word answer has no bigram): like
                # BLEU's effective order, the texts are compared as they are
                totals[name] += float(pred_tokens == ref_tokens)
            else:
                totals[name] += float(scores[name].fmeasure)
    return {name: total / len(preds) for name, total in totals.items()}
