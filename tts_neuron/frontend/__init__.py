"""Text to phoneme ids: sentence splitting, normalisation, espeak-ng phonemes, the addon's symbol table.

The frontend knows nothing about torch: it yields plain Python lists, one sentence at a time, so that a
text of any length starts speaking after its first sentence and is never held whole as phonemes.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from tts_neuron.errors import TextError
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.normalize import normalize
from tts_neuron.frontend.sentences import has_speakable, split_sentences

__all__ = ["PAD_SYMBOL", "STRESS_MARKS", "Frontend", "Sentence", "prepare_text"]

_LOG = logging.getLogger(__name__)

STRESS_MARKS = ("'", ",")
"""espeak-ng's primary and secondary stress marks, which prefix a vowel's mnemonic."""

PAD_SYMBOL = "<pad>"
"""Symbol id 0 of every symbol table: what padded token positions hold."""


@dataclass(frozen=True)
class Sentence:
    text: str
    """The normalised text that was phonemised."""
    phonemes: list[str]
    tokens: list[int]
    """Symbol ids, one per phoneme kept."""
    words: list[int]
    """Word index of each token, so a long sentence can be split between words."""


def _readable(char: str) -> bool:
    """Whether an English espeak-ng voice reads the character as itself rather than as a name or nothing."""
    if char.isascii():
        return True
    try:
        name = unicodedata.name(char)
    except ValueError:
        return False
    return unicodedata.category(char)[0] in "LNPZ" and ("LATIN" in name or "GREEK" in name or "DIGIT" in name)


def _split_unreadable(text: str) -> tuple[str, set[str]]:
    dropped = {c for c in text if not _readable(c)}
    return ("".join(c for c in text if c not in dropped) if dropped else text), dropped


def prepare_text(raw: str) -> str:
    """One sentence as espeak-ng will read it: normalised, with only the characters the voice can read."""
    return _split_unreadable(normalize(raw))[0]


class Frontend:
    """Turns text into sentences of symbol ids for one addon's symbol table."""

    def __init__(self, symbols: list[str], language: str = "en-us", max_sentence_chars: int = 400) -> None:
        if not symbols or symbols[0] != PAD_SYMBOL:
            raise ValueError(f"a symbol table starts with '{PAD_SYMBOL}'")
        self.symbols = symbols
        self.language = language
        self.max_sentence_chars = max_sentence_chars
        self._ids = {symbol: i for i, symbol in enumerate(symbols)}
        self._warned: set[str] = set()

    def sentences(self, text: str) -> Iterator[Sentence]:
        """Yield each sentence as soon as it is phonemised; raise TextError if nothing can be spoken."""
        if not isinstance(text, str):
            raise TextError(f"text must be a str, not {type(text).__name__}")
        if not has_speakable(text):
            raise TextError("the text has nothing to speak (it is empty, whitespace, punctuation or symbols)")
        return self._sentences(text)

    def _sentences(self, text: str) -> Iterator[Sentence]:
        spoken = False
        for raw in split_sentences(text, self.max_sentence_chars):
            sentence = self.phonemize(raw)
            if sentence.tokens:
                spoken = True
                yield sentence
        if not spoken:
            raise TextError("the text has nothing an English voice can pronounce")

    def phonemize(self, raw: str) -> Sentence:
        """One sentence of raw text to symbol ids; what cannot be pronounced is dropped with a warning."""
        text, dropped = _split_unreadable(normalize(raw))
        if dropped:
            shown = "".join(sorted(dropped))
            self._warn_once(shown, f"dropped characters the voice cannot read: {shown!r}")
        if not has_speakable(text):
            return Sentence(text, [], [], [])
        phonemes, tokens, words = [], [], []
        for phoneme in Espeak.get().synthesize(text, self.language).phonemes:
            symbol_id = self._ids.get(phoneme.name)
            if symbol_id is None and phoneme.name[:1] in STRESS_MARKS:  # an unseen stress variant of a vowel
                symbol_id = self._ids.get(phoneme.name[1:])
            if symbol_id is None:
                self._warn_once(
                    phoneme.name, f"dropped phoneme '{phoneme.name}': not in the voice's symbol table"
                )
                continue
            phonemes.append(phoneme.name)
            tokens.append(symbol_id)
            words.append(phoneme.word)
        return Sentence(text, phonemes, tokens, words)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _LOG.warning(message)
