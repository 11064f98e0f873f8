"""normalize(): exact expansions per category, and properties that hold for any input."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.normalize import normalize

CASES = {
    "cardinals": [
        ("7", "seven"),
        ("0", "zero"),
        ("42", "forty-two"),
        ("100", "one hundred"),
        ("1,234,567", "one million two hundred thirty-four thousand five hundred sixty-seven"),
        ("3000000000", "three billion"),
        ("2,000,000,000,001", "two trillion one"),
        (
            "999999999999999",
            "nine hundred ninety-nine trillion nine hundred ninety-nine billion nine hundred ninety-nine"
            " million nine hundred ninety-nine thousand nine hundred ninety-nine",
        ),
        ("1234567890123456", "one two three four five six seven eight nine zero one two three four five six"),
        ("-5", "minus five"),
        ("It was -12 outside", "It was minus twelve outside"),
        ("3.14", "three point one four"),
        ("0.5 and .5", "zero point five and point five"),
        ("1,234.56", "one thousand two hundred thirty-four point five six"),
        ("007", "zero zero seven"),
        ("COVID-19 on an A4 sheet", "COVID-nineteen on an A four sheet"),
    ],
    "ordinals": [
        ("1st", "first"),
        ("2nd", "second"),
        ("3rd", "third"),
        ("11th", "eleventh"),
        ("12th", "twelfth"),
        ("22nd", "twenty-second"),
        ("103rd", "one hundred third"),
        ("1,000,000th", "one millionth"),
        ("the 40th day", "the fortieth day"),
    ],
    "years": [
        ("1999", "nineteen ninety-nine"),
        ("2005", "two thousand five"),
        ("1905", "nineteen oh five"),
        ("2010", "twenty ten"),
        ("1900", "nineteen hundred"),
        ("2000", "two thousand"),
        ("In 1999 I was born.", "In nineteen ninety-nine I was born."),
        ("She sold 1500 tickets.", "She sold one thousand five hundred tickets."),
        ("1999 people came in 2020", "one thousand nine hundred ninety-nine people came in twenty twenty"),
        ("from 1990 to 1999", "from nineteen ninety to nineteen ninety-nine"),
        ("1,999", "one thousand nine hundred ninety-nine"),
        ("2100", "two thousand one hundred"),
        ("1990s", "nineteen nineties"),
        ("the 2000s and 1800s", "the two thousands and eighteen hundreds"),
        ("the 80s, '70s and mid-60s", "the eighties, seventies and mid-sixties"),
        ("100s of people", "hundreds of people"),
    ],
    "dates": [
        ("2024-03-05", "March fifth, twenty twenty-four"),
        ("03/05/2024", "March fifth, twenty twenty-four"),
        ("25/12/2024", "the twenty-fifth of December, twenty twenty-four"),
        ("March 5, 2024", "March fifth, twenty twenty-four"),
        ("March 5 2024", "March fifth, twenty twenty-four"),
        ("5 March 2024", "the fifth of March, twenty twenty-four"),
        ("on the 5th of March", "on the fifth of March"),
        ("May 1st", "May first"),
        ("Jan. 5, 1905", "January fifth, nineteen oh five"),
        ("in May 2024", "in May twenty twenty-four"),
        ("2024-13-45", "two zero two four, one three, four five"),
    ],
    "times": [
        ("3:45 pm", "three forty-five PM"),
        ("3:45pm", "three forty-five PM"),
        ("3:45 PM", "three forty-five PM"),
        ("15:30", "fifteen thirty"),
        ("9 a.m.", "nine AM."),
        ("at 9 a.m. sharp", "at nine AM sharp"),
        ("9am", "nine AM"),
        ("5pm", "five PM"),
        ("9 p.m. today", "nine PM today"),
        ("12:00", "twelve o'clock"),
        ("3:05", "three oh five"),
        ("18:00", "eighteen hundred"),
        ("12:30:45", "twelve thirty and forty-five seconds"),
    ],
    "numbers joined by colons that are not a time": [
        ("25:61", "twenty-five sixty-one"),
        ("25:30", "twenty-five thirty"),
        ("the score was 3:1", "the score was three one"),
        ("12:30:99", "twelve thirty ninety-nine"),
        ("Note: 5", "Note: five"),
    ],
    "currency": [
        ("$3.50", "three dollars and fifty cents"),
        ("$1", "one dollar"),
        ("$0.50", "fifty cents"),
        ("$1.01", "one dollar and one cent"),
        ("$100.00", "one hundred dollars"),
        ("$1,000", "one thousand dollars"),
        ("£20", "twenty pounds"),
        ("£0.05", "five pence"),
        ("€5.99", "five euros and ninety-nine cents"),
        ("¥100", "one hundred yen"),
        ("$1.2 million", "one point two million dollars"),
        ("$5bn", "five billion dollars"),
        ("$5B", "five billion dollars"),
        ("$3k", "three thousand dollars"),
        ("-$5", "minus five dollars"),
        ("$1.234", "one point two three four dollars"),
        ("50¢", "fifty cents"),
    ],
    "percentages": [
        ("45%", "forty-five percent"),
        ("3.5%", "three point five percent"),
        ("-2 %", "minus two percent"),
        ("100% sure", "one hundred percent sure"),
    ],
    "abbreviations": [
        ("Mr. Smith and Mrs Jones", "Mister Smith and Missus Jones"),
        ("Ms. Lee met Dr. Who", "Miz Lee met Doctor Who"),
        ("Dr Smith lives on Sunset Dr.", "Doctor Smith lives on Sunset Drive."),
        ("St. Louis is on Baker St", "Saint Louis is on Baker Street"),
        ("Visit St Paul on 5th St.", "Visit Saint Paul on fifth Street."),
        ("Martin Luther King Jr. and Sr.", "Martin Luther King Junior and Senior."),
        ("Prof. X", "Professor X"),
        ("cats vs dogs vs. mice", "cats versus dogs versus mice"),
        ("apples, pears, etc.", "apples, pears, et cetera."),
        ("e.g. this, i.e. that", "for example this, that is that"),
        ("approx. 5", "approximately five"),
        ("Apple Inc. and Foo Ltd", "Apple Incorporated and Foo Limited"),
        ("Smith & Co. and Jones & Co", "Smith and Company and Jones and Company"),
        ("No. 5 and no. 7 and No 9", "number five and number seven and number nine"),
        ("No way, no.", "No way, no."),
        ("Mon. Jan. 5", "Monday January fifth"),
        ("Tue, Feb 3", "Tuesday, February third"),
        ("Sun is hot in Jan", "Sun is hot in Jan"),
        ("Sept. 9", "September ninth"),
    ],
    "units": [
        ("5 km", "five kilometers"),
        ("5km", "five kilometers"),
        ("1 km", "one kilometer"),
        ("1.5 kg", "one point five kilograms"),
        ("3 cm 2 mm 10 m 5 g", "three centimeters two millimeters ten meters five grams"),
        ("60 mph and 100 km/h", "sixty miles per hour and one hundred kilometers per hour"),
        ("5 ml and 2 l", "five milliliters and two liters"),
        ("20°C and 70 °F", "twenty degrees Celsius and seventy degrees Fahrenheit"),
        ("6 ft and 1 ft", "six feet and one foot"),
        ("The box is 12 in.", "The box is twelve inches."),
        ("12in wide", "twelve inches wide"),
        ("born in 1999 in Paris", "born in nineteen ninety-nine in Paris"),
        ("1 in 10 people", "one in ten people"),
        ("1 lb, 3 lbs, 8 oz", "one pound, three pounds, eight ounces"),
        ("2 h 3 hr 5 min", "two hours three hours five minutes"),
        ("30 s, 10 sec, 200 ms", "thirty seconds, ten seconds, two hundred milliseconds"),
        (
            "4 GB 512 MB 64 KB 2 TB",
            "four gigabytes five hundred twelve megabytes sixty-four kilobytes two terabytes",
        ),
        (
            "3.2 GHz 100 MHz 1 kHz 60 Hz",
            "three point two gigahertz one hundred megahertz one kilohertz sixty hertz",
        ),
        ("-5 °C", "minus five degrees Celsius"),
    ],
    "symbols": [
        ("A & B", "A and B"),
        ("3+4=7", "three plus four equals seven"),
        ("me @ home", "me at home"),
        ("#1 fan", "number one fan"),
        ("#hashtag", "#hashtag"),
        ("a 90° angle", "a ninety degrees angle"),
        ("3 × 4", "three times four"),
        ("~20 items", "about twenty items"),
        ("3 < 4 > 2", "three less than four greater than two"),
        ("x >= 5 and y != 4", "x greater than or equal to five and y not equal to four"),
    ],
    "fractions": [
        ("1/2", "one half"),
        ("3/4", "three quarters"),
        ("1/4", "one quarter"),
        ("3/2", "three halves"),
        ("2 1/2 cups", "two and one half cups"),
        ("5/7", "five over seven"),
        ("1/3", "one over three"),
        ("1½ cups and ½ cup", "one and one half cups and one half cup"),
    ],
    "digit groups": [
        ("3.10.2", "three point ten point two"),
        ("v2.0.1", "version two point zero point one"),
        ("192.168.0.1", "one nine two dot one six eight dot zero dot one"),
        ("555-1234", "five five five, one two three four"),
        ("(555) 123-4567", "five five five, one two three, four five six seven"),
        ("555-123-4567", "five five five, one two three, four five six seven"),
        ("pages 5-10", "pages five to ten"),
        ("1990–1999", "nineteen ninety to nineteen ninety-nine"),
    ],
    "cleanup": [
        ("\u201cHello\u201d \u2014 \u2018world\u2019 \u2013 done", "\"Hello\", 'world', done"),
        ("word--word", "word, word"),
        ("  many   spaces\n\tand\r\nlines  ", "many spaces and lines"),
        ("a\x00b\x07c", "a b c"),
        ("zero\u200bwidth soft\u00adhyphen", "zerowidth softhyphen"),
        ("lone\ud800surrogate", "lone surrogate"),
        ("\uff26\uff55\uff4c\uff4c width \ufb01ne", "Full width fine"),
        ("x\u00b2", "x two"),
        ("Wait\u2026", "Wait..."),
        ("", ""),
        ("hello, world!", "hello, world!"),
        ("Ça va très bien", "Ça va très bien"),
        ("日本語のテキスト", "日本語のテキスト"),
    ],
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(raw, expected, id=f"{category}: {raw[:30]}")
        for category, cases in CASES.items()
        for raw, expected in cases
    ],
)
def test_expands(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def _espeak_phonemes(text: str) -> list[str]:
    return [phoneme.name.lstrip("',") for phoneme in Espeak.get().synthesize(text).phonemes]


@pytest.mark.parametrize(
    ("raw", "letter"), [("9 a.m.", "eI"), ("at 9am sharp", "eI"), ("9 A.M.", "eI"), ("5 p.m. today", "i:")]
)
def test_meridiem_is_read_as_its_letters(raw: str, letter: str) -> None:
    """ "nine a m" made espeak-ng say the article ("a#"); the fix must sound "ay em" / "pee em"."""
    phonemes = _espeak_phonemes(normalize(raw))
    assert "a#" not in phonemes
    start = phonemes.index(letter)
    assert phonemes[start + 1 : start + 3] in (["E", "m"], [";", "E"])


@pytest.mark.parametrize("raw", ["25:61", "the score was 3:1", "12:30:99"])
def test_numbers_joined_by_colons_are_not_read_with_the_word_colon(raw: str) -> None:
    """espeak-ng reads a colon between words as "colon" ("k 'oU l @ n")."""
    phonemes = _espeak_phonemes(normalize(raw))
    assert ["k", "oU", "l", "@", "n"] not in [phonemes[i : i + 5] for i in range(len(phonemes))]


ADVERSARIAL = [
    "1" * 100_000,
    "1," * 50_000,
    "1." * 50_000,
    "1-" * 50_000,
    "1/" * 50_000,
    "1:" * 50_000,
    "$1" * 50_000,
    "Mr. " * 25_000,
    "St " * 33_333,
    "9am " * 25_000,
    "\n" * 100_000,
    "\x00\u200b" * 50_000,
    "a" * 100_000,
    "12:30 pm on 2024-03-05, $3.50 for 1st 1999 Mr. 5 km 3/4 e.g. 45% " * 1_500,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda text: repr(text[:12]))
def test_100k_character_inputs(text: str) -> None:
    result = normalize(text)
    assert isinstance(result, str)
    assert not any(char in string.digits for char in result)


def _is_clean(text: str) -> bool:
    return (
        text == text.strip()
        and "  " not in text
        and all(unicodedata.category(char) not in ("Cc", "Cf", "Cs") for char in text)
    )


TOKENS = [
    *"0123456789.,:;-/$£€¥%'()#&+=@~<>°½— \n",
    "1999",
    "2024",
    "12345678901234567",
    "th",
    "st",
    "s",
    "am",
    "p.m.",
    "km",
    "in",
    "m",
    "bn",
    "Mr",
    "St",
    "Dr",
    "No",
    "Co",
    "March",
    "Jan",
    "Mon",
    "e.g.",
    "v",
    "a",
    "A",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=16).map("".join)
"""Text built from the pieces the passes look for, to reach their edge cases far more often than st.text()."""


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(st.characters(exclude_categories=())), token_soup))
def test_never_raises_and_output_is_clean(text: str) -> None:
    result = normalize(text)
    assert isinstance(result, str)
    assert _is_clean(result)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), token_soup))
def test_every_ascii_digit_is_spoken(text: str) -> None:
    assert not any(char in string.digits for char in normalize(text))


@settings(max_examples=300, deadline=None)
@given(st.text(string.ascii_letters + " "))
def test_idempotent_on_letters_and_spaces(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=100, deadline=None)
@given(st.text(string.ascii_letters + " ", min_size=1).filter(str.strip))
def test_plain_words_are_kept(text: str) -> None:
    words = [word for word in text.split() if word not in ("Mr", "Mrs", "Ms", "Dr", "St", "Prof", "Jr", "Sr")]
    words = [word for word in words if word not in ("vs", "etc", "Etc", "approx", "Approx", "Inc", "Ltd")]
    assert all(word in normalize(text).split() for word in words)
