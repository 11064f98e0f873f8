"""The SSML subset (issue 14): what each element makes of the sentences; each refusal and its position."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tts_neuron.addon import load_addon
from tts_neuron.errors import TextError
from tts_neuron.frontend import Frontend, Sentence
from tts_neuron.frontend.ssml import MAX_DEPTH, MAX_SSML_CHARS, is_ssml

SHIPPED = Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en"
frontend = Frontend(load_addon(SHIPPED).symbols)


def sentences(text: str, ssml: bool | None = None) -> list[Sentence]:
    return list(frontend.sentences(text, ssml=ssml))


def sounds(text: str) -> list[str]:
    """The phonemes of a text without stress marks, pauses or espeak-ng's linking mark: what is said."""
    return [p.lstrip("',") for s in sentences(text) for p in s.phonemes if not p.startswith("_") and p != ";"]


def speak(body: str) -> str:
    return f"<speak>{body}</speak>"


# -- detection: plain text stays plain text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<speak>Hi</speak>", True),
        ('  \n <speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis">Hi</speak>', True),
        ("<speak/>", True),
        ("<speaker> says hi", False),
        ("Say <speak>hi</speak>", False),
        ("1 < 2 > 0", False),
    ],
)
def test_only_text_that_starts_with_a_speak_element_is_ssml(text: str, expected: bool) -> None:
    assert is_ssml(text) is expected


def test_angle_brackets_in_plain_text_are_read_not_parsed() -> None:
    (sentence,) = sentences("Is 1 < 2 and <b>this</b> bold?")
    assert (
        sentence.text
        == "Is one less than two and less than b greater than this less than/b greater than bold?"
    )
    assert (sentence.rate, sentence.pause_after) == (1.0, 0.0)


def test_ssml_false_reads_a_speak_element_as_plain_text() -> None:
    (sentence,) = sentences(speak("Hi"), ssml=False)
    assert sentence.text.startswith("less than speak greater than")


def test_ssml_true_refuses_text_that_is_not_ssml() -> None:
    with pytest.raises(TextError, match=r"SSML line 1, column 1: malformed"):
        sentences("Hello there.", ssml=True)


# -- what the elements do -------------------------------------------------------------------------------


def test_a_break_ends_the_sentence_and_becomes_its_pause() -> None:
    first, second = sentences(speak('One two <break time="300ms"/> three four.'))
    assert (first.text, first.pause_after) == ("One two", 0.3)
    assert (second.text, second.pause_after) == ("three four.", 0.0)
    assert sounds("One two") + sounds("three four.") == sounds(
        speak('One two <break time="300ms"/> three four.')
    )


@pytest.mark.parametrize(
    ("attributes", "seconds"),
    [
        ('time="1.5s"', 1.5),
        ('time="250ms"', 0.25),
        ('strength="strong"', 0.7),
        ('strength="x-weak"', 0.1),
        ("", 0.4),
    ],
)
def test_break_time_and_strength(attributes: str, seconds: float) -> None:
    (sentence,) = sentences(speak(f"Hello <break {attributes}/>"))
    assert sentence.pause_after == seconds


def test_breaks_in_a_row_add_up_and_a_break_before_any_speech_is_dropped() -> None:
    (sentence,) = sentences(speak('<break time="2s"/>Hello <break time="1s"/><break time="500ms"/>'))
    assert sentence.pause_after == 1.5


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("x-slow", 0.5),
        ("slow", 0.75),
        ("medium", 1.0),
        ("fast", 1.25),
        ("x-fast", 1.5),
        ("80%", 0.8),
        ("1.2", 1.2),
    ],
)
def test_prosody_rate_gives_the_sentence_its_rate(rate: str, expected: float) -> None:
    before, inside, after = sentences(
        speak(f'Before it. <prosody rate="{rate}">Inside it.</prosody> After it.')
    )
    assert (before.rate, inside.rate, after.rate) == (1.0, expected, 1.0)
    assert inside.text == "Inside it."


def test_a_rate_change_mid_sentence_ends_the_sentence_and_an_inner_rate_replaces_the_outer() -> None:
    texts_rates = [
        (s.text, s.rate)
        for s in sentences(
            speak('<prosody rate="slow">one <prosody rate="fast">two</prosody> three</prosody>')
        )
    ]
    assert texts_rates == [("one", 0.75), ("two", 1.25), ("three", 0.75)]


