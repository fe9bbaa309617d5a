"""Persian text made ready for a voice: numbers and dates as words, letters normalized,
long text cut into sentences.

    sentences = prepare("امروز ۱۴۰۲/۰۵/۱۲ است. دما ۲۵.۵ درجه بود!")
    # ["امروز دوازدهم مرداد هزار و چهارصد و دو است.", "دما بیست و پنج ممیز پنج درجه بود!"]

Voices read letters, not digits: espeak-ng reads "۱۴۰۲" digit by digit and MMS-TTS
knows no digits at all. So numbers (Persian and Latin digits, decimals, negatives,
thousands separators, percentages, ordinals like "۲۱ام") and dates (Jalali
۱۴۰۲/۰۵/۱۲, Gregorian 2023-08-03) become words here. shekar's `NumberToWords` reads
0 to 999 well and is used for that; the rest is ours, because it takes only a bare
number, says "یک هزار" for 1000, reads 3.05 as 3.5 and fails past 10^15.

Latin words are left as they are (the voice reads or skips them; nothing is
transliterated). Letters go through the studio's Persian normalizer (Arabic yeh and
kaf to Persian, ZWNJ). Sentences end at . ! ? ؟ ; ؛ and new lines, but not inside a
decimal, a web address or an abbreviation such as "ج.ا.ا"; a sentence longer than
`MAX_SENTENCE_CHARS` is cut at a comma or a space, so audio can start early.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date
from functools import cache

import jdatetime

from lastedocation.datasets.normalize import PersianNormalizer
from lastedocation.errors import InvalidInput

MAX_INPUT_CHARS = 4096  # what OpenAI's /v1/audio/speech allows in `input`
MAX_SENTENCE_CHARS = 300
_LONGEST_NUMBER = 15  # digits read as one number; longer ones (ids) are read digit by digit

_D = "0-9\u06f0-\u06f9\u0660-\u0669"  # Latin, Persian and Arabic-Indic digits
_TO_LATIN = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_SCALES = ["", "هزار", "میلیون", "میلیارد", "تریلیون"]
_DIGIT_WORDS = ["صفر", "یک", "دو", "سه", "چهار", "پنج", "شش", "هفت", "هشت", "نه"]
JALALI_MONTHS = ["فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور",
                 "مهر", "آبان", "آذر", "دی", "بهمن", "اسفند"]  # fmt: skip
GREGORIAN_MONTHS = ["ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن",
                    "ژوئیه", "اوت", "سپتامبر", "اکتبر", "نوامبر", "دسامبر"]  # fmt: skip
ABBREVIATIONS = {
    "ج.ا.ا": "جمهوری اسلامی ایران",
    "ه.ش": "هجری شمسی",
    "ه.ق": "هجری قمری",
    "ق.م": "قبل از میلاد",
}

_NOT_IN_WORD = rf"(?<![A-Za-z{_D}_])"  # "MP3", "x86" and "H2O" stay as they are
_DATE_YMD = re.compile(
    rf"{_NOT_IN_WORD}([{_D}]{{4}})([/\-])([{_D}]{{1,2}})\2([{_D}]{{1,2}})(?![{_D}])"
)
_DATE_DMY = re.compile(rf"{_NOT_IN_WORD}([{_D}]{{1,2}})/([{_D}]{{1,2}})/([{_D}]{{4}})(?![{_D}])")
_TIME = re.compile(rf"{_NOT_IN_WORD}([{_D}]{{1,2}}):([{_D}]{{2}})(?![{_D}:])")
_NUMBER = re.compile(
    rf"{_NOT_IN_WORD}(?P<sign>(?<![{_D}])[-−])?"
    rf"(?P<int>[{_D}]{{1,3}}(?:[,٬][{_D}]{{3}})+|[{_D}]+)"
    rf"(?:[.٫](?P<frac>[{_D}]+))?"
    r"(?P<after>\s*[%٪]|\u200c?ام(?![\w\u200c])|م(?![\w\u200c]))?"
    r"(?P<latin>(?=[A-Za-z]))?"
)
_UNSPEAKABLE = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ABBREVIATION = re.compile("|".join(re.escape(a) for a in ABBREVIATIONS) + r"\.?")


def check_input(text: str, *, field: str = "input", limit: int = MAX_INPUT_CHARS) -> str:
    """`text` stripped, if there is something to read and it is within `limit`."""
    if len(text) > limit:
        raise InvalidInput(
            f"{field} is {len(text)} characters long, over the limit of {limit}; "
            "send long text in several requests",
            field=field,
            limit=limit,
        )
    # lone surrogates (valid JSON, not UTF-8) and control characters say nothing
    stripped = _UNSPEAKABLE.sub(" ", text).strip()
    if not stripped:
        raise InvalidInput(f"{field} is empty: give the text to read aloud", field=field)
    return stripped


def prepare(text: str, *, limit: int = MAX_INPUT_CHARS) -> list[str]:
    """The sentences of `text`, each ready for a voice (see the module's docstring)."""
    sentences = (speakable(s) for s in split_sentences(check_input(text, limit=limit)))
    return [s for s in sentences if s]


def speakable(sentence: str) -> str:
    """One sentence with abbreviations, dates, times and numbers as words, normalized.

    The words made here are final: only the text around them goes through the
    normalizer, whose spacing rules would join "یک میلیون" with a ZWNJ and whose
    punctuation rules would split "3.5" and "ج.ا.ا" before they were read."""
    text = sentence.replace(_OPEN, "").replace(_CLOSE, "")
    text = _ABBREVIATION.sub(_keep(lambda m: ABBREVIATIONS[m.group().rstrip(".")]), text)
    text = _DATE_YMD.sub(_keep(_ymd), text)
    text = _DATE_DMY.sub(_keep(_dmy), text)
    text = _TIME.sub(_keep(_time), text)
    text = _NUMBER.sub(_keep(_number), text)
    normalize = _normalizer()
    pieces = re.split(f"{_OPEN}(.*?){_CLOSE}", text)  # odd places: words made here
    out = "".join(piece if odd else normalize(piece) for odd, piece in _odd(pieces))
    return re.sub(r"\s+", " ", out).strip()


_OPEN, _CLOSE = "\x00", "\x01"  # around words made here; never in what a user sends


def _keep(make: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        words = make(match)
        return match.group() if words == match.group() else f"{_OPEN}{words}{_CLOSE}"

    return replace


def _odd(pieces: list[str]) -> Iterator[tuple[bool, str]]:
    return ((n % 2 == 1, piece) for n, piece in enumerate(pieces))


@cache
def _normalizer() -> PersianNormalizer:
    return PersianNormalizer()


# --- numbers ---------------------------------------------------------------------


def number_words(value: int) -> str:
    """A whole number in Persian words: 1402 -> "هزار و چهارصد و دو"."""
    if value < 0:
        return "منفی " + number_words(-value)
    if value == 0:
        return _DIGIT_WORDS[0]
    if value >= 1000 ** len(_SCALES):
        return digit_words(str(value))
    parts: list[str] = []
    scale = 0
    while value:
        value, chunk = divmod(value, 1000)
        if chunk:
            words = _chunk_words(chunk)
            if scale == 1 and chunk == 1:
                parts.append(_SCALES[1])  # "هزار", not "یک هزار"
            else:
                parts.append(f"{words} {_SCALES[scale]}".strip())
        scale += 1
    return " و ".join(reversed(parts))


def ordinal_words(value: int) -> str:
    """1 -> "یکم", 3 -> "سوم", 12 -> "دوازدهم", 23 -> "بیست و سوم", 30 -> "سی‌ام"."""
    words = number_words(value)
    if words.endswith("سه"):
        return words[:-2] + "سوم"
    if words.endswith("ی"):
        return words + "\u200cام"
    return words + "م"


def digit_words(digits: str) -> str:
    """Each digit on its own, as a phone number or an id is read."""
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits.translate(_TO_LATIN))


@cache
def _chunk_words(chunk: int) -> str:
    from shekar.transforms import NumberToWords

    return str(NumberToWords()(str(chunk)))


def _number(match: re.Match[str]) -> str:
    digits = match["int"].translate(_TO_LATIN).replace(",", "").replace("٬", "")
    if len(digits) > _LONGEST_NUMBER or (len(digits) > 3 and digits.startswith("0")):
        words = digit_words(digits)  # 09121234567, a long id: digit by digit
    else:
        words = number_words(int(digits))
    after = (match["after"] or "").strip().lstrip("\u200c")
    if match["frac"] is not None:
        frac = match["frac"].translate(_TO_LATIN)
        zeros = len(frac) - len(frac.lstrip("0"))
        rest = frac.lstrip("0")
        tail = [_DIGIT_WORDS[0]] * zeros + ([number_words(int(rest))] if rest else [])
        words = f"{words} ممیز {' '.join(tail)}"
    elif after in ("ام", "م"):
        words = ordinal_words(int(digits)) if len(digits) <= _LONGEST_NUMBER else words
        after = ""
    if match["sign"]:
        words = "منفی " + words
    if after in ("%", "٪"):
        words += " درصد"
    return f"{words} " if match["latin"] is not None else words  # "۵GB" -> "پنج GB"


# --- dates and times -------------------------------------------------------------


def date_words(year: int, month: int, day: int) -> str | None:
    """A Jalali (years 1200-1499) or Gregorian (1800-2199) date in words, or None if
    it is not a real date: 1402, 5, 12 -> "دوازدهم مرداد هزار و چهارصد و دو"."""
    try:
        if 1200 <= year < 1500:
            jdatetime.date(year, month, day)
            month_name = JALALI_MONTHS[month - 1]
        elif 1800 <= year < 2200:
            date(year, month, day)
            month_name = GREGORIAN_MONTHS[month - 1]
        else:
            return None
    except ValueError:
        return None
    return f"{ordinal_words(day)} {month_name} {number_words(year)}"


def _ymd(match: re.Match[str]) -> str:
    year, month, day = (int(match[i].translate(_TO_LATIN)) for i in (1, 3, 4))
    return date_words(year, month, day) or match.group()


def _dmy(match: re.Match[str]) -> str:
    day, month, year = (int(match[i].translate(_TO_LATIN)) for i in (1, 2, 3))
    return date_words(year, month, day) or match.group()


def _time(match: re.Match[str]) -> str:
    hours, minutes = (int(match[i].translate(_TO_LATIN)) for i in (1, 2))
    if hours > 24 or minutes > 59:
        return match.group()
    if minutes == 0:
        return number_words(hours)
    return f"{number_words(hours)} و {number_words(minutes)} دقیقه"


# --- sentences -------------------------------------------------------------------

_ENDS = ".!?؟;؛…"
_CLOSERS = "\"'»)]}”’"


def split_sentences(text: str, *, longest: int = MAX_SENTENCE_CHARS) -> list[str]:
    """`text` cut into sentences, each at most `longest` characters (see the module)."""
    sentences: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\n" or (char in _ENDS and _ends_sentence(text, i)):
            j = i + 1
            while j < len(text) and (text[j] in _ENDS or text[j] in _CLOSERS):
                j += 1
            sentences.append(text[start:j])
            start = i = j
            continue
        i += 1
    sentences.append(text[start:])
    out: list[str] = []
    for sentence in sentences:
        out.extend(_cut(sentence.strip(), longest))
    return [s for s in out if s]


def _ends_sentence(text: str, i: int) -> bool:
    nxt = text[i + 1] if i + 1 < len(text) else " "
    if text[i] != ".":
        return True
    if not (nxt.isspace() or nxt in _ENDS or nxt in _CLOSERS):
        return False  # 3.5, ج.ا.ا, example.com: the dot is inside a word
    word = text[:i].rsplit(None, 1)[-1] if text[:i].strip() else ""
    return not (len(word) == 1 and word.isalpha()) and "." not in word  # "ج.ا.ا." ends no sentence


def _cut(sentence: str, longest: int) -> list[str]:
    """A sentence over `longest` characters, cut after a comma, else at a space."""
    pieces: list[str] = []
    while len(sentence) > longest:
        window = sentence[:longest]
        at = max(window.rfind(c) for c in "،,:")
        if at < longest // 3:
            at = window.rfind(" ")
        if at < longest // 3:
            at = longest - 1  # one unbroken word: cut it anyway
        pieces.append(sentence[: at + 1].strip())
        sentence = sentence[at + 1 :].strip()
    pieces.append(sentence)
    return pieces
