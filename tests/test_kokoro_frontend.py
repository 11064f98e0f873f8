"""The Kokoro frontend: espeak-ng IPA in misaki's symbols, Kokoro's ids, and the first clause spoken apart."""

from __future__ import annotations

import pytest

from tts_neuron.errors import TextError
from tts_neuron.frontend.kokoro import FIRST_CLAUSE_PHONEMES, KokoroFrontend, kokoro_phonemes, misaki_symbols
from tts_neuron.importers.kokoro import symbols

VOCAB = {  # a part of Kokoro-82M's vocab, enough for these sentences
    symbol: i for i, symbol in enumerate(" ,.!?;:abdefhijklmnprstuvwzæðŋɑɔəɛɜɪɹʃʊʌʒθˈˌAIOTWYʤʧᵊᵻ", start=1)
}


@pytest.fixture(scope="module")
def frontend() -> KokoroFrontend:
    return KokoroFrontend(symbols(VOCAB, len(VOCAB) + 1), "en-us")


def test_espeak_ipa_becomes_misaki_symbols() -> None:
    assert misaki_symbols("həlˈo^ʊ wˈɜːld", british=False) == "həlˈO wˈɜɹld"
    assert misaki_symbols("ma^ɪ d^ʒˈʌmp t^ʃˈe^ɪn bˈʌɾɚ", british=False) == "mI ʤˈʌmp ʧˈAn bˈʌTəɹ"
    assert misaki_symbols("kˈɪʔn̩z", british=False) == "kˈɪtnz"
    phonemes = kokoro_phonemes("Hello world, how are you today?")
    assert phonemes.startswith("həlˈO wˈɜɹld, ") and phonemes.endswith("?")


def test_tokens_are_the_ids_of_each_symbol_and_words_change_at_spaces(frontend: KokoroFrontend) -> None:
    (sentence,) = frontend.sentences("Hello world.")
    assert sentence.tokens == [VOCAB[p] for p in sentence.phonemes]
    assert "".join(sentence.phonemes) == "həlˈO wˈɜɹld."
    assert sentence.words == [0] * 6 + [1] * 7
    with pytest.raises(TextError):
        list(frontend.sentences("   "))


def test_the_first_sentence_is_cut_after_its_first_long_enough_clause(frontend: KokoroFrontend) -> None:
    text = "Well then, this first sentence goes on for quite a while, and longer. Then a second, short one."
    first, rest, second = frontend.sentences(text)
    assert first.text == "Well then, this first sentence goes on for quite a while,"
    assert rest.text == "and longer." and second.text == "Then a second, short one."
    assert len(first.phonemes) >= FIRST_CLAUSE_PHONEMES and first.phonemes[-1] == ","
    (whole,) = frontend.sentences("Well then, this first sentence goes on for quite a while.")
    assert whole.tokens == first.tokens[:-1] + [VOCAB["."]]
