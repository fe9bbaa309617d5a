"""The answer metrics against hand-computed Persian examples."""

from __future__ import annotations

import json
import math

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from lastedocation.errors import InvalidInput
from lastedocation.inference.evaluate import score
from lastedocation.inference.metrics import (
    ROUGE_TYPES,
    bleu,
    chrf,
    exact_match,
    normalize_answer,
    rouge,
    token_f1,
    tokenize,
)
from tests.conftest import PERCQA

ZWNJ = "\u200c"


def test_zwnj_space_and_joined_forms_of_one_word_are_equal() -> None:
    # the verb prefix می/نمی and the plural suffix ها/های: ZWNJ, space or nothing
    assert normalize_answer(f"می{ZWNJ}روم") == normalize_answer("می روم") == "میروم"
    assert normalize_answer("میروم") == "میروم"
    assert normalize_answer("نمی روم") == normalize_answer(f"نمی{ZWNJ}روم") == "نمیروم"
    assert normalize_answer("کتاب ها") == normalize_answer(f"کتاب{ZWNJ}ها") == "کتابها"
    assert normalize_answer(f"لباس{ZWNJ}های بچه") == "لباسهای بچه"
    # any other ZWNJ joins; any other space separates
    assert tokenize(f"خانه{ZWNJ}ام بزرگ است") == ["خانهام", "بزرگ", "است"]


def test_arabic_yeh_and_kaf_become_persian() -> None:
    assert normalize_answer("كيك علي") == "کیک علی"  # ك ي -> ک ی
    assert normalize_answer("مصطفى") == "مصطفی"  # alef maksura ى -> ی
    assert exact_match("يك كتاب", "یک کتاب") == 1.0
    assert normalize_answer("ﻻ") == "لا"  # a presentation-form ligature folds (NFKC)


def test_persian_arabic_and_latin_digits_are_one_form() -> None:
    assert normalize_answer("۱۲۳") == normalize_answer("١٢٣") == normalize_answer("123") == "123"
    assert normalize_answer("۳٫۵ کیلو") == normalize_answer("3.5 کیلو") == "3.5 کیلو"
    assert normalize_answer("۱٬۲۰۰ تومان") == normalize_answer("1,200 تومان") == "1200 تومان"
    assert normalize_answer("۱۴۰۲/۰۵/۱۲") == "1402/05/12"
    assert exact_match("۲ ماه", "2 ماه") == 1.0


def test_punctuation_diacritics_tatweel_and_case() -> None:
    assert normalize_answer("سلام، خوبی؟ «کتاب» را خواندی؛ آره!") == "سلام خوبی کتاب را خواندی آره"
    assert normalize_answer("سلام،خوبی") == "سلام خوبی"  # punctuation separates words
    assert normalize_answer("دَرْسِ خیـــلی مُهِمّ") == "درس خیلی مهم"
    assert normalize_answer("Python  و  PyTorch.") == "python و pytorch"
    assert normalize_answer("آب") == "آب"  # alef madda is a letter of its own
    assert normalize_answer("  \n ") == ""


def test_normalization_is_idempotent_on_real_answers() -> None:
    with PERCQA.open(encoding="utf-8") as f:
        answers = [json.loads(line)["answer"] for _, line in zip(range(500), f, strict=False)]
    for answer in answers:
        once = normalize_answer(answer)
        assert normalize_answer(once) == once, answer


def test_tokenize_keeps_persian_words_whole() -> None:
    assert tokenize("كتاب‌ها را ۲ بار خواندم.") == ["کتابها", "را", "2", "بار", "خواندم"]


def test_token_f1_partial_overlap() -> None:
    pred = "كتاب‌ها را ۲ بار خواندم"  # Arabic kaf, ZWNJ, Persian digit
    ref = "من کتاب ها را 2 بار خواندم و لذت بردم"
    # pred tokens: کتابها را 2 بار خواندم                      (5)
    # ref tokens:  من کتابها را 2 بار خواندم و لذت بردم           (9)
    # common: all 5 -> precision 5/5 = 1, recall 5/9
    # F1 = 2 * 1 * 5/9 / (1 + 5/9) = (10/9) / (14/9) = 5/7
    assert token_f1(pred, ref) == pytest.approx(5 / 7)
    assert exact_match(pred, ref) == 0.0


def test_token_f1_counts_repeated_tokens_once_each() -> None:
    # pred را را را, ref را: common = min(3, 1) = 1 -> P = 1/3, R = 1,
    # F1 = 2 * 1/3 * 1 / (1/3 + 1) = (2/3) / (4/3) = 1/2
    assert token_f1("را را را", "را") == pytest.approx(0.5)
    assert token_f1("سلام", "خداحافظ") == 0.0


