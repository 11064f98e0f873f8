"""Text to phoneme ids: sentence splitting, normalisation, espeak-ng phonemes, the addon's symbol table.

The frontend knows nothing about torch: it yields plain Python lists, one sentence at a time, so that a
text of any length starts speaking after its first sentence and is never held whole as phonemes. Text that
starts with `<speak` is read as SSML (a safe subset, tts_neuron.frontend.ssml). docs/frontend.md says what
it does and what it refuses.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from tts_neuron.errors import TextError
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.normalize import normalize
from tts_neuron.frontend.sentences import MAX_SENTENCE_CHARS, has_speakable, split_sentences
from tts_neuron.frontend.ssml import Segment, is_ssml, parse_ssml

__all__ = [
    "MAX_SPEECH_SECONDS",
    "PAD_SYMBOL",
    "SECONDS_PER_LETTER",
    "SECONDS_PER_PHONEME",
    "STRESS_MARKS",
    "Frontend",
    "Sentence",
    "estimate_speech_seconds",
    "prepare_text",
]

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
    rate: float = 1.0
    """Speaking-rate multiplier (from SSML `<prosody rate>`); above 1 is faster."""
    pause_after: float = 0.0
    """Seconds of silence after the sentence (from SSML `<break>`)."""


FIRST_CLAUSE_PHONEMES = 16
"""Imported voices (Kokoro, Piper) cut a text's first sentence after its first clause mark with at least
this many phonemes (about a second of speech) before it, so a stream's first audio waits for a clause
rather than a whole sentence (their encoders attend over a whole sentence, so nothing of it can be spoken
before all of it is encoded). The clause is then spoken as a sentence of its own."""

SECONDS_PER_PHONEME = 0.073
"""Average length of a phoneme as espeak-ng (the voices' teacher) speaks en-us at its default rate, measured
on the first 4,096 characters of the seed article (framework-article.txt): 3,052 phonemes, 221 seconds."""
SECONDS_PER_LETTER = 0.066
"""The same speech per letter, before any phonemes: 3,348 letters made those 3,052 phonemes."""
MAX_SPEECH_SECONDS = 600.0
"""The server's default limit on the speech one request may make (`serve --max-speech-seconds`): 10
minutes, where 4,096 characters of prose take about 3.7. The library and the CLI have no limit."""
_DIGIT_RUN = re.compile(r"[0-9]{16,}")
"""Digits that normalize reads one by one (a longer run is a code, not a number)."""
_MIN_PHONEMES_PER_DIGIT = 2
"""The fewest phonemes of a digit's word ("two", "four", "eight")."""


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


def _digit_seconds(segment: Segment) -> float:
    """The least speech the long digit runs of a segment take, each digit read as a word."""
    digits = sum(map(len, _DIGIT_RUN.findall(segment.text)))
    return digits * _MIN_PHONEMES_PER_DIGIT * SECONDS_PER_PHONEME / segment.rate


def estimate_speech_seconds(text: str) -> float:
    """The speech a text would take at speed 1, estimated from its characters alone (letters, long digit
    runs, SSML rates and breaks), so that a server can refuse a request before any work; raises TextError
    for malformed SSML."""
    segments = parse_ssml(text) if is_ssml(text) else [Segment(text)]
    return sum(
        sum(c.isalpha() for c in segment.text) * SECONDS_PER_LETTER / segment.rate
        + _digit_seconds(segment)
        + segment.pause_after
        for segment in segments
    )


def prepare_text(raw: str) -> str:
    """One sentence as espeak-ng will read it: normalised, with only the characters the voice can read."""
    return _split_unreadable(normalize(raw))[0]


class Frontend:
    """Turns text into sentences of symbol ids for one addon's symbol table.

    `max_speech_seconds` bounds the speech of one `sentences()` call, so that a request of 5,000 digits can
    be refused instead of becoming 23 minutes of audio; by default (None) a text of any length is spoken,
    a sentence at a time, in flat memory.
    """

    def __init__(
        self,
        symbols: list[str],
        language: str = "en-us",
        max_sentence_chars: int = MAX_SENTENCE_CHARS,
        max_speech_seconds: float | None = None,
    ) -> None:
        if not symbols or symbols[0] != PAD_SYMBOL:
            raise ValueError(f"a symbol table starts with '{PAD_SYMBOL}'")
        if max_speech_seconds is not None and not max_speech_seconds > 0:
            raise ValueError(f"max_speech_seconds must be positive or None, got {max_speech_seconds}")
        self.symbols = symbols
        self.language = language
        self.max_sentence_chars = max_sentence_chars
        self.max_speech_seconds = max_speech_seconds
        self._ids = {symbol: i for i, symbol in enumerate(symbols)}
        self._warned: set[str] = set()

    @classmethod
    def for_addon(cls, addon: Any) -> Frontend:
        """The frontend of an addon of the default frontend type ("espeak"): its symbols and language."""
        return cls(addon.symbols, addon.language)

    def sentences(self, text: str, ssml: bool | None = None) -> Iterator[Sentence]:
        """Yield each sentence once it is phonemised; raise TextError if nothing can be spoken, if SSML is
        malformed, or when the speech would pass `max_speech_seconds`.

        `ssml=None` reads the text as SSML when it starts with `<speak` (after whitespace); True or False
        decide. SSML is parsed whole before the first sentence, and where it has a `<break>` each sentence
        is yielded once the next one is phonemised (or the text ends), so that a break after it can still
        be added to its `pause_after`. Plain text is yielded as soon as each sentence is phonemised.
        """
        if not isinstance(text, str):
            raise TextError(f"text must be a str, not {type(text).__name__}")
        read_ssml = is_ssml(text) if ssml is None else ssml
        segments = parse_ssml(text) if read_ssml else [Segment(text)]
        if not any(has_speakable(segment.text) for segment in segments):
            raise TextError("the text has nothing to speak (it is empty, whitespace, punctuation or symbols)")
        self._check_digit_runs(segments)
        return self._sentences(segments)

    def _check_digit_runs(self, segments: list[Segment]) -> None:
        """Refuse at once, before any sentence, a text whose long digit runs alone pass the limit."""
        if self.max_speech_seconds is None:
            return
        seconds = sum(_digit_seconds(segment) for segment in segments)
        if seconds > self.max_speech_seconds:
            raise TextError(
                f"this text would take at least {seconds / 60:.3g} minutes of speech (long digit runs are "
                f"read one by one); the limit is {self.max_speech_seconds / 60:.3g} minutes"
            )

    def _sentences(self, segments: list[Segment]) -> Iterator[Sentence]:
        holds = any(segment.pause_after for segment in segments)  # a <break> may add to a sentence made
        total_chars = sum(len(segment.text) for segment in segments)
        read_chars, seconds, spoken = 0, 0.0, False
        pending: Sentence | None = None
        for segment in segments:
            for raw in split_sentences(segment.text, self.max_sentence_chars):
                read_chars += len(raw)
                sentence = self.phonemize(raw)
                if not sentence.tokens:
                    continue
                spoken = True
                seconds += len(sentence.tokens) * SECONDS_PER_PHONEME / segment.rate
                self._check_speech(seconds, seconds * total_chars / read_chars)
                if pending is not None:
                    yield pending
                pending = replace(sentence, rate=segment.rate)
                if not holds:
                    yield pending
                    pending = None
            if pending is not None and segment.pause_after:
                seconds += segment.pause_after
                pending = replace(pending, pause_after=pending.pause_after + segment.pause_after)
        if not spoken:
            raise TextError("the text has nothing an English voice can pronounce")
        self._check_speech(seconds, seconds)
        if pending is not None:
            yield pending

    def _check_speech(self, seconds: float, estimate: float) -> None:
        """Raise once the speech so far passes the limit; `estimate` extrapolates it to the whole text."""
        if self.max_speech_seconds is not None and seconds > self.max_speech_seconds:
            raise TextError(
                f"this text would take about {estimate / 60:.3g} minutes of speech; the limit is "
                f"{self.max_speech_seconds / 60:.3g} minutes"
            )

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
