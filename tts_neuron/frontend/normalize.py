"""English text normalisation: digits, symbols and abbreviations rewritten as the words a reader says.

espeak-ng reads ordinary words well but guesses at "3:45pm", "$1.2bn", "Dr." or "1990s", so each sentence is
rewritten here before it is phonemised. The rewrite is a fixed sequence of regex passes, one per kind of
token, most specific first (dates before times before currency before plain numbers). Every pattern is
anchored so that a failed match costs O(1) or the length of one digit run, never a rescan: the whole
normalisation is linear in the input. Anything the passes do not recognise is left as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["SAY_AS_KINDS", "normalize", "say_as"]

# -- number words ---------------------------------------------------------------------------------------

_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_MAX_CARDINAL_DIGITS = 15
"""Longer digit strings (and zero-padded ones) are codes, read digit by digit."""
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(f"{_TENS[tens]}-{_ONES[ones]}" if ones else _TENS[tens])
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def _cardinal(n: int) -> str:
    """Spell 0 <= n < 10**15 the American way ("one hundred twenty-three", no "and")."""
    parts = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            parts.append(f"{_below_thousand(count)} {name}")
    if n or not parts:
        parts.append(_below_thousand(n))
    return " ".join(parts)


def _digit_words(digits: str) -> str:
    return " ".join(_ONES[ord(digit) - 48] for digit in digits)


def _integer_words(digits: str) -> str:
    """Read an ASCII integer that may hold thousands commas; codes (too long, zero-padded) digit by digit.

    The length check comes before int(), which also keeps Python's limit on int-from-str conversions away.
    """
    digits = digits.replace(",", "")
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return _digit_words(digits)
    return _cardinal(int(digits))


def _number_words(integer: str, fraction: str | None = None) -> str:
    words = _integer_words(integer)
    return f"{words} point {_digit_words(fraction)}" if fraction else words


def _ordinal(words: str) -> str:
    """Turn spelt cardinal words into the ordinal ("twenty-one" -> "twenty-first")."""
    split = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:split], words[split:]
    if last in _IRREGULAR_ORDINALS:
        return head + _IRREGULAR_ORDINALS[last]
    return head + (last[:-1] + "ieth" if last.endswith("y") else last + "th")


def _plural(words: str) -> str:
    """Pluralise the last word of a spelt number ("nineteen ninety" -> "nineteen nineties")."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _year_words(year: int) -> str:
    """Read a year as spoken: 1905 "nineteen oh five", 1900 "nineteen hundred", 2005 "two thousand five"."""
    century, rest = divmod(year, 100)
    if not 1000 <= year <= 9999 or (century % 10 == 0 and rest < 10):
        return _cardinal(year)
    if rest == 0:
        return f"{_cardinal(century)} hundred"
    if rest < 10:
        return f"{_cardinal(century)} oh {_ONES[rest]}"
    return f"{_cardinal(century)} {_cardinal(rest)}"


def _short_year_words(digits: str) -> str:
    """Read a written year of two or four digits ("24", "'05" style "05", "2024")."""
    if len(digits) == 4:
        return _year_words(int(digits))
    return f"oh {_ONES[int(digits[1])]}" if digits[0] == "0" else _cardinal(int(digits))


def _is_year_number(digits: str) -> bool:
    return len(digits) == 4 and 1100 <= int(digits) <= 2099


# -- context helpers ------------------------------------------------------------------------------------

_CONTEXT_CHARS = 40
_TRAILING_CLOSERS = re.compile(r"[\"')\]]*")


def _previous_token(text: str, index: int) -> tuple[str, bool]:
    """The space-delimited token before `index` (hyphens trimmed) and whether it begins a sentence.

    It looks back a bounded number of characters, so a call costs O(1) however long the text is.
    """
    window = text[max(0, index - _CONTEXT_CHARS) : index].rstrip(" -")
    head, _, token = window.rpartition(" ")
    starts_sentence = (not head and index <= _CONTEXT_CHARS) or head.endswith((".", "!", "?", ":"))
    return token, starts_sentence


def _ends_text(match: re.Match[str]) -> bool:
    """Whether only closing quotes or brackets follow the match: its dot also ends the sentence."""
    return _TRAILING_CLOSERS.fullmatch(match.string, match.end()) is not None