def test_empty_prediction_scores_zero() -> None:
    ref = "باید به پزشک مراجعه کنید"
    assert exact_match("", ref) == 0.0
    assert token_f1("", ref) == 0.0
    assert token_f1("؟!", ref) == 0.0  # nothing left after normalization
    result = score([""], [ref])
    assert all(value == 0.0 for value in result.values()), result
    # SQuAD's convention: nothing expected and nothing said is a match
    assert exact_match("", "") == 1.0
    assert token_f1("", "") == 1.0
    assert rouge([""], [""]) == dict.fromkeys(ROUGE_TYPES, 1.0)


def test_rouge2_of_one_word_answers() -> None:
    # neither side has a bigram: equal words match, different words do not
    assert rouge(["بله"], ["بله"])["rouge2"] == 1.0
    assert rouge(["بله"], ["نه"]) == dict.fromkeys(ROUGE_TYPES, 0.0)
    # one side has a bigram: rouge_score's own F (no shared bigram: 0)
    assert rouge(["بله"], ["بله حتما"])["rouge2"] == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "باید به پزشک مراجعه کنید تا آزمایش بدهید",
        "بله",  # one word: BLEU uses the effective order
        "من ۲ بار ، بله",
    ],
)
def test_identical_strings_score_one_everywhere(text: str) -> None:
    result = score([text], [text])
    assert result == pytest.approx(dict.fromkeys(result, 1.0)), result


def test_spelling_variants_score_as_identical() -> None:
    pred = "علي ۲ بار مي‌رود، كتاب‌ها را مي‌خرد"
    ref = "علی 2 بار می رود کتابها را میخرد"
    result = score([pred], [ref])
    assert result == pytest.approx(dict.fromkeys(result, 1.0)), result


def test_rouge_default_tokenizer_drops_persian_ours_does_not() -> None:
    pred = "كتاب‌ها را ۲ بار خواندم"
    ref = "من کتاب ها را 2 بار خواندم و لذت بردم"
    persian = "باید به پزشک مراجعه کنید"
    default = rouge_scorer.RougeScorer(["rouge1", "rougeL"]).score(persian, persian)
    # its tokenizer keeps only [a-z0-9]: an identical Persian pair has nothing to compare
    assert default["rouge1"].fmeasure == 0.0
    assert default["rougeL"].fmeasure == 0.0
    assert rouge([persian], [persian]) == pytest.approx(dict.fromkeys(ROUGE_TYPES, 1.0))
    result = rouge([pred], [ref])
    # rouge1 = token F1 = 5/7 (see above); rougeL: the LCS is all 5 pred tokens -> 5/7
    # rouge2: pred bigrams (کتابها را)(را 2)(2 بار)(بار خواندم) are all among
    # ref's 8 bigrams: P = 4/4, R = 4/8, F = 2 * 1 * 1/2 / (3/2) = 2/3
    assert result == pytest.approx({"rouge1": 5 / 7, "rouge2": 2 / 3, "rougeL": 5 / 7})


def test_bleu_on_persian_tokens() -> None:
    pred = "كتاب‌ها را ۲ بار خواندم"
    ref = "من کتاب ها را 2 بار خواندم و لذت بردم"
    # pred is a contiguous part of ref: every n-gram precision (n = 1..4) is 1;
    # brevity penalty exp(1 - 9/5) = exp(-0.8)
    assert bleu([pred], [ref]) == pytest.approx(math.exp(-0.8))
    # sacrebleu's default 13a tokenizer glues Persian punctuation to the word,
    # which is why we tokenize ourselves and pass tokenize="none"
    assert BLEU().tokenizer("سلام، خوبی؟") == "سلام، خوبی؟"
    assert bleu(["سلام، خوبی؟"], ["سلام خوبی"]) == pytest.approx(1.0)


def test_chrf_ignores_spelling_variants_and_ranks_closeness() -> None:
    assert chrf(["علي ۲ كتاب"], ["علی 2 کتاب"]) == pytest.approx(1.0)
    ref = ["باید به پزشک مراجعه کنید"]
    close = chrf(["حتما به پزشک مراجعه کن"], ref)
    far = chrf(["شب یلدا مبارک"], ref)
    assert 0.0 <= far < close < 1.0


def test_corpus_metrics_need_one_prediction_per_reference() -> None:
    with pytest.raises(InvalidInput, match="2 predictions for 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(InvalidInput, match="1 predictions for 2 references"):
        score(["a"], ["a", "b"])
    assert score([], []) == {
        "exact_match": 0.0,
        "token_f1": 0.0,
        "chrf": 0.0,
        "bleu": 0.0,
        "rouge1": 0.0,
        "rouge2": 0.0,
        "rougeL": 0.0,
    }
