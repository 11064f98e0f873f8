"""Sentence splitting for streaming synthesis: raw text in, one sentence at a time out.

A voice starts speaking after its first sentence, so the splitter is a generator that never looks further
ahead than one sentence of at most `max_chars` characters (plus a few characters of context): a text of
any length yields its first sentence at once, and the whole text is scanned in O(n).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from tts_neuron.frontend.normalize import normalize

_ALNUM = re.compile(r"[^\W_]")

__all__ = ["MAX_SENTENCE_CHARS", "has_speakable", "split_sentences"]

MAX_SENTENCE_CHARS = 400
"""Longest sentence handed on by default; longer ones are split at clause boundaries or spaces."""

_ABBREVIATIONS = frozenset(
    {
        "Mr",
        "Mrs",
        "Ms",
        "Dr",
        "St",
        "Prof",
        "Jr",
        "Sr",
        "vs",
        "etc",
        "Etc",
        "e.g",
        "E.g",
        "i.e",
        "I.e",
        "approx",
        "Approx",
        "Inc",
        "Ltd",
        "Co",
        "Mt",
        "Gen",
        "Col",
        "Capt",
        "Lt",
        "Sgt",
        "Rev",
        "Gov",
        "Sen",
        "Rep",
        "Fig",
        "fig",
        "al",
        "cf",
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Sept",
        "Oct",
        "Nov",
        "Dec",
        "Mon",
        "Tue",
        "Tues",
        "Wed",
        "Thu",
        "Thur",
        "Thurs",
        "Fri",
        "Sat",
        "Sun",
    }
)
"""Words whose dot never ends a sentence. "No." is handled apart: an abbreviation only before a number."""
_MAX_TOKEN_CHARS = 32
_CANDIDATE = re.compile(
    r"(?<![.!?…])(?P<stop>[.!?…]+)[\"'”’)\]}»›]*(?=\s|\Z)"
    r"|\n[^\S\n]*\n|\u2029"
    r"|[\n\u2028](?=[^\S\n]*(?P<next>[^\W\d_]|[-*•‣◦·]\s|[0-9]{1,3}[.)]\s))"
)
"""A possible sentence end: terminal punctuation (and closing quotes) before a space, a blank line, or a
line break before a capital, a bullet or a numbered item."""
_LOOKAHEAD_CHARS = 80
"""How far past `max_chars` the boundary search may look, for the context of a line break."""
_INITIALS = re.compile(r"[A-Z](?:\.[A-Z])+|[A-HJ-Z]")
"""Initials ("J.", "U.S."); a lone "I." is the pronoun or a numeral and may end a sentence."""
_DOTTED_LOWERCASE = re.compile(r"[a-z](?:\.[a-z])+")
_DIGIT_AFTER = re.compile(r"\s{1,4}[0-9]")
_LOWERCASE_AFTER = re.compile(r"\s{1,4}[a-z]")
_CLAUSE_BREAK = re.compile(r"[;:,](?=\s)|\s[-–—]+(?=\s)|[—–]")
_SPACE = re.compile(r"\s")
_NON_SPACE = re.compile(r"\S")


def _at_line_start(text: str, index: int) -> bool:
    """Whether only spaces or tabs separate `index` from the start of its line."""
    while index and text[index - 1] in " \t":
        index -= 1
    return index == 0 or text[index - 1] == "\n"


def _in_token(char: str) -> bool:
    return char.isalnum() or char == "."


def _dot_is_abbreviation(text: str, dot: int, after: int) -> bool:
    """Whether the single dot at `dot` (followed by whitespace at `after`) belongs to an abbreviation.

    Dots inside URLs, e-mail addresses, file names, decimals and versions never reach here: they are not
    followed by whitespace. This looks at the token before the dot: a known abbreviation, initials ("J.",
    "U.S."), a lowercase dotted abbreviation ("a.m.") before a lowercase word, or a list number ("1.").
    """
    start, floor = dot, max(0, dot - _MAX_TOKEN_CHARS)
    while start > floor and _in_token(text[start - 1]):
        start -= 1
    token = text[start:dot].lstrip(".")
    if not token or (start == floor and floor and _in_token(text[floor - 1])):
        return False
    if token in ("No", "no"):
        return _DIGIT_AFTER.match(text, after) is not None
    if token in _ABBREVIATIONS or _INITIALS.fullmatch(token):
        return True
    if _DOTTED_LOWERCASE.fullmatch(token):
        return _LOWERCASE_AFTER.match(text, after) is not None
    return token.isdecimal() and _at_line_start(text, start)


def _is_boundary(text: str, candidate: re.Match[str]) -> bool:
    """Whether a candidate found by `_CANDIDATE` really ends a sentence.

    Not when the dot belongs to an abbreviation, when a closing quote is followed by a lowercase word
    ('"Really?" she said'), or when the line after a line break starts lowercase.
    """
    stop, after = candidate["stop"], candidate.end()
    if stop is None:
        return not (candidate["next"] and candidate["next"].islower())
    if stop == "." and _dot_is_abbreviation(text, candidate.start(), after):
        return False
    return after == candidate.end("stop") or _LOWERCASE_AFTER.match(text, after) is None


def _sentence_end(text: str, start: int, max_chars: int) -> tuple[int, int] | None:
    """Find the end of the sentence that begins at `start`: (end, where the next one may begin).

    Returns None when the sentence is longer than `max_chars`; the search never reads more than
    `max_chars` + `_LOOKAHEAD_CHARS` characters, which keeps the generator lazy.
    """
    limit = start + max_chars
    endpos = min(len(text), limit + _LOOKAHEAD_CHARS)
    position = start
    while (match := _CANDIDATE.search(text, position, endpos)) is not None:
        if match.start() > limit:
            return None
        if not _is_boundary(text, match):
            position = match.end()
            continue
        end = match.end() if match["stop"] else match.start()
        return (end, match.end()) if len(text[start:end].rstrip()) <= max_chars else None
    if endpos == len(text) and len(text[start:].rstrip()) <= max_chars:
        return len(text), len(text)
    return None


def _cut(text: str, start: int, max_chars: int) -> int:
    """Where to cut a sentence longer than `max_chars` that begins at `start`.

    After the last clause boundary (; : , dash) in the second half of the allowed span, else at the last
    whitespace, else (one long word) hard at `max_chars`, if possible not between a letter and its marks.
    """
    limit = start + max_chars
    clause_ends = [
        match.end()
        for match in _CLAUSE_BREAK.finditer(text, start, limit + 1)
        if max_chars // 2 <= match.end() - start and match.end() <= limit
    ]
    if clause_ends:
        return clause_ends[-1]
    spaces = [match.start() for match in _SPACE.finditer(text, start + 1, limit + 1)]
    if spaces:
        return spaces[-1]
    cut = limit
    while cut > start + 1 and _is_mark(text[cut]):
        cut -= 1
    return limit if _is_mark(text[cut]) else cut


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def _skip_space(text: str, position: int) -> int:
    match = _NON_SPACE.search(text, position)
    return len(text) if match is None else match.start()


def _sentences(text: str, max_chars: int) -> Iterator[str]:
    start = _skip_space(text, 0)
    while start < len(text):
        found = _sentence_end(text, start, max_chars)
        if found is None:
            cut = _cut(text, start, max_chars)
            found = cut, cut
        end, resume = found
        yield text[start:end].rstrip()
        start = _skip_space(text, resume)


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> Iterator[str]:
    """Lazily yield the sentences of raw text, in order, stripped and never empty.

    Sentences end at . ! ? … (or runs of them, then closing quotes or brackets) before whitespace, at
    blank lines, and at line breaks before a capital, a bullet or a numbered item; not at abbreviations,
    initials, decimals, versions, URLs, e-mail addresses or file names. A sentence longer than `max_chars`
    comes in pieces of at most `max_chars` characters. Only whitespace is dropped: joined, the pieces hold
    every other character of `text` in order. Raises ValueError if `max_chars` < 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    return _sentences(text, max_chars)


def has_speakable(text: str) -> bool:
    """Whether the text, once normalised, holds a letter or digit of any script: something to say.

    Used to reject input that is only whitespace, punctuation or emoji; symbols that normalise to words
    ("&", "%") count as speakable. A letter or digit in the raw text answers at once, so a long text is
    not normalised whole just to be checked.
    """
    return _ALNUM.search(text) is not None or any(char.isalnum() for char in normalize(text))
