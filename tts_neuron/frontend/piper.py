"""Text to phoneme ids for imported Piper voices: espeak-ng IPA in the voice's own espeak voice, one
codepoint a phoneme (NFD), mapped through the voice's `phoneme_id_map` with Piper's layout
`^ _ p1 _ p2 _ ... pn _ $` (BOS, a pad after every phoneme, EOS).

espeak-ng reads the text itself, clause by clause, in the voice's language: it splits sentences, reads
numbers and abbreviations the way that language does, so nothing here assumes English. Each clause's
punctuation is kept as a symbol (Piper's voices were trained with it), and `,` `:` `;` add a word space.
"""

from __future__ import annotations

import ctypes
import logging
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence

from tts_neuron.errors import TextError
from tts_neuron.frontend.espeak import Espeak, EspeakError, bound_text

_LOG = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"
_IPA = 0x02  # espeakPHONEMES_IPA
_CHARS_UTF8 = 1
_SENTENCE_END = ".!?"
_CLAUSE_END = ",:;" + _SENTENCE_END
_TERMINATOR = re.compile(r"([,:;.!?])[^\w,:;.!?]*\w?$")
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")  # "(en)" ... "(de)" around words of another language


def ipa_sentences(text: str, voice: str) -> Iterator[list[str]]:
    """espeak-ng IPA of `text` in `voice`, one list of codepoints per sentence (punctuation included)."""
    espeak = Espeak.get()
    lib = espeak._lib
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    data = ctypes.create_string_buffer(bound_text(text).encode("utf-8"))
    base = ctypes.addressof(data)
    clauses: list[tuple[str, str]] = []
    with Espeak._lock:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice '{voice}'")
        espeak._voice = voice  # keep the shared instance's record of the current voice true
        pointer = ctypes.c_void_p(base)
        while pointer.value:
            start = pointer.value - base
            phonemes = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _IPA) or b""
            end = (pointer.value - base) if pointer.value else len(data.value)
            # espeak-ng leaves the pointer one character into the next clause: the terminator is the last
            # clause mark followed by nothing but spaces, quotes or brackets and that one character.
            segment = data.raw[start:end].decode("utf-8", "ignore")
            mark = _TERMINATOR.search(segment)
            terminator = mark.group(1) if mark else ""
            clauses.append((phonemes.decode("utf-8", "replace"), terminator))
    sentence: list[str] = []
    for phonemes, terminator in clauses:
        phonemes = _LANGUAGE_SWITCH.sub("", phonemes) + terminator
        if terminator and terminator not in _SENTENCE_END:
            phonemes += " "
        sentence.extend(unicodedata.normalize("NFD", phonemes))
        if terminator and terminator in _SENTENCE_END:
            yield sentence
            sentence = []
    if sentence:
        yield sentence


def phoneme_ids(
    phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]], source: str = "voice"
) -> list[int]:
    """Piper's layout: BOS, pad, then each known phoneme followed by pad, then EOS. A phoneme the voice
    does not know is skipped with a warning, as Piper does, so the ids stay equal to Piper's."""
    for symbol in (BOS, EOS, PAD):
        if symbol not in id_map:
            raise TextError(f"{source}: phoneme_id_map: has no '{symbol}' (Piper's BOS, EOS and pad)")
    ids = [*id_map[BOS], *id_map[PAD]]
    for phoneme in phonemes:
        if phoneme not in id_map:
            _LOG.warning("%s: phoneme_id_map has no %r (U+%04X); skipped", source, phoneme, ord(phoneme[0]))
            continue
        ids += [*id_map[phoneme], *id_map[PAD]]
    return [*ids, *id_map[EOS]]


class PiperFrontend:
    """Sentences of phoneme ids for one Piper voice."""

    def __init__(self, espeak_voice: str, id_map: Mapping[str, Sequence[int]], source: str = "voice") -> None:
        self.voice, self.id_map, self.source = espeak_voice, id_map, source

    def sentences(self, text: str) -> Iterator[list[int]]:
        if not text.strip():
            raise TextError("no text to speak")
        for phonemes in ipa_sentences(text, self.voice):
            if any(p.strip() for p in phonemes):
                yield phoneme_ids(phonemes, self.id_map, self.source)