def _with_final_dot(match: re.Match[str], dot: str | None, words: str) -> str:
    """Expansion of a token whose dot was consumed; the dot is put back when it ended the sentence."""
    return words + "." if dot and _ends_text(match) else words


# -- character clean-up ---------------------------------------------------------------------------------

_CHARACTER_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2039": "'",
        "\u203a": "'",
        "\u00b4": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2032": "'",
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2043": "-",
        "\u2212": "-",
        "\u2215": "/",
    }
)
"""Curly quotes, primes and hyphen look-alikes to ASCII (applied before NFKC, which mangles some)."""
_VULGAR_FRACTION = re.compile("[\u00bc-\u00be\u2150-\u215e\u2189]")
_ZERO_WIDTH = frozenset("\u00ad\u200b\u200c\u200d\u2060\ufeff")
"""In-word format characters (soft hyphen, zero-width space/joiners, BOM): removed, not made spaces."""
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_DASH = re.compile(r" ?(?:[\u2012-\u2015\u2e3a\u2e3b]+|(?<=[^\s-])--+(?=[^\s-])|(?<= )--?(?= )) ?")
_CLAUSE_PUNCTUATION = ",;:.!?("


def _spell_vulgar_fraction(match: re.Match[str]) -> str:
    """Spell a vulgar fraction spaced off, so that "1½" becomes "1 1/2" and not NFKC's "11/2"."""
    return " " + unicodedata.normalize("NFKC", match.group()).replace("\u2044", "/") + " "


def _visible(char: str) -> str:
    if char in _ZERO_WIDTH:
        return ""
    return " " if unicodedata.category(char) in _INVISIBLE_CATEGORIES else char


def _replace_dash(match: re.Match[str]) -> str:
    """A dash between digits is a range ("1990–1999"); elsewhere it is a pause, read as a comma."""
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isdecimal() and after.isdecimal():
        return match.group() if match.group() == " - " else "-"
    if not before or not after or before in _CLAUSE_PUNCTUATION:
        return " "
    return ", "


def _clean(text: str) -> str:
    """NFKC, ASCII quotes and hyphens, control/format characters out, single spaces, dashes as pauses.

    Control and format characters (categories Cc, Cf and lone surrogates) become spaces; only the
    zero-width in-word ones are dropped so that words around them stay whole.
    """
    text = _VULGAR_FRACTION.sub(_spell_vulgar_fraction, text.translate(_CHARACTER_MAP))
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():
        text = "".join(map(_visible, text))
    return _DASH.sub(_replace_dash, " ".join(text.split()))


# -- abbreviations --------------------------------------------------------------------------------------

_PLAIN_ABBREVIATIONS = {
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Prof": "Professor",
    "Jr": "Junior",
    "Sr": "Senior",
    "vs": "versus",
    "etc": "et cetera",
    "Etc": "Et cetera",
    "approx": "approximately",
    "Approx": "Approximately",
    "Inc": "Incorporated",
    "Ltd": "Limited",
    "e.g": "for example",
    "E.g": "For example",
    "i.e": "that is",
    "I.e": "That is",
}
"""Always expanded, with or without their dot."""
_MONTH_ABBREVIATIONS = {name[:3]: name for name in _MONTHS if name != "May"} | {"Sept": "September"}
_WEEKDAY_ABBREVIATIONS = {
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Tues": "Tuesday",
    "Wed": "Wednesday",
    "Weds": "Wednesday",
    "Thu": "Thursday",
    "Thur": "Thursday",
    "Thurs": "Thursday",
    "Fri": "Friday",
    "Sat": "Saturday",
    "Sun": "Sunday",
}
_CONTEXT_ABBREVIATIONS = ("Dr", "St", "Co", "No", "no")
_ABBREVIATION = re.compile(
    r"(?<![^\W\d])(?<!\.)(?P<word>"
    + "|".join(
        re.escape(word)
        for word in sorted(
            [*_PLAIN_ABBREVIATIONS, *_MONTH_ABBREVIATIONS, *_WEEKDAY_ABBREVIATIONS, *_CONTEXT_ABBREVIATIONS],
            key=len,
            reverse=True,
        )
    )
    + r")(?P<dot>\.)?(?![^\W\d])"
)
"""A known abbreviation as a whole word (digits may touch it: "No.5", "Mr2"), with its dot if any."""
_MONTH_NAMES = "|".join(_MONTHS)
_DIGIT_AHEAD = re.compile(r" ?[0-9]")
_DATE_AHEAD = re.compile(rf",? ?(?:[0-9]|(?:{_MONTH_NAMES}|{'|'.join(_MONTH_ABBREVIATIONS)})\b)")
_NAME_AHEAD = re.compile(r" [A-Z]")
_PLACE_NAME = re.compile(r"[A-Z][a-z]+|[0-9]+(?:st|nd|rd|th)")


