"""Text to Kokoro's phoneme ids: espeak-ng IPA mapped to misaki's symbols, offline.

Kokoro was trained on misaki's phonemes. misaki's English G2P needs a spaCy model that cannot be installed
offline, so this frontend does what misaki itself does for words its lexicon lacks: espeak-ng's IPA (with
a tie between the letters of one phoneme), rewritten into misaki's single-character symbols (`a^ɪ` ->
`I`, `o^ʊ` -> `O`, `ɚ` -> `əɹ`, the flap -> `T`, ...). The rewrite table is the one misaki's espeak fallback
documents; the code is ours. What this loses against misaki's lexicon is measured in
benchmarks/kokoro_g2p.py and stated in docs/importing.md.

Punctuation is kept as Kokoro's own symbols (`,` `.` `!` `?` `;` `:` `—` `…` and quotes), attached to the
word before it, as misaki writes it; each text run between marks is phonemised on its own, as phonemizer
(misaki's espeak backend) does with `preserve_punctuation`. Sentence splitting, normalisation (English
numbers, abbreviations) and the limits are the toolkit's own (`tts_neuron.frontend.Frontend`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import replace

from tts_neuron.frontend import FIRST_CLAUSE_PHONEMES, Frontend, Sentence, prepare_text
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.sentences import has_speakable

_IPA_WITH_TIES = 0x02 | 0x80 | (ord("^") << 8)
"""espeak_TextToPhonemes' mode: IPA, with `^` tying the letters of a multi-letter phoneme."""
PUNCTUATION = ';:,.!?—…"()“”'
"""Kokoro's punctuation symbols: a long sentence is cut into pieces after one of these first."""
_MARK_RUN = re.compile(rf"(\s*[{re.escape(PUNCTUATION)}]+\s*)")
_QUOTES = str.maketrans({"«": "“", "»": "”", "‘": "“", "’": "”"})
CLAUSE_MARKS = ",;:—"

_ESPEAK_TO_MISAKI = sorted(
    {
        "ʔˌn\u0329": "ʔn",
        "ʔn\u0329": "ʔn",
        "a^ɪ": "I",
        "a^ʊ": "W",
        "d^ʒ": "ʤ",
        "e^ɪ": "A",
        "e": "A",
        "t^ʃ": "ʧ",
        "ɔ^ɪ": "Y",
        "ə^l": "ᵊl",
        "ʲo": "jo",
        "ʲə": "jə",
        "ʲ": "",
        "ɚ": "əɹ",
        "r": "ɹ",
        "x": "k",
        "ç": "k",
        "ɐ": "ə",
        "ɬ": "l",
        "\u0303": "",
    }.items(),
    key=lambda pair: -len(pair[0]),
)
"""espeak-ng's IPA -> misaki's symbols, longest first (so `a^ɪ` is rewritten before `a`)."""
_SYLLABIC = re.compile(r"(\S)\u0329")


def misaki_symbols(ipa: str, british: bool) -> str:
    """One run of espeak-ng IPA (ties as `^`) in misaki's symbols, as misaki's espeak fallback writes them
    (its v1.0 convention: the flap is `T`, the glottal stop `t`)."""
    for old, new in _ESPEAK_TO_MISAKI:
        ipa = ipa.replace(old, new)
    ipa = _SYLLABIC.sub(r"ᵊ\1", ipa).replace("\u0329", "")
    if british:
        ipa = ipa.replace("e^ə", "ɛː").replace("iə", "ɪə").replace("ə^ʊ", "Q")
    else:
        ipa = ipa.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə")
        ipa = ipa.replace("ː", "")
    ipa = ipa.replace("o", "ɔ")  # espeak-ng before 1.52 wrote o for ɔ
    return ipa.replace("ɾ", "T").replace("ʔ", "t").replace("^", "")


