"""Text to phoneme ids for imported Piper voices: espeak-ng IPA in the voice's own espeak voice, one
codepoint a phoneme (NFD), mapped through the voice's `phoneme_id_map` with Piper's layout
`^ _ p1 _ p2 _ ... pn _ $` (BOS, a pad after every phoneme, EOS).

espeak-ng reads the text itself, clause by clause, in the voice's language: it splits sentences, reads
numbers and abbreviations the way that language does, so nothing here assumes English. Each clause's
punctuation is kept as a symbol (Piper's voices were trained with it), and `,` `:` `;` add a word space.

Unknown input never stops synthesis: espeak-ng reads any character (or skips it), and a phoneme it
produces that the voice's map lacks is skipped with one warning per phoneme, as Piper does. A map that is
itself wrong (a phoneme of several codepoints, an id outside the voice) is refused when the voice is
imported or loaded (`tts_neuron.addon.check_phoneme_id_map`), naming the file and the phoneme.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tts_neuron.errors import TextError
from tts_neuron.frontend import FIRST_CLAUSE_PHONEMES, PAD_SYMBOL, Sentence
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.sentences import has_speakable
from tts_neuron.frontend.ssml import Segment, is_ssml, parse_ssml

_LOG = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"
_IPA = 0x02  # espeakPHONEMES_IPA
_SENTENCE_END = ".!?"
_CLAUSE_MARK = ",:;"
_CLAUSE_END = _CLAUSE_MARK + _SENTENCE_END
_TERMINATOR = re.compile(r"([,:;.!?])[^\w,:;.!?]*$")
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")  # "(en)" ... "(de)" around words of another language


def ipa_sentences(text: str, voice: str) -> Iterator[list[str]]:
    """espeak-ng IPA of `text` in `voice`, one list of codepoints per sentence (punctuation included)."""
    for _, phonemes in ipa_sentences_with_text(text, voice):
        yield phonemes


def ipa_sentences_with_text(
    text: str, voice: str, first_clause_apart: bool = False
) -> Iterator[tuple[str, list[str]]]:
    """As `ipa_sentences`, each sentence with the text it was read from. With `first_clause_apart`, the
    first sentence is cut after its first clause that ends in `,` `:` or `;` with FIRST_CLAUSE_PHONEMES
    phonemes before the mark and words after it, and the two parts come as sentences of their own.

    espeak-ng reads one sentence per call, restarting at the character it read past the sentence's end, so
    the first sentence comes as soon as it is read however long the text, and other streams' calls go in
    between. The phonemes are those of one pass over the whole text (the tests compare with Piper's
    phonemizer, which reads it in one pass)."""
    first = first_clause_apart
    for run in Espeak.get().clause_runs(text, voice, _IPA, stop=_ends_sentence):
        clauses = [_clause(phonemes, own) for phonemes, own in run]
        for part in _first_clause_apart(clauses) if first else [clauses]:
            yield " ".join("".join(own for _, own in part).split()), [p for ps, _ in part for p in ps]
        first = False


def _terminator(own: str) -> str:
    """A clause's terminator: its last clause mark, followed by nothing but spaces, quotes or brackets."""
    mark = _TERMINATOR.search(own)
    return mark.group(1) if mark else ""


def _ends_sentence(own: str) -> bool:
    terminator = _terminator(own)
    return bool(terminator) and terminator in _SENTENCE_END


def _clause(phonemes: str, own: str) -> tuple[list[str], str]:
    """A clause's phonemes (language switches dropped, its terminator kept, a space after `,` `:` `;`) as
    NFD codepoints, and its own text."""
    terminator = _terminator(own)
    phonemes = _LANGUAGE_SWITCH.sub("", phonemes) + terminator
    if terminator and terminator in _CLAUSE_MARK:
        phonemes += " "
    return list(unicodedata.normalize("NFD", phonemes)), own