def _after_place_name(match: re.Match[str]) -> bool:
    """Whether a street word ("Baker St", "5th St") precedes the match, rather than a sentence start."""
    token, starts_sentence = _previous_token(match.string, match.start())
    return _PLACE_NAME.fullmatch(token) is not None and not (starts_sentence and token[0].isalpha())


def _expand_abbreviation(word: str, dot: str | None, match: re.Match[str]) -> str | None:
    """The expansion of one abbreviation in its context, or None when it is not one here."""
    text, end = match.string, match.end()
    if word in _PLAIN_ABBREVIATIONS:
        return _PLAIN_ABBREVIATIONS[word]
    if word in _MONTH_ABBREVIATIONS:
        return _MONTH_ABBREVIATIONS[word] if dot or _DIGIT_AHEAD.match(text, end) else None
    if word in _WEEKDAY_ABBREVIATIONS:
        return _WEEKDAY_ABBREVIATIONS[word] if dot or _DATE_AHEAD.match(text, end) else None
    if word in ("No", "no"):
        return "number" if (dot or word == "No") and _DIGIT_AHEAD.match(text, end) else None
    if word == "Co":
        return "Company" if dot or _previous_token(text, match.start())[0] == "&" else None
    name_follows = _NAME_AHEAD.match(text, end) is not None
    if word == "St":
        return "Saint" if name_follows and not _after_place_name(match) else "Street"
    return "Drive" if _after_place_name(match) and not name_follows else "Doctor"  # word == "Dr"


def _render_abbreviation(match: re.Match[str]) -> str | None:
    expansion = _expand_abbreviation(match["word"], match["dot"], match)
    return None if expansion is None else _with_final_dot(match, match["dot"], expansion)


# -- dates and times ------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"(?<![0-9-])(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})(?![0-9])")
_SLASH_DATE = re.compile(
    r"(?<![0-9/])(?P<first>[0-9]{1,2})/(?P<second>[0-9]{1,2})/(?P<year>[0-9]{4}|[0-9]{2})(?![0-9/])"
)
_MONTH_DAY_DATE = re.compile(
    rf"\b(?P<month>{_MONTH_NAMES}) (?P<day>[0-9]{{1,2}})(?:st|nd|rd|th)?(?!\w)"
    r"(?:,? (?P<year>[0-9]{4})(?![0-9]))?"
)
_DAY_MONTH_DATE = re.compile(
    rf"(?<![0-9])(?P<day>[0-9]{{1,2}})(?:st|nd|rd|th)? (?:of )?(?P<month>{_MONTH_NAMES})\b"
    r"(?:,? (?P<year>[0-9]{4})(?![0-9]))?"
)


def _date_words(month: int, day: int, year: str | None, day_first: bool = False) -> str | None:
    """Read a date as "March fifth, twenty twenty-four" (or "the fifth of March, ..."); None if impossible."""
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return None
    name, day_words = _MONTHS[month - 1], _ordinal(_cardinal(day))
    words = f"the {day_words} of {name}" if day_first else f"{name} {day_words}"
    return f"{words}, {_short_year_words(year)}" if year else words


def _render_iso_date(match: re.Match[str]) -> str | None:
    return _date_words(int(match["month"]), int(match["day"]), match["year"])


def _render_slash_date(match: re.Match[str]) -> str | None:
    """Month first (US) unless the first field cannot be a month, as in "25/12/2024"."""
    first, second = int(match["first"]), int(match["second"])
    if first <= 12:
        return _date_words(first, second, match["year"])
    return _date_words(second, first, match["year"], day_first=True)


def _render_month_day_date(match: re.Match[str]) -> str | None:
    return _date_words(_MONTHS.index(match["month"]) + 1, int(match["day"]), match["year"])


def _render_day_month_date(match: re.Match[str]) -> str | None:
    words = _date_words(_MONTHS.index(match["month"]) + 1, int(match["day"]), match["year"], day_first=True)
    if words is not None and _previous_token(match.string, match.start())[0].lower() == "the":
        return words.removeprefix("the ")
    return words


