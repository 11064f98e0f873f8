"""espeak-ng reads a Piper voice's text a sentence at a time, and gives what one pass over the text gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.piper import _IPA, _ends_sentence, ipa_sentences_with_text

LINES = [
    line
    for line in (Path(__file__).parent.parent / "benchmarks" / "hard_sentences.txt")
    .read_text("utf-8")
    .splitlines()
    if line.strip() and not line.startswith("#")
]
GERMAN = [
    "Guten Morgen, Herr Müller. Wie geht es Ihnen heute? Das Wetter ist schön, nicht wahr!",
    "Die Straße ist 1.200 m lang. Dr. Schmidt wohnt in der Hauptstr. 5, z. B. neben der Bäckerei.",
    "„Komm!“, rief sie. (Wirklich?) Ja... vielleicht. Nr. 7 ist frei!!! Ende",
]


def one_pass(text: str, voice: str) -> list[tuple[str, str]]:
    """Every clause of the text (phonemes, own text) from one read."""
    runs = list(Espeak.get().clause_runs(text, voice, _IPA))
    assert len(runs) <= 1
    return [clause for run in runs for clause in run]


def sentence_at_a_time(text: str, voice: str) -> tuple[list[tuple[str, str]], int]:
    """Every clause of the text, read a sentence per call; and the number of calls."""
    runs = list(Espeak.get().clause_runs(text, voice, _IPA, stop=_ends_sentence))
    return [clause for run in runs for clause in run], len(runs)


@pytest.mark.parametrize("voice, text", [("en-us", " ".join(LINES)), *[("de", text) for text in GERMAN]])
def test_reading_a_sentence_at_a_time_equals_one_pass(voice: str, text: str) -> None:
    clauses, calls = sentence_at_a_time(text, voice)
    assert clauses == one_pass(text, voice)
    assert calls == len(list(ipa_sentences_with_text(text, voice)))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=6), st.sampled_from(["\n", " ", "  "]))
def test_any_sentences_read_one_at_a_time_equal_one_pass(lines: list[str], gap: str) -> None:
    text = gap.join(lines)
    assert sentence_at_a_time(text, "en-us")[0] == one_pass(text, "en-us")


NASTY = [
    *"abc xyz XYZ ... !? ,;: 0123 \"'()[]-…\n.",
    "U.S.A.",
    "e.g.",
    "Dr.",
    "3.14",
    "file.txt",
    " . ",
    "!!",
]
NASTY += ["?!", ".a", "a.", ". A", "<", "&", "#", "/", "_", "~", "é", "ü", "ß", "日本", "😀", "½", "%", "€"]


@settings(max_examples=150, deadline=None)
@example(["U.S.A.", "."], "en-us")
@example(["abc", ".", "."], "de")
@given(st.lists(st.sampled_from(NASTY), min_size=1, max_size=40), st.sampled_from(["en-us", "de"]))
def test_any_text_leaves_nothing_behind_for_the_next_one(pieces: list[str], voice: str) -> None:
    """libespeak-ng keeps state for its next call, whatever text that reads: the character it read past a
    clause it stopped after, and a pending "dot" after a text read or spoken that ends in two dots
    (measured: "U.S.A.." made the next text start with "dot"). No earlier call may change a text's
    phonemes, and reading a sentence at a time still equals one pass."""
    text, probe = "".join(pieces), "Nothing else is read here, said the probe."
    before = one_pass(probe, "en-us")
    next(Espeak.get().clause_runs(text, voice, _IPA, stop=_ends_sentence))  # a read that stops early
    assert one_pass(probe, "en-us") == before
    one_pass(text, voice)
    assert one_pass(probe, "en-us") == before
    Espeak.get().synthesize(text, voice)  # the English frontend's path shares libespeak-ng's state
    assert one_pass(probe, "en-us") == before
    assert sentence_at_a_time(text, voice)[0] == one_pass(text, voice)


def test_the_first_sentence_is_read_alone_however_long_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    espeak, reads = Espeak.get(), []
    real = espeak._clause_run

    def spy(*args: Any) -> tuple[list[tuple[str, str]], int]:
        reads.append(real(*args))
        return reads[-1]

    text = " ".join(LINES * 20)
    monkeypatch.setattr(espeak, "_clause_run", spy)
    first_text, _ = next(ipa_sentences_with_text(text, "en-us"))
    ((clauses, offset),) = reads  # one read, which stopped after the first sentence
    assert first_text == LINES[0].strip() == "".join(own for _, own in clauses).strip()
    assert offset == len("".join(own for _, own in clauses).encode())  # where the second sentence starts
