"""split_sentences() and has_speakable(): exact splits, the max_chars contract, laziness, and properties."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_neuron.addon import load_addon
from tts_neuron.frontend import Frontend
from tts_neuron.frontend.sentences import MAX_SENTENCE_CHARS, has_speakable, split_sentences

SPLITS = [
    ("Hello world. How are you? I'm fine!", ["Hello world.", "How are you?", "I'm fine!"]),
    ("Really?! Yes!!! Wait... Okay… Done", ["Really?!", "Yes!!!", "Wait...", "Okay…", "Done"]),
    ('He said "Stop!" Then silence.', ['He said "Stop!"', "Then silence."]),
    ('"Really?" she asked. (Indeed.) Fine.', ['"Really?" she asked.', "(Indeed.)", "Fine."]),
    (
        "Mr. Smith met Dr. Jones at St. Paul's. They talked.",
        ["Mr. Smith met Dr. Jones at St. Paul's.", "They talked."],
    ),
    (
        "Mrs. Brown, Prof. Green and Ms. White left. Jr. and Sr. stayed.",
        ["Mrs. Brown, Prof. Green and Ms. White left.", "Jr. and Sr. stayed."],
    ),
    (
        "Cats vs. dogs, e.g. pugs, i.e. small ones, etc. are here. Next.",
        ["Cats vs. dogs, e.g. pugs, i.e. small ones, etc. are here.", "Next."],
    ),
    (
        "Acme Inc. and Foo Ltd. and Bar Co. merged. Next.",
        ["Acme Inc. and Foo Ltd. and Bar Co. merged.", "Next."],
    ),
    ("See No. 7 today. I said No. Then left.", ["See No. 7 today.", "I said No.", "Then left."]),
    ("It opens Jan. 5 and closes Dec. 24. Come.", ["It opens Jan. 5 and closes Dec. 24.", "Come."]),
    ("J. R. R. Tolkien wrote it. He died in 1973.", ["J. R. R. Tolkien wrote it.", "He died in 1973."]),
    ("U.S. policy changed. World War I. It ended.", ["U.S. policy changed.", "World War I.", "It ended."]),
    (
        "We met at 5 p.m. and talked. It was 5 p.m. Then we left.",
        ["We met at 5 p.m. and talked.", "It was 5 p.m.", "Then we left."],
    ),
    ("Pi is 3.14 today. Version v2.0.1 is out.", ["Pi is 3.14 today.", "Version v2.0.1 is out."]),
    (
        "Visit example.com or mail a.b@c.org. Run setup.py now.",
        ["Visit example.com or mail a.b@c.org.", "Run setup.py now."],
    ),
    ("Go to http://example.com/a.b. Then leave.", ["Go to http://example.com/a.b.", "Then leave."]),
    ("First paragraph\n\nSecond paragraph", ["First paragraph", "Second paragraph"]),
    ("Chapter 1\nIt begins here.", ["Chapter 1", "It begins here."]),
    ("a line that wraps\nin the middle. Next.", ["a line that wraps\nin the middle.", "Next."]),
    (
        "Items:\n- one\n* two\n• three\n1. four\n2) five",
        ["Items:", "- one", "* two", "• three", "1. four", "2) five"],
    ),
    ("  \n Leading and trailing space.  \n ", ["Leading and trailing space."]),
    ("No end punctuation", ["No end punctuation"]),
    ("...", ["..."]),
    ("", []),
    (" \n\t ", []),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS, ids=[text[:30] for text, _ in SPLITS])
def test_splits(text: str, expected: list[str]) -> None:
    assert list(split_sentences(text)) == expected


LONG_SPLITS = [
    (
        "The meeting ran long, so we postponed the vote; nobody objected to that plan at all.",
        40,
        ["The meeting ran long,", "so we postponed the vote;", "nobody objected to that plan at all."],
    ),
    (
        "We left at dawn — the sky was red — and walked on",
        30,
        ["We left at dawn —", "the sky was red —", "and walked on"],
    ),
    ("one two three four five six seven", 10, ["one two", "three four", "five six", "seven"]),
    ("Supercalifragilistic is long", 10, ["Supercalif", "ragilistic", "is long"]),
    ("a, bcdefghijklmnop", 10, ["a,", "bcdefghijk", "lmnop"]),
    ("e\u0301" * 6, 5, ["e\u0301e\u0301", "e\u0301e\u0301", "e\u0301e\u0301"]),
]


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"), LONG_SPLITS, ids=[t[:20] for t, _, _ in LONG_SPLITS]
)
def test_long_sentences_are_split_at_clauses_then_spaces_then_hard(
    text: str, max_chars: int, expected: list[str]
) -> None:
    assert list(split_sentences(text, max_chars)) == expected


def test_default_limit() -> None:
    assert MAX_SENTENCE_CHARS == 400
    pieces = list(split_sentences("word " * 1000))
    assert all(len(piece) <= MAX_SENTENCE_CHARS for piece in pieces)
    assert max(len(piece) for piece in pieces) > MAX_SENTENCE_CHARS - 5


@pytest.mark.parametrize("max_chars", [0, -1])
def test_rejects_a_limit_below_one(max_chars: int) -> None:
    with pytest.raises(ValueError):
        split_sentences("Hello.", max_chars)


def test_is_lazy_on_a_million_characters() -> None:
    text = "The first sentence is short. " + "word " * 200_000
    sentences = split_sentences(text)
    assert isinstance(sentences, Iterator)
    assert list(itertools.islice(sentences, 1)) == ["The first sentence is short."]


def test_first_piece_of_a_million_character_sentence() -> None:
    text = "x" * 1_000_000
    assert list(itertools.islice(split_sentences(text), 2)) == ["x" * 400, "x" * 400]


def test_100k_character_text() -> None:
    sentence = "Dr. Smith paid $3.50 on Jan. 5, i.e. early; then he left at 3 p.m. and slept! "
    text = sentence * (100_000 // len(sentence) + 1)
    pieces = list(split_sentences(text))
    assert pieces == [sentence.strip()] * text.count("slept!")
    assert list(split_sentences("y " * 50_000, 7))[-1] == "y y y y"


def _without_space(text: str) -> str:
    return "".join(text.split())


sentence_soup = st.lists(
    st.sampled_from(
        [
            *"abcXYZ019 .!?…,;:—-\"')(\n\t",
            "Mr",
            "Dr",
            "No",
            "e.g",
            "a.m",
            "J",
            "U.S",
            "\n\n",
            "\n- ",
            "\u0301",
            " - ",
        ]
    ),
    max_size=60,
).map("".join)
"""Text made of the pieces the splitter decides on, to reach its cases more often than st.text()."""


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), sentence_soup), st.integers(min_value=1, max_value=60))
def test_keeps_every_character_in_order_within_the_limit(text: str, max_chars: int) -> None:
    pieces = list(split_sentences(text, max_chars))
    assert _without_space("".join(pieces)) == _without_space(text)
    for piece in pieces:
        assert piece
        assert piece == piece.strip()
        assert len(piece) <= max_chars


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(), sentence_soup))
def test_default_limit_keeps_everything(text: str) -> None:
    pieces = list(split_sentences(text))
    assert _without_space("".join(pieces)) == _without_space(text)
    assert all(piece and len(piece) <= MAX_SENTENCE_CHARS for piece in pieces)


@pytest.mark.parametrize(
    ("text", "speakable"),
    [
        ("Hello", True),
        ("42", True),
        ("日本", True),
        ("\u0663", True),
        ("&", True),
        ("50%", True),
        ("", False),
        (" \n\t", False),
        ("...!?", False),
        ("\U0001f600\U0001f44d", False),
        ("\u2014 \u201c\u201d", False),
        ("\x00\u200b", False),
    ],
)
def test_has_speakable(text: str, speakable: bool) -> None:
    assert has_speakable(text) is speakable


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_has_speakable_never_raises(text: str) -> None:
    assert has_speakable(text) in (True, False)


def test_the_frontend_yields_plain_text_one_phonemised_sentence_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first sentence of a long plain text costs one phonemisation: nothing is held back for SSML."""
    frontend = Frontend(
        load_addon(Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en").symbols
    )
    calls: list[str] = []
    original = frontend.phonemize
    monkeypatch.setattr(frontend, "phonemize", lambda raw: calls.append(raw) or original(raw))
    sentences = frontend.sentences("This is one sentence of a very long text. " * 2500)
    first = next(sentences)
    assert first.text == "This is one sentence of a very long text." and len(calls) == 1
    assert (first.rate, first.pause_after) == (1.0, 0.0)