_MERIDIEM = r"(?P<meridiem>[AaPp]\.?[Mm]\.?)(?!\w)"
_CLOCK_TIME = re.compile(
    r"(?<![0-9:.])(?P<hour>[0-9]{1,2}):(?P<minute>[0-5][0-9])(?::(?P<second>[0-5][0-9]))?(?![0-9:])"
    rf"(?: ?{_MERIDIEM})?"
)
_HOUR_MERIDIEM = re.compile(rf"(?<![0-9:.])(?P<hour>[0-9]{{1,2}}) ?{_MERIDIEM}")


def _time_words(match: re.Match[str], hour: int, minute: int, second: int) -> str | None:
    """Read a clock time: "three forty-five PM", "fifteen thirty", "twelve o'clock"; None if impossible."""
    meridiem = match["meridiem"]
    if hour > 24 or (meridiem and not 1 <= hour <= 12):
        return None
    words = [_cardinal(hour)]
    if minute:
        words.append(f"oh {_ONES[minute]}" if minute < 10 else _cardinal(minute))
    elif not meridiem:
        words.append("o'clock" if 1 <= hour <= 12 else "hundred")
    if second:
        words.append(f"and {_cardinal(second)} second" + ("s" if second > 1 else ""))
    if meridiem:
        words.append("AM" if meridiem[0] in "Aa" else "PM")  # espeak-ng reads "a m" as the article "a"
    return _with_final_dot(match, meridiem if meridiem and meridiem.endswith(".") else None, " ".join(words))


def _render_clock_time(match: re.Match[str]) -> str | None:
    return _time_words(match, int(match["hour"]), int(match["minute"]), int(match["second"] or 0))


def _render_hour_meridiem(match: re.Match[str]) -> str | None:
    return _time_words(match, int(match["hour"]), 0, 0)


_COLON_NUMBERS = re.compile(r"(?<![0-9:.])[0-9]+(?::[0-9]+)+(?![0-9:])")
"""Numbers joined by colons that are not a clock time ("25:61", "3:1", "John 3:16:2")."""


def _render_colon_numbers(match: re.Match[str]) -> str:
    """Read each number, the colon as a separator: "25:61" -> "twenty-five sixty-one" (espeak-ng would say
    "colon"), as a listener hears a score, a verse or a ratio read aloud."""
    return " ".join(map(_integer_words, match.group().split(":")))


# -- money, quantities and digit groups -----------------------------------------------------------------