def _first_clause_apart(clauses: list[tuple[list[str], str]]) -> list[list[tuple[list[str], str]]]:
    """A sentence's clauses as two sentences, cut after the first clause mark with FIRST_CLAUSE_PHONEMES
    phonemes before it and words after it; or the sentence alone."""
    spoken = 0
    for cut, (phonemes, own) in enumerate(clauses[:-1], start=1):
        spoken += len(phonemes)
        rest = [p for ps, _ in clauses[cut:] for p in ps]
        ends_clause = len(phonemes) > 1 and phonemes[-2] in _CLAUSE_MARK and phonemes[-1] == " "
        if ends_clause and spoken >= FIRST_CLAUSE_PHONEMES and any(p.isalpha() for p in rest):
            return [[*clauses[: cut - 1], (phonemes[:-1], own)], clauses[cut:]]
    return [clauses]


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
    """Sentences of phoneme ids for one Piper voice, as `Sentence`s (the interface of
    `tts_neuron.frontend.Frontend`: plain text or SSML's `<break>` and `<prosody rate>`)."""

    kind = "piper"

    def __init__(
        self,
        espeak_voice: str,
        id_map: Mapping[str, Sequence[int]],
        source: str = "voice",
        symbols: list[str] | None = None,
        clusters: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """`clusters` are the voice's `vowel_clusters`: runs of codepoints spoken as one phoneme."""
        self.voice, self.id_map, self.source = espeak_voice, id_map, source
        self.clusters = {tuple(cluster) for cluster in clusters or ()}
        self.language = espeak_voice
        self.symbols = symbols if symbols is not None else symbol_table(id_map)
        self._warned: set[str] = set()

    @classmethod
    def for_addon(cls, addon: Any) -> PiperFrontend:
        """The frontend of an addon whose `frontend` is {"type": "piper", "espeak_voice",
        "phoneme_id_map"[, "vowel_clusters"]}."""
        spec = addon.frontend
        return cls(
            spec["espeak_voice"], spec["phoneme_id_map"], str(addon.config_path), addon.symbols,
            spec.get("vowel_clusters"),
        )  # fmt: skip

    def sentences(self, text: str, ssml: bool | None = None) -> Iterator[Sentence]:
        """Each sentence once espeak-ng has read it; TextError if nothing can be spoken or SSML is bad."""
        if not isinstance(text, str):
            raise TextError(f"text must be a str, not {type(text).__name__}")
        read_ssml = is_ssml(text) if ssml is None else ssml
        segments = parse_ssml(text) if read_ssml else [Segment(text)]
        if not any(has_speakable(segment.text) for segment in segments):
            raise TextError("the text has nothing to speak (it is empty, whitespace, punctuation or symbols)")
        return self._sentences(segments)

    def _sentences(self, segments: list[Segment]) -> Iterator[Sentence]:
        spoken = False
        for segment in segments:
            found = (
                self.sentence(text, merge_clusters(phonemes, self.clusters), segment.rate)
                for text, phonemes in ipa_sentences_with_text(segment.text, self.voice, not spoken)
                if any(p.strip() for p in phonemes)
            )
            held = None  # with a pause after the segment, its last sentence waits until it is known last
            for sentence in found:
                spoken = True
                if not segment.pause_after:
                    yield sentence
                    continue
                if held is not None:
                    yield held
                held = sentence
            if held is not None:
                yield replace(held, pause_after=segment.pause_after)
        if not spoken:
            raise TextError(f"the text has nothing espeak-ng voice '{self.voice}' can pronounce")

    def sentence(self, text: str, phonemes: Sequence[str], rate: float = 1.0) -> Sentence:
        """One sentence's phonemes in Piper's layout, each token labelled (BOS `^`, pads `_`, EOS `$`)
        and given its word: a space or punctuation, BOS and EOS belong to no word (-1), a pad to the
        token before it."""
        known = [p for p in phonemes if p in self.id_map]
        for phoneme in sorted(set(phonemes) - set(known)):
            if phoneme not in self._warned:
                self._warned.add(phoneme)
                _LOG.warning(
                    "%s: phoneme_id_map has no %r (U+%04X); skipped", self.source, phoneme, ord(phoneme[0])
                )
        tokens = phoneme_ids(known, self.id_map, self.source)
        labels, words, word, in_word = [BOS, PAD], [-1, -1], -1, False
        for phoneme in known:
            letter = phoneme.strip() and not unicodedata.category(phoneme[0]).startswith("P")
            if letter and not in_word:
                word += 1
            in_word = bool(letter)
            for _ in self.id_map[phoneme]:
                labels.append(phoneme)
                words.append(word if letter else -1)
            for _ in self.id_map[PAD]:
                labels.append(PAD)
                words.append(words[-1])
        labels.append(EOS)
        words.append(-1)
        return Sentence(text, labels[: len(tokens)], tokens, words[: len(tokens)], rate)


def merge_clusters(phonemes: Sequence[str], clusters: set[tuple[str, ...]]) -> list[str]:
    """Runs of codepoints that are one of `clusters` as one phoneme each, the longest run first, left to
    right (a voice's `vowel_clusters`, e.g. ("a", "ɪ") -> "aɪ")."""
    if not clusters:
        return list(phonemes)
    longest = max(map(len, clusters))
    merged, i = [], 0
    while i < len(phonemes):
        n = next(
            (
                n
                for n in range(min(longest, len(phonemes) - i), 1, -1)
                if tuple(phonemes[i : i + n]) in clusters
            ),
            1,
        )
        merged.append("".join(phonemes[i : i + n]))
        i += n
    return merged


def symbol_table(id_map: Mapping[str, Sequence[int]]) -> list[str]:
    """A symbol name per id, for an addon's `symbols`: the (first) phoneme mapped to it, `<pad>` for
    Piper's pad id, `<unused N>` for ids no phoneme has. Its length is the largest id plus one."""
    size = 1 + max(i for ids in id_map.values() for i in ids)
    names = [f"<unused {i}>" for i in range(size)]
    for phoneme, ids in reversed(list(id_map.items())):
        for i in ids:
            names[i] = phoneme
    for i in id_map.get(PAD, []):
        names[i] = PAD_SYMBOL
    return names
