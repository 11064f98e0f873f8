"""The symbol table of an English espeak-ng voice: every phoneme mnemonic it emits, stress marks included."""

from __future__ import annotations

from collections.abc import Iterable

from tts_neuron.frontend import PAD_SYMBOL, STRESS_MARKS, prepare_text
from tts_neuron.frontend.espeak import Espeak


def collect_symbols(sentences: Iterable[str], language: str = "en-us") -> list[str]:
    """Phonemes espeak-ng emits for `sentences`, closed under stress: a vowel seen with one stress mark
    gets a symbol for each. (At run time a stress variant missing from the table reads as its vowel.)"""
    espeak = Espeak.get()
    seen = {p.name for text in sentences for p in espeak.synthesize(prepare_text(text), language).phonemes}
    return [PAD_SYMBOL, *close_under_stress(seen)]


def close_under_stress(phonemes: set[str]) -> list[str]:
    """Sorted phonemes plus every stress variant of each vowel seen stressed."""
    stressable = {name[1:] for name in phonemes if name[:1] in STRESS_MARKS}
    return sorted(phonemes | stressable | {mark + vowel for vowel in stressable for mark in STRESS_MARKS})