_NUMBER = r"(?P<integer>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.(?P<fraction>[0-9]+))?"
"""An integer (optionally with thousands commas) and an optional decimal part; used inside patterns."""
_MINUS = r"(?:(?<![\w.-])(?P<minus>-))?"
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "sen", "sen"),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}
_SCALE_WORDS = {
    "k": "thousand",
    "m": "million",
    "mn": "million",
    "b": "billion",
    "bn": "billion",
    "t": "trillion",
    "tn": "trillion",
}
_CURRENCY = re.compile(
    rf"{_MINUS}(?P<symbol>[$£€¥₹]) ?{_NUMBER}"
    r"(?: (?P<scale>(?i:thousand|million|billion|trillion))\b|(?P<short_scale>(?i:bn|mn|tn|[kmbt]))(?!\w))?"
)
_DECADE = re.compile(r"(?P<apostrophe>')?(?<![0-9])(?P<digits>1[1-9][0-9]0|20[0-9]0|[1-9]0|1000?)'?s(?!\w)")
_DECADE_CUES = frozenset({"the", "early", "late", "mid", "and", "or", "to"})
_ROUND_PLURALS = {"100": "hundreds", "1000": "thousands"}
_ORDINAL_NUMBER = re.compile(r"(?<![0-9])(?P<integer>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?i:st|nd|rd|th)(?!\w)")
_VERSION = re.compile(
    r"(?:(?<![\w.])(?P<prefix>v)(?=[0-9]))?(?<![0-9.])(?P<groups>[0-9]+(?:\.[0-9]+){2,})(?![0-9])"
)
_DASHED_DIGITS = re.compile(
    r"(?<![\w.,-])(?:\((?P<area>[0-9]{3})\) ?)?(?P<groups>[0-9]+(?:-[0-9]+)+)(?![\w-]|\.[0-9])"
)
_FRACTION = re.compile(
    r"(?<![0-9/.])(?:(?P<whole>[0-9]+) )?(?P<numerator>[0-9]+)/(?P<denominator>[24])(?![0-9/]|\.[0-9])"
)
_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "l": ("liter", "liters"),
    "L": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "ft": ("foot", "feet"),
    "in": ("inch", "inches"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "ms": ("millisecond", "milliseconds"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "%": ("percent", "percent"),
    "¢": ("cent", "cents"),
}
_MEASURE = re.compile(
    rf"{_MINUS}(?<![0-9./]){_NUMBER}(?P<space> )?(?P<unit>"
    + "|".join(re.escape(unit) for unit in sorted(_UNITS, key=len, reverse=True))
    + r")(?!\w)"
)
_WORD_AHEAD = re.compile(r" \w")


def _render_currency(match: re.Match[str]) -> str:
    """Read money: "$3.50" -> "three dollars and fifty cents", "$1.2bn" -> "one point two billion dollars"."""
    one, many, one_cent, many_cents = _CURRENCIES[match["symbol"]]
    integer, fraction = match["integer"], match["fraction"]
    scale = match["scale"] or match["short_scale"]
    minus = "minus " if match["minus"] else ""
    if scale:
        scale = _SCALE_WORDS.get(scale.lower(), scale.lower())
        return f"{minus}{_number_words(integer, fraction)} {scale} {many}"
    if (fraction and len(fraction) > 2) or len(integer.replace(",", "")) > _MAX_CARDINAL_DIGITS:
        return f"{minus}{_number_words(integer, fraction)} {many}"
    units, cents = int(integer.replace(",", "")), int((fraction or "0").ljust(2, "0"))
    parts = []
    if units or not cents:
        parts.append(f"{_cardinal(units)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{_cardinal(cents)} {one_cent if cents == 1 else many_cents}")
    return minus + " and ".join(parts)


def _render_decade(match: re.Match[str]) -> str | None:
    """Read "1990s" as "nineteen nineties", "100s" as "hundreds", and "80s" as "eighties" after an
    apostrophe or a word such as "the" or "early" (elsewhere "80s" is eighty seconds)."""
    digits = match["digits"]
    if digits in _ROUND_PLURALS:
        return _ROUND_PLURALS[digits]
    if len(digits) == 4:
        return _plural(_year_words(int(digits)))
    if match["apostrophe"] or _previous_token(match.string, match.start())[0].lower() in _DECADE_CUES:
        return _plural(_cardinal(int(digits)))
    return None


def _render_ordinal(match: re.Match[str]) -> str:
    return _ordinal(_integer_words(match["integer"]))


def _render_version(match: re.Match[str]) -> str:
    """Read a version, "3.10.2" -> "three point ten point two"; a dotted quad (IP address) digit by digit."""
    groups = match["groups"].split(".")
    if not match["prefix"] and len(groups) == 4 and all(len(group) <= 3 for group in groups):
        return " dot ".join(map(_digit_words, groups))
    words = " point ".join(map(_integer_words, groups))
    return f"version {words}" if match["prefix"] else words


def _range_end_words(digits: str) -> str:
    return _year_words(int(digits)) if _is_year_number(digits) else _integer_words(digits)


def _render_dashed_digits(match: re.Match[str]) -> str:
    """Two short groups are a range ("5-10" -> "five to ten"); phone-like groups are read digit by digit."""
    groups = match["groups"].split("-")
    phone_like = match["area"] or len(groups) > 2 or [len(group) for group in groups] == [3, 4]
    if not phone_like and all(len(group) <= 4 for group in groups):
        return " to ".join(map(_range_end_words, groups))
    return ", ".join(_digit_words(group) for group in [match["area"] or "", *groups] if group)


def _render_fraction(match: re.Match[str]) -> str:
    """Halves and quarters by name ("3/4" -> "three quarters"); other fractions are read "a over b"."""
    numerator = match["numerator"]
    singular, plural = ("half", "halves") if match["denominator"] == "2" else ("quarter", "quarters")
    words = f"{_integer_words(numerator)} {singular if numerator == '1' else plural}"
    return f"{_integer_words(match['whole'])} and {words}" if match["whole"] else words


def _render_measure(match: re.Match[str]) -> str | None:
    """A number and its unit ("5 km" -> "five kilometers"); "in" only where it cannot be the word "in"."""
    unit = match["unit"]
    if unit == "in" and match["space"] and _WORD_AHEAD.match(match.string, match.end()):
        return None
    singular, plural = _UNITS[unit]
    integer, fraction = match["integer"], match["fraction"]
    words = f"{_number_words(integer, fraction)} {singular if integer == '1' and not fraction else plural}"
    return f"minus {words}" if match["minus"] else words


# -- symbols and plain numbers --------------------------------------------------------------------------

_SYMBOL_WORDS = {
    "&": "and",
    "+": "plus",
    "=": "equals",
    "==": "equals",
    "@": "at",
    "×": "times",
    "~": "about",
    "<": "less than",
    ">": "greater than",
    "<=": "less than or equal to",
    "≤": "less than or equal to",
    ">=": "greater than or equal to",
    "≥": "greater than or equal to",
    "!=": "not equal to",
    "≠": "not equal to",
    "%": "percent",
    "°": "degrees",
    "#": "number",
    "/": "over",
}
_SYMBOL = re.compile(r"<=|>=|!=|==|[&+=@×~<>≤≥≠%°]|#(?=[0-9])|(?<=[0-9])/(?=[0-9])")
_PLAIN_NUMBER = re.compile(rf"{_MINUS}(?<![0-9]){_NUMBER}|(?<![\w.])\.(?P<bare_fraction>[0-9]+)")
_YEAR_CUES = frozenset(
    {"in", "since", "from", "until", "till", "by", "of", "circa", "during", "before", "after", "year", "born"}
)
_COUNTED_NOUN_AHEAD = re.compile(r" (?:[a-z]*[^\W\dsuia_]s|people|men|women|children|feet|teeth)\b")
"""A plural noun after a number ("1500 votes", "2020 people") makes it a quantity, not a year."""


def _render_symbol(match: re.Match[str]) -> str:
    return _SYMBOL_WORDS[match.group()]


def _looks_like_year(match: re.Match[str]) -> bool:
    if _previous_token(match.string, match.start())[0].lower() in _YEAR_CUES:
        return True
    return _COUNTED_NOUN_AHEAD.match(match.string, match.end()) is None


def _render_plain_number(match: re.Match[str]) -> str:
    """Cardinals, negatives and decimals; a bare 1100-2099 reads as a year unless it counts something."""
    if match["bare_fraction"]:
        return f"point {_digit_words(match['bare_fraction'])}"
    integer, fraction = match["integer"], match["fraction"]
    if not match["minus"] and not fraction and _is_year_number(integer) and _looks_like_year(match):
        return _year_words(int(integer))
    words = _number_words(integer, fraction)
    return f"minus {words}" if match["minus"] else words


# -- the pipeline ---------------------------------------------------------------------------------------

_Render = Callable[[re.Match[str]], str | None]
_PASSES: tuple[tuple[re.Pattern[str], _Render], ...] = (
    (_ABBREVIATION, _render_abbreviation),
    (_ISO_DATE, _render_iso_date),
    (_SLASH_DATE, _render_slash_date),
    (_MONTH_DAY_DATE, _render_month_day_date),
    (_DAY_MONTH_DATE, _render_day_month_date),
    (_CLOCK_TIME, _render_clock_time),
    (_HOUR_MERIDIEM, _render_hour_meridiem),
    (_COLON_NUMBERS, _render_colon_numbers),
    (_CURRENCY, _render_currency),
    (_DECADE, _render_decade),
    (_ORDINAL_NUMBER, _render_ordinal),
    (_VERSION, _render_version),
    (_DASHED_DIGITS, _render_dashed_digits),
    (_FRACTION, _render_fraction),
    (_MEASURE, _render_measure),
    (_SYMBOL, _render_symbol),
    (_PLAIN_NUMBER, _render_plain_number),
)
"""Most specific first: each pass only sees digits and symbols that the passes before it left."""


def _apply(text: str, pattern: re.Pattern[str], render: _Render) -> str:
    """Replace every match by its rendering, spaced off from letters or digits it would otherwise touch."""

    def replace(match: re.Match[str]) -> str:
        words = render(match)
        if words is None:
            return match.group()
        start, end = match.start(), match.end()
        before = " " if start and text[start - 1].isalnum() else ""
        after = " " if end < len(text) and text[end].isalnum() else ""
        return before + words + after

    return pattern.sub(replace, text)


def normalize(text: str) -> str:
    """Rewrite one English sentence of raw text as words that espeak-ng (en-us) reads correctly.

    Numbers, ordinals, years, dates, times, money, percentages, units, fractions, common abbreviations and
    symbols become words; anything else (words, unknown abbreviations, other scripts) is kept, because
    espeak-ng reads words itself. The result is NFKC, has no control characters, single spaces and no
    leading or trailing space. Never raises, and runs in time linear in len(text).
    """
    text = _clean(text)
    for pattern, render in _PASSES:
        text = _apply(text, pattern, render)
    return " ".join(text.split())


# -- SSML <say-as> --------------------------------------------------------------------------------------

SAY_AS_KINDS = ("characters", "spell-out", "cardinal", "number", "ordinal", "date", "telephone")
"""The `interpret-as` values `say_as` reads ("number" is Amazon's name for "cardinal")."""
DATE_FORMATS = ("mdy", "dmy", "ymd", "md", "dm", "y")
_SIGNED_NUMBER = re.compile(rf"(?P<minus>-)?{_NUMBER}")
_ORDINAL_CONTENT = re.compile(r"(?P<integer>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?i:st|nd|rd|th)?")
_DATE_FIELD_SEPARATOR = re.compile(r"[-/.]")
_TELEPHONE = re.compile(r"\+?[0-9 ()./-]*[0-9][0-9 ()./-]*")
_DIGIT_GROUP = re.compile(r"[0-9]+")


def _spell(text: str) -> str:
    """Letters and digits one by one: "R2d2" -> "R- two- D- two". espeak-ng reads a capital followed by a
    hyphen as the letter's name; without the hyphen it reads "A" before a word as the article."""
    items = [_ONES[int(char)] if char in "0123456789" else char.upper() for char in text if char.isalnum()]
    if not items:
        raise ValueError("it has no letters or digits to spell")
    return "- ".join(items)


def _say_date(text: str, date_format: str | None) -> str:
    fields = _DATE_FIELD_SEPARATOR.split(text)
    if date_format is None:
        date_format = "ymd" if len(fields[0]) == 4 else "mdy"
    if date_format not in DATE_FORMATS:
        raise ValueError(f"format '{date_format}' is not one of {', '.join(DATE_FORMATS)}")
    if len(fields) != len(date_format) or not all(field.isascii() and field.isdecimal() for field in fields):
        raise ValueError(f"'{text}' is not a date of the form {date_format}")
    parts = dict(zip(date_format, fields, strict=True))
    year = parts.get("y")
    if year is not None and len(year) not in (2, 4):
        raise ValueError(f"year '{year}' has neither 2 nor 4 digits")
    if year is not None and len(parts) == 1:
        return _short_year_words(year)
    words = _date_words(int(parts["m"]), int(parts["d"]), year, day_first=date_format.startswith("d"))
    if words is None:
        raise ValueError(f"'{text}' is not a date of the form {date_format}")
    return words


def say_as(interpret_as: str, text: str, date_format: str | None = None) -> str:
    """The words an SSML <say-as> element stands for; raises ValueError, saying why, when the content is not
    of that kind (a cardinal that is not a number, a date that does not exist)."""
    text = text.strip()
    if interpret_as in ("characters", "spell-out"):
        return _spell(text)
    if interpret_as in ("cardinal", "number"):
        if (match := _SIGNED_NUMBER.fullmatch(text)) is None:
            raise ValueError(f"'{text}' is not a number")
        words = _number_words(match["integer"], match["fraction"])
        return f"minus {words}" if match["minus"] else words
    if interpret_as == "ordinal":
        if (match := _ORDINAL_CONTENT.fullmatch(text)) is None:
            raise ValueError(f"'{text}' is not an ordinal number")
        return _ordinal(_integer_words(match["integer"]))
    if interpret_as == "date":
        return _say_date(text, date_format)
    if interpret_as == "telephone":
        if _TELEPHONE.fullmatch(text) is None:
            raise ValueError(f"'{text}' is not a telephone number")
        groups = ", ".join(map(_digit_words, _DIGIT_GROUP.findall(text)))
        return f"plus {groups}" if text.startswith("+") else groups
    raise ValueError(f"interpret-as '{interpret_as}' is not one of {', '.join(SAY_AS_KINDS)}")
