"""Persian text prepared for a voice: numbers and dates read as words, Latin kept,
letters normalized, long text cut into sentences, input bounded."""

from __future__ import annotations

import pytest

from lastedocation.errors import InvalidInput
from lastedocation.speech.text import (
    MAX_INPUT_CHARS,
    MAX_SENTENCE_CHARS,
    date_words,
    number_words,
    ordinal_words,
    prepare,
    speakable,
    split_sentences,
)

ZWNJ = "\u200c"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "صفر"),
        (7, "هفت"),
        (19, "نوزده"),
        (105, "صد و پنج"),
        (1000, "هزار"),  # not shekar's "یک هزار"
        (1402, "هزار و چهارصد و دو"),
        (101_000, "صد و یک هزار"),
        (1_001_000, "یک میلیون و هزار"),
        (2_000_000, "دو میلیون"),
        (-12, "منفی دوازده"),
    ],
)
def test_number_words(value: int, words: str) -> None:
    assert number_words(value) == words


@pytest.mark.parametrize(
    ("value", "words"),
    [(1, "یکم"), (2, "دوم"), (3, "سوم"), (12, "دوازدهم"), (23, "بیست و سوم"), (30, f"سی{ZWNJ}ام")],
)
def test_ordinal_words(value: int, words: str) -> None:
    assert ordinal_words(value) == words


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("۱۲۳ کتاب", "صد و بیست و سه کتاب"),  # Persian digits
        ("123 کتاب", "صد و بیست و سه کتاب"),  # Latin digits
        ("٤٥ کتاب", "چهل و پنج کتاب"),  # Arabic-Indic digits
        ("دما ۲۵.۵ درجه", "دما بیست و پنج ممیز پنج درجه"),
        ("طول ۳٫۰۵ متر", "طول سه ممیز صفر پنج متر"),  # shekar would say 3.5
        ("دمای -5 درجه", "دمای منفی پنج درجه"),
        (
            "قیمت 1,234,567 تومان",
            "قیمت یک میلیون و دویست و سی و چهار هزار و پانصد و شصت و هفت تومان",
        ),
        ("قیمت ۱٬۰۰۰ ریال", "قیمت هزار ریال"),
        ("۵۰٪ رشد", "پنجاه درصد رشد"),
        ("قرن ۲۱ام", "قرن بیست و یکم"),
        ("شماره ۰۹۱۲۱۲۳۴۵۶۷", "شماره صفر نه یک دو یک دو سه چهار پنج شش هفت"),
        ("ساعت ۱۴:۳۰ است", "ساعت چهارده و سی دقیقه است"),
        ("صفحه ۱۰-۲۰", "صفحه ده-بیست"),  # a range, not a negative number
    ],
)
def test_numbers_are_read_as_words(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("امروز ۱۴۰۲/۰۵/۱۲ است", "امروز دوازدهم مرداد هزار و چهارصد و دو است"),
        ("1402-05-12", "دوازدهم مرداد هزار و چهارصد و دو"),
        ("۱۲/۰۵/۱۴۰۲", "دوازدهم مرداد هزار و چهارصد و دو"),  # day first
        ("۱۴۰۳/۱۲/۳۰", f"سی{ZWNJ}ام اسفند هزار و چهارصد و سه"),  # 1403 is a leap year
        ("2023-08-03", "سوم اوت دو هزار و بیست و سه"),
    ],
)
def test_dates_are_read_as_words(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_impossible_dates_are_not_dates() -> None:
    assert date_words(1402, 12, 30) is None  # 1402 is not a leap year
    assert date_words(1402, 13, 1) is None
    spoken = speakable("۱۴۰۲/۱۳/۰۱")
    assert "اسفند" not in spoken and spoken.startswith("هزار و چهارصد و دو")


def test_latin_words_are_left_alone() -> None:
    spoken = speakable("من Python و MP3 و x86 را دوست دارم، نه C++")
    for word in ("Python", "MP3", "x86", "C++"):
        assert word in spoken
    assert speakable("من Python 3.11 دارم") == "من Python سه ممیز یازده دارم"
    assert speakable("فایل ۵GB است") == "فایل پنج GB است"


def test_letters_are_normalized() -> None:
    assert speakable("كتاب علي") == "کتاب علی"  # Arabic kaf and yeh
    assert speakable("ما می رویم") == f"ما می{ZWNJ}رویم"
    assert speakable("کتاب ها") == f"کتاب{ZWNJ}ها"
    # number words are final: the normalizer's spacing does not join them
    assert ZWNJ not in speakable("۱۰۰۰۰۰۰ نفر")


def test_sentences_split_at_the_ends_of_sentences() -> None:
    text = "سلام! حالت چطور است؟ من خوبم؛ ممنون.\nخداحافظ"
    assert split_sentences(text) == ["سلام!", "حالت چطور است؟", "من خوبم؛", "ممنون.", "خداحافظ"]
    assert split_sentences("واقعاً؟! بله...") == ["واقعاً؟!", "بله..."]
    assert split_sentences("او گفت «برو.» من رفتم.") == ["او گفت «برو.»", "من رفتم."]


def test_decimals_and_abbreviations_do_not_end_a_sentence() -> None:
    assert split_sentences("عدد ۳.۱۴ است. تمام.") == ["عدد ۳.۱۴ است.", "تمام."]
    assert split_sentences("ج.ا.ا کشوری در آسیاست. پایتخت آن تهران است.") == [
        "ج.ا.ا کشوری در آسیاست.",
        "پایتخت آن تهران است.",
    ]
    assert split_sentences("نشانی example.com است. بعدی") == ["نشانی example.com است.", "بعدی"]
    assert prepare("ج.ا.ا کشوری در آسیاست.") == ["جمهوری اسلامی ایران کشوری در آسیاست."]


def test_long_sentences_are_cut_at_commas_or_spaces() -> None:
    clause = "این یک جمله‌ی بلند است که ادامه دارد"
    text = "، ".join([clause] * 30) + "."
    pieces = split_sentences(text)
    assert len(pieces) > 1
    assert all(len(p) <= MAX_SENTENCE_CHARS for p in pieces)
    assert all(p.endswith("،") for p in pieces[:-1])  # cut after a comma, not inside a word
    assert " ".join(pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost
    word = "ب" * 1000  # one unbroken word is cut anyway
    assert all(len(p) <= MAX_SENTENCE_CHARS for p in split_sentences(word))


def test_prepare_reads_a_paragraph() -> None:
    text = "امروز ۱۴۰۲/۰۵/۱۲ است. دما ۲۵.۵ درجه بود!"
    assert prepare(text) == [
        "امروز دوازدهم مرداد هزار و چهارصد و دو است.",
        "دما بیست و پنج ممیز پنج درجه بود!",
    ]


def test_input_is_bounded_and_not_empty() -> None:
    for empty in ("", "   \n\t "):
        with pytest.raises(InvalidInput, match="input is empty") as caught:
            prepare(empty)
        assert caught.value.extra["field"] == "input"
    with pytest.raises(InvalidInput, match="over the limit of 4096") as caught:
        prepare("ا" * (MAX_INPUT_CHARS + 1))
    assert caught.value.extra == {"field": "input", "limit": MAX_INPUT_CHARS}
    assert prepare("ا" * MAX_INPUT_CHARS)  # the limit itself is allowed
    assert prepare("\x00سلام\x01") == ["سلام"]  # the markers used inside never leak
