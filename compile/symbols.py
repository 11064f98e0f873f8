"""The symbol table of an English espeak-ng voice: every phoneme mnemonic it emits, stress marks included."""

from __future__ import annotations

from collections.abc import Iterable

from tts_neuron.frontend import PAD_SYMBOL
from tts_neuron.frontend.espeak import Espeak

_STRESS_MARKS = ("'", ",")


def collect_symbols(sentences: Iterable[str], language: str = "en-us") -> list[str]:
    """Phonemes espeak-ng emits for `sentences`, closed under stress: a vowel seen with one stress mark
    gets a symbol for each, so that an unseen stress variant never has to be dropped at run time."""
    espeak = Espeak.get()
    seen = {p.name for text in sentences for p in espeak.synthesize(text, language).phonemes}
    stressable = {name[1:] for name in seen if name[:1] in _STRESS_MARKS}
    closed = seen | stressable | {mark + vowel for vowel in stressable for mark in _STRESS_MARKS}
    return [PAD_SYMBOL, *sorted(closed)]