def test_prosody_pitch_and_volume_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        (sentence,) = sentences(speak('<prosody pitch="high" volume="loud">Hello.</prosody>'))
    assert sentence.rate == 1.0
    assert "<prosody pitch> is ignored" in caplog.text and "<prosody volume> is ignored" in caplog.text


@pytest.mark.parametrize("word", ["cat", "Iowa", "go2", "boat"])
def test_say_as_characters_says_each_letter_as_it_is_said_alone(word: str) -> None:
    """Each letter sounds as espeak-ng says it on its own: not the word, and "a" not as the article."""
    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    alone = [p for char in word for p in sounds(digits[int(char)] if char.isdigit() else char)]
    for kind in ("characters", "spell-out"):
        assert sounds(speak(f'<say-as interpret-as="{kind}">{word}</say-as>')) == alone
    assert sounds(word) != alone


@pytest.mark.parametrize(
    ("interpret_as", "content", "plain", "unlike"),
    [
        ("cardinal", "2024", "two thousand twenty-four", "2024"),
        ("cardinal", "-1,234", "minus one thousand two hundred thirty-four", None),
        ("ordinal", "21", "twenty-first", "21"),
        ("ordinal", "3rd", "third", None),
        ("date", "2024-03-05", "March fifth, twenty twenty-four", None),
        ("date", "03/05/2024", "March fifth, twenty twenty-four", None),
        ("telephone", "5551234", "five five five one two three four", "5551234"),
        (
            "telephone",
            "+1 (555) 123-4567",
            "plus one, five five five, one two three, four five six seven",
            None,
        ),
    ],
)
def test_say_as_reads_its_content_as_that_kind(
    interpret_as: str, content: str, plain: str, unlike: str | None
) -> None:
    said = sounds(speak(f'I said <say-as interpret-as="{interpret_as}">{content}</say-as> today.'))
    assert said == sounds(f"I said {plain} today.")
    if unlike is not None:
        assert said != sounds(f"I said {unlike} today.")


def test_say_as_date_format() -> None:
    said = sounds(speak('<say-as interpret-as="date" format="dmy">05.03.2024</say-as>'))
    assert said == sounds("the fifth of March, twenty twenty-four")


def test_sub_says_its_alias() -> None:
    assert sounds(speak('Visit the <sub alias="World Wide Web">WWW</sub>.')) == sounds(
        "Visit the World Wide Web."
    )


def test_phoneme_reads_its_text_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        said = sounds(speak('A <phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme>.'))
    assert said == sounds("A tomato.")
    assert "SSML line 1, column 10: <phoneme> is read as its text 'tomato'" in caplog.text


def test_p_and_s_are_sentence_breaks() -> None:
    texts = [s.text for s in sentences(speak("<p><s>one two</s><s>three four</s></p><p>five six</p>"))]
    assert texts == ["one two", "three four", "five six"]


def test_plain_text_inside_ssml_is_normalised_and_entities_are_read() -> None:
    (sentence,) = sentences(speak("Tom &amp; Jerry at 9am cost $5 &lt;3"))
    assert sentence.text == "Tom and Jerry at nine AM cost five dollars less than three"


def test_amazon_style_document() -> None:
    document = """<?xml version="1.0"?>"""  # a declaration before <speak> is not SSML by our rule
    assert not is_ssml(document)
    document = """
<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
  <p>Your code is <say-as interpret-as="characters">X7</say-as>.<break time="1s"/></p>
  <p><prosody rate="90%">Call <say-as interpret-as="telephone">555-0100</say-as>.</prosody></p>
</speak>"""
    got = [(s.text, s.rate, s.pause_after) for s in sentences(document)]
    assert got == [
        ("Your code is X- seven .", 1.0, 1.0),
        ("Call five five five, zero one zero zero .", 0.9, 0.0),
    ]


