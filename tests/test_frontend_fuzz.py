"""Fuzz (issue 14): random text either becomes well-formed sentences (or audio) or raises a TTSNeuronError.

The texts mix what breaks frontends: any Unicode, the tokens the normaliser looks for, long space-free
tokens of every character class (the libespeak-ng crashers), digit runs, and SSML documents built from
the supported elements with good and bad attributes, unknown elements and broken markup. Each run is in a
child process, so that a crash inside libespeak-ng fails the test (naming the last input) instead of
killing pytest.
"""

from __future__ import annotations

import math
import subprocess
import sys
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.test_hardening import long_space_free_text, run_python
from tests.test_normalize import token_soup
from tts_neuron.addon import load_addon
from tts_neuron.errors import TTSNeuronError
from tts_neuron.frontend import Frontend

RATES = ["slow", "x-fast", "80%", "1.2", "0.1", "fast!", ""]
TIMES = ["300ms", "1.5s", "10s", "11s", "-1s", "soon", ""]
SAY_AS = ["characters", "spell-out", "cardinal", "ordinal", "date", "telephone", "verbatim"]
WORDS = [
    "Hello",
    "world.",
    "12",
    "2024-03-05",
    "555-1234",
    "3rd",
    "abc",
    "&amp;",
    "&lt;",
    "?!",
    "U.S.A.",
    " ",
]

words = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
element_text = st.one_of(words, st.text(max_size=20).map(escape))


@st.composite
def ssml_element(draw: st.DrawFn, children: st.SearchStrategy[str]) -> str:
    """One element with content: supported ones with good or bad attributes, now and then an unknown one."""
    kind = draw(st.sampled_from(["prosody", "say-as", "sub", "phoneme", "p", "s", "emphasis", "break"]))
    if kind == "break":
        attribute = draw(st.sampled_from([f'time="{t}"' for t in TIMES] + ['strength="strong"', ""]))
        return f"<break {attribute}/>"
    if kind in ("say-as", "sub", "phoneme"):  # text only
        attribute = {
            "say-as": f'interpret-as="{draw(st.sampled_from(SAY_AS))}"',
            "sub": f'alias="{escape(draw(words), {chr(34): "&quot;"})}"',
            "phoneme": f'alphabet="{draw(st.sampled_from(["ipa", "x-sampa", "arpabet"]))}" ph="x"',
        }[kind]
        return f"<{kind} {attribute}>{draw(element_text)}</{kind}>"
    attribute = f'rate="{draw(st.sampled_from(RATES))}"' if kind == "prosody" else ""
    return f"<{kind} {attribute}>{draw(children)}</{kind}>"


ssml_content = st.recursive(
    element_text,
    lambda children: st.lists(st.one_of(children, ssml_element(children)), max_size=4).map("".join),
    max_leaves=12,
)
ssml_document = st.one_of(
    ssml_content.map(lambda body: f"<speak>{body}</speak>"),
    ssml_content.map(lambda body: f"  <speak>{body}"),  # unclosed
    st.tuples(ssml_content, st.integers(0, 60)).map(lambda t: f"<speak>{t[0]}</speak>"[: -t[1] or None]),
)
digits = st.text("0123456789 ,.:-/$%", min_size=1, max_size=80)
texts = st.one_of(
    st.text(max_size=200),
    st.text(st.characters(exclude_categories=()), max_size=200),
    token_soup,
    long_space_free_text(),
    digits,
    ssml_document,
)
"""Every kind of hostile text above, each tried about equally often."""


def check_sentences(frontend: Frontend, text: str) -> None:
    """Every sentence is well formed, or the text raises a TTSNeuronError."""
    try:
        sentences = list(frontend.sentences(text))
    except TTSNeuronError:
        return
    assert sentences
    for sentence in sentences:
        assert sentence.tokens and len(sentence.tokens) == len(sentence.phonemes) == len(sentence.words)
        assert all(0 < token < len(frontend.symbols) for token in sentence.tokens)
        assert (
            0.25 <= sentence.rate <= 4 and sentence.pause_after >= 0 and math.isfinite(sentence.pause_after)
        )


def fuzz_frontend(examples: int) -> None:
    """Run `examples` texts through the frontend of the shipped voice; run only in a child process."""
    frontend = Frontend(load_addon("addons/fastspeech-en").symbols)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(texts)
    def run(text: str) -> None:
        print(repr(text), file=sys.stderr, flush=True)  # the last line names the input of a crash
        check_sentences(frontend, text)

    run()


def fuzz_voice(addon: str, examples: int) -> None:
    """Run `examples` texts through a shipped voice: finite audio or a TTSNeuronError, nothing else."""
    voice = tts_neuron.load(addon)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(texts)
    def run(text: str) -> None:
        print(repr(text), file=sys.stderr, flush=True)
        try:
            audio = voice.synthesize(text)
        except TTSNeuronError:
            return
        assert audio.size and np.isfinite(audio).all()

    run()


def assert_child_passes(result: subprocess.CompletedProcess[str]) -> None:
    last = "\n".join(result.stderr.strip().splitlines()[-25:])
    assert result.returncode == 0, f"child exited {result.returncode}; last stderr lines:\n{last}"


def test_1000_texts_through_the_frontend() -> None:
    """The same fuzz as the slow 10,000-text run, a tenth of it, so that `make test` stays in budget."""
    assert_child_passes(
        run_python("from tests.test_frontend_fuzz import fuzz_frontend; fuzz_frontend(1_000)")
    )


@pytest.mark.slow
def test_10000_texts_through_the_frontend() -> None:
    """Measured: 141 s of CPU, 4 min 37 s on a shared 2-core host under load (libespeak-ng is most of it)."""
    assert_child_passes(
        run_python("from tests.test_frontend_fuzz import fuzz_frontend; fuzz_frontend(10_000)")
    )


@pytest.mark.slow
@pytest.mark.parametrize("addon", ["addons/fastspeech-en", "addons/tacotron-en"])
def test_300_texts_through_each_shipped_voice(addon: str) -> None:
    """Measured on a shared 2-core host under load: 263 s for fastspeech-en and 127 s for tacotron-en
    (6.5 minutes for both, 204 s of CPU)."""
    code = f"from tests.test_frontend_fuzz import fuzz_voice; fuzz_voice({addon!r}, 300)"
    assert_child_passes(run_python(code, timeout=3600))