def espeak_ipa(text: str, voice: str) -> str:
    """espeak-ng's IPA of a run of text without punctuation, words separated by spaces, ties as `^`."""
    runs = Espeak.get().clause_runs(text, voice, _IPA_WITH_TIES)
    return " ".join(clause for run in runs for clause in (phonemes.strip() for phonemes, _ in run) if clause)


def kokoro_phonemes(text: str, language: str = "en-us") -> str:
    """A sentence (already normalised) as Kokoro's phoneme string: misaki's symbols, words separated by
    spaces, punctuation attached to the word before it."""
    british = language.lower() in ("en-gb", "en-gb-x-rp", "en-uk")
    out = []
    for i, run in enumerate(_MARK_RUN.split(text.translate(_QUOTES))):
        if i % 2:  # marks, with the space after them when words follow
            out.append(re.sub(r"\s+", "", run) + (" " if run[-1:].isspace() else ""))
        elif run.strip():
            out.append(misaki_symbols(unicodedata.normalize("NFC", espeak_ipa(run, language)), british))
    return "".join(out).strip()


class KokoroFrontend(Frontend):
    """The toolkit's frontend (sentences, SSML, normalisation, limits) with Kokoro's phonemes: a sentence's
    tokens are the ids of its phoneme string's characters (a symbol the model lacks is dropped with a
    warning); its words change at each space."""

    kind = "kokoro"

    def sentences(self, text: str, ssml: bool | None = None) -> Iterator[Sentence]:
        """The toolkit's sentences (its checks raise at once), the first one cut after its first clause."""
        return self._first_clause_apart(super().sentences(text, ssml))

    @staticmethod
    def _first_clause_apart(sentences: Iterator[Sentence]) -> Iterator[Sentence]:
        first = next(sentences, None)
        if first is None:
            return
        yield from first_clause_apart(first)
        yield from sentences

    def phonemize(self, raw: str) -> Sentence:
        text = prepare_text(raw)
        if not has_speakable(text):
            return Sentence(text, [], [], [])
        phonemes, tokens, words, word = [], [], [], 0
        for symbol in kokoro_phonemes(text, self.language):
            symbol_id = self._ids.get(symbol)
            if symbol_id is None or symbol_id == 0:
                self._warn_once(symbol, f"dropped phoneme {symbol!r}: not in the voice's symbol table")
                continue
            phonemes.append(symbol)
            tokens.append(symbol_id)
            words.append(word)
            word += symbol == " "
        return Sentence(text, phonemes, tokens, words)


def first_clause_apart(sentence: Sentence) -> list[Sentence]:
    """A sentence as its first clause (up to a clause mark with FIRST_CLAUSE_PHONEMES phonemes before it and
    words after it) and the rest; or the sentence alone. The text is cut at the same mark."""
    marks = [i for i, p in enumerate(sentence.phonemes) if p in CLAUSE_MARKS]
    cut = next((i + 1 for i in marks if i + 1 >= FIRST_CLAUSE_PHONEMES), None)
    rest = cut + (sentence.phonemes[cut : cut + 1] == [" "]) if cut is not None else 0
    if cut is None or not any(p.isalpha() for p in sentence.phonemes[rest:]):
        return [sentence]
    nth = sum(p in CLAUSE_MARKS for p in sentence.phonemes[:cut])
    text_marks = [i for i, c in enumerate(sentence.text) if c in CLAUSE_MARKS]
    split = text_marks[nth - 1] + 1 if len(text_marks) >= nth else len(sentence.text)
    return [
        replace(
            sentence,
            text=sentence.text[:split].strip(),
            phonemes=sentence.phonemes[:cut],
            tokens=sentence.tokens[:cut],
            words=sentence.words[:cut],
            pause_after=0.0,
        ),
        replace(
            sentence,
            text=sentence.text[split:].strip(),
            phonemes=sentence.phonemes[rest:],
            tokens=sentence.tokens[rest:],
            words=sentence.words[rest:],
        ),
    ]