# -- refusals, each naming where ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<speak>Hello", r"line 1, column 13: malformed \(no element found\)"),
        ("<speak>\nHello <s>there</speak>", r"line 2, column 17: malformed \(mismatched tag\)"),
        ("<speak>Hi</speak> and more", r"line 1, column 19: malformed \(junk after document element\)"),
        ("<speak>&nbsp;</speak>", r"line 1, column 8: malformed \(undefined entity\)"),
        ("<speak>\n  <emphasis>Hi</emphasis></speak>", r"line 2, column 3: unknown element <emphasis>"),
        ("<speak><speak>Hi</speak></speak>", r"line 1, column 8: <speak> must be the one outermost element"),
        ('<speak><break time="3 seconds"/></speak>', r"column 8: <break time='3 seconds'> is not a time"),
        ('<speak><break time="11s"/></speak>', r"<break time='11s'> is longer than 10s"),
        ('<speak><break strength="huge"/></speak>', r"<break strength='huge'> is not one of none, x-weak"),
        ('<speak><break size="2"/></speak>', r"column 8: <break> has no attribute 'size'"),
        ("<speak><break>Hi</break></speak>", r"column 15: <break> may not hold text"),
        ('<speak><prosody rate="warp">Hi</prosody></speak>', r"<prosody rate='warp'> is not one of x-slow"),
        ('<speak><prosody rate="10%">Hi</prosody></speak>', r"a percentage or a number from 0.25 to 4"),
        ('<speak><prosody rate="-1">Hi</prosody></speak>', r"<prosody rate='-1'>"),
        (
            '<speak><say-as interpret-as="verbatim">Hi</say-as></speak>',
            r"interpret-as 'verbatim' is not one of",
        ),
        (
            '<speak><say-as interpret-as="cardinal">many</say-as></speak>',
            r"column 8: .*'many' is not a number",
        ),
        ('<speak><say-as interpret-as="date">2024-02-30</say-as></speak>', r"not a date of the form ymd"),
        ('<speak><say-as interpret-as="date" format="q">1</say-as></speak>', r"format 'q' is not one of"),
        ('<speak><say-as interpret-as="telephone">call me</say-as></speak>', r"not a telephone number"),
        ('<speak><say-as interpret-as="characters">?!</say-as></speak>', r"no letters or digits to spell"),
        ("<speak><say-as>12</say-as></speak>", r"<say-as> needs a non-empty 'interpret-as'"),
        ('<speak><say-as interpret-as="cardinal"><s>1</s></say-as></speak>', r"may hold only text, not <s>"),
        ('<speak><sub alias="">x</sub></speak>', r"<sub> needs a non-empty 'alias'"),
        ('<speak><phoneme alphabet="arpabet" ph="T AH0">the</phoneme></speak>', r"alphabet> must be one of"),
        ("<speak><phoneme>the</phoneme></speak>", r"<phoneme> needs a non-empty 'ph'"),
        (
            '<speak>\n\n <!DOCTYPE x [<!ENTITY a "b">]>&a;</speak>',
            r"line 3, column 2: <!DOCTYPE is not allowed",
        ),
        ('<speak><!ENTITY a "b"></speak>', r"line 1, column 8: <!ENTITY is not allowed"),
        (
            "<speak>" + "<s>" * MAX_DEPTH + "Hi",
            rf"column {8 + 3 * (MAX_DEPTH - 1)}: .* nested deeper than 16",
        ),
    ],
)
def test_bad_ssml_is_a_text_error_naming_the_position(document: str, message: str) -> None:
    with pytest.raises(
        TextError, match=r"^SSML " + message if message.startswith("line") else message
    ) as err:
        sentences(document)
    assert str(err.value).startswith("SSML line ")


def test_entity_expansion_is_refused_at_once() -> None:
    """The "billion laughs": ten levels of ten entities each would expand to 10**10 copies."""
    levels = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    document = f'<speak><!DOCTYPE speak [<!ENTITY l0 "ha">{levels}]>&l9;</speak>'
    with pytest.raises(TextError, match="<!DOCTYPE is not allowed"):
        sentences(document)


def test_an_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(TextError, match=f"the SSML has 100,001 characters; the limit is {MAX_SSML_CHARS:,}"):
        sentences(speak("a" * (MAX_SSML_CHARS - len(speak("")) + 1)))


@pytest.mark.parametrize("body", ["", "   ", '<break time="1s"/>', "<s>!!!</s>", '<sub alias="...">x</sub>'])
def test_ssml_with_nothing_to_say_is_a_text_error(body: str) -> None:
    with pytest.raises(TextError, match="nothing"):
        sentences(speak(body))
