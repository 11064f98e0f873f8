"""A safe subset of SSML, because users of Amazon's and NVIDIA's speech services send it.

The document is parsed whole by expat with no DTD: a `<!DOCTYPE` or `<!ENTITY` is refused before parsing,
so entities cannot expand (no "billion laughs") and nothing outside the text is read. Its size and nesting
are bounded. What it says becomes a list of `Segment`s: plain text (with `<say-as>` and `<sub>` already
turned into words) that the frontend splits into sentences as usual, the speaking rate of that text, and
the pause after it. Every error is a `TextError` naming the line and column.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from xml.parsers import expat

from tts_neuron.errors import TextError
from tts_neuron.frontend.normalize import say_as

__all__ = ["MAX_BREAK_SECONDS", "MAX_DEPTH", "MAX_SSML_CHARS", "RATES", "Segment", "is_ssml", "parse_ssml"]

_LOG = logging.getLogger(__name__)

MAX_SSML_CHARS = 100_000
"""Longest SSML document read: it is parsed whole, unlike plain text, which is read a sentence at a time."""
MAX_DEPTH = 16
"""Deepest nesting of elements, `<speak>` included."""
MAX_BREAK_SECONDS = 10.0
"""Longest `<break time>` (Amazon Polly's limit too)."""
RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
"""Speaking-rate multipliers of the named `<prosody rate>` values."""
MIN_RATE, MAX_RATE = 0.25, 4.0
"""The range of a `<prosody rate>` given as a percentage or a number."""
BREAK_STRENGTHS = {"none": 0.0, "x-weak": 0.1, "weak": 0.2, "medium": 0.4, "strong": 0.7, "x-strong": 1.2}
"""Seconds of silence of each `<break strength>`; a `<break>` with neither attribute is "medium"."""

_SSML_START = re.compile(r"\s*<speak[\s/>]")
_FORBIDDEN = re.compile(r"<!DOCTYPE|<!ENTITY")
_BREAK_TIME = re.compile(r"(?P<value>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s)")
_PERCENT = re.compile(r"(?P<value>[0-9]+(?:\.[0-9]+)?)%")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_ATTRIBUTES = {
    "speak": {"version", "xml:lang", "xmlns"},
    "p": {"xml:lang"},
    "s": {"xml:lang"},
    "break": {"time", "strength"},
    "prosody": {"rate", "pitch", "volume"},
    "say-as": {"interpret-as", "format"},
    "sub": {"alias"},
    "phoneme": {"alphabet", "ph"},
}
"""Each supported element and the attributes it may carry; anything else is an error."""
_REQUIRED = {"say-as": "interpret-as", "sub": "alias", "phoneme": "ph"}
_TEXT_ONLY = frozenset({"say-as", "sub", "phoneme"})
"""Elements whose content is replaced (or read) as a whole, so it may hold only text."""
_PHONEME_ALPHABETS = ("ipa", "x-sampa")


@dataclass(frozen=True)
class Segment:
    """A stretch of text spoken at one rate, then `pause_after` seconds of silence; it ends a sentence."""

    text: str
    rate: float = 1.0
    pause_after: float = 0.0


def is_ssml(text: str) -> bool:
    """Whether the text is an SSML document: it starts, after whitespace, with a `<speak>` element."""
    return _SSML_START.match(text) is not None


def parse_ssml(text: str) -> list[Segment]:
    """The segments of an SSML document, in order; raises TextError naming the position of what is wrong."""
    if len(text) > MAX_SSML_CHARS:
        raise TextError(f"the SSML has {len(text):,} characters; the limit is {MAX_SSML_CHARS:,}")
    if (forbidden := _FORBIDDEN.search(text)) is not None:
        line = text.count("\n", 0, forbidden.start()) + 1
        column = forbidden.start() - (text.rfind("\n", 0, forbidden.start()) + 1) + 1
        raise TextError(f"SSML line {line}, column {column}: {forbidden.group()} is not allowed (no DTD)")
    return _Reader().read(text)


@dataclass
class _Open:
    """An element being read: its name, where it starts, and the text it holds if it is text-only."""

    name: str
    attributes: dict[str, str]
    position: str
    content: list[str] = field(default_factory=list)


class _Reader:
    """expat handlers that turn the document into segments as its elements open and close."""

    def __init__(self) -> None:
        self._parser = expat.ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._text
        self._open: list[_Open] = []
        self._rates = [1.0]
        self._buffer: list[str] = []
        self._segments: list[Segment] = []

    def read(self, text: str) -> list[Segment]:
        try:
            self._parser.Parse(text, True)
        except expat.ExpatError as err:
            message = expat.ErrorString(err.code)
            raise TextError(
                f"SSML line {err.lineno}, column {err.offset + 1}: malformed ({message})"
            ) from None
        self._flush(0.0)
        return self._segments

    def _where(self) -> str:
        return f"SSML line {self._parser.CurrentLineNumber}, column {self._parser.CurrentColumnNumber + 1}"

    def _error(self, message: str) -> TextError:
        return TextError(f"{self._where()}: {message}")

    def _flush(self, pause: float) -> None:
        """End the current segment, with `pause` seconds of silence after it."""
        text = " ".join("".join(self._buffer).split())
        self._buffer = []
        if text or pause:
            self._segments.append(Segment(text, self._rates[-1], pause))

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        if self._open and self._open[-1].name in _TEXT_ONLY | {"break"}:
            raise self._error(f"<{self._open[-1].name}> may hold only text, not <{name}>")
        if name not in _ATTRIBUTES:
            raise self._error(f"unknown element <{name}>; supported: {', '.join(sorted(_ATTRIBUTES))}")
        if (name == "speak") != (not self._open):
            raise self._error("<speak> must be the one outermost element")
        if len(self._open) >= MAX_DEPTH:
            raise self._error(f"elements are nested deeper than {MAX_DEPTH}")
        for attribute in attributes:
            if attribute not in _ATTRIBUTES[name] and not (
                name == "speak" and attribute.startswith("xmlns:")
            ):
                raise self._error(f"<{name}> has no attribute '{attribute}'")
        if name in _REQUIRED and not attributes.get(_REQUIRED[name], "").strip():
            raise self._error(f"<{name}> needs a non-empty '{_REQUIRED[name]}'")
        self._open.append(_Open(name, attributes, self._where()))
        if name in ("p", "s"):
            self._flush(0.0)
        elif name == "break":
            self._flush(self._pause(attributes))
        elif name == "prosody":
            self._flush(0.0)
            self._rates.append(self._rate(attributes))
        elif name == "phoneme" and attributes.get("alphabet", "ipa") not in _PHONEME_ALPHABETS:
            raise self._error(f"<phoneme alphabet> must be one of {', '.join(_PHONEME_ALPHABETS)}")

    def _end(self, name: str) -> None:
        element = self._open.pop()
        if name in ("p", "s"):
            self._flush(0.0)
        elif name == "prosody":
            self._flush(0.0)
            self._rates.pop()
        elif name in _TEXT_ONLY:
            self._buffer.append(f" {self._words(element)} ")

    def _text(self, data: str) -> None:
        if self._open and self._open[-1].name in _TEXT_ONLY:
            self._open[-1].content.append(data)
        elif self._open and self._open[-1].name == "break" and data.strip():
            raise self._error("<break> may not hold text")
        else:
            self._buffer.append(data)

    def _words(self, element: _Open) -> str:
        """What a text-only element says in place of its content."""
        content, attributes = "".join(element.content), element.attributes
        if element.name == "sub":
            return attributes["alias"]
        if element.name == "phoneme":
            _LOG.warning(
                "%s: <phoneme> is read as its text %r: espeak-ng takes only its own phoneme mnemonics, and "
                "IPA or X-SAMPA cannot be mapped onto them safely",
                element.position,
                content.strip(),
            )
            return content
        try:
            return say_as(attributes["interpret-as"], content, attributes.get("format"))
        except ValueError as err:
            raise TextError(
                f"{element.position}: <say-as interpret-as='{attributes['interpret-as']}'>: {err}"
            ) from None

    def _pause(self, attributes: dict[str, str]) -> float:
        if "time" in attributes:
            match = _BREAK_TIME.fullmatch(attributes["time"].strip())
            if match is None:
                raise self._error(f"<break time='{attributes['time']}'> is not a time such as 300ms or 1.5s")
            seconds = float(match["value"]) / (1000 if match["unit"] == "ms" else 1)
            if seconds > MAX_BREAK_SECONDS:
                raise self._error(
                    f"<break time='{attributes['time']}'> is longer than {MAX_BREAK_SECONDS:g}s"
                )
            return seconds
        strength = attributes.get("strength", "medium")
        if strength not in BREAK_STRENGTHS:
            raise self._error(f"<break strength='{strength}'> is not one of {', '.join(BREAK_STRENGTHS)}")
        return BREAK_STRENGTHS[strength]

    def _rate(self, attributes: dict[str, str]) -> float:
        """The rate of a <prosody> element's content; it replaces (does not multiply) an outer one."""
        for ignored in ("pitch", "volume"):
            if ignored in attributes:
                _LOG.warning(
                    "%s: <prosody %s> is ignored: the voices change only their rate", self._where(), ignored
                )
        if "rate" not in attributes:
            return self._rates[-1]
        value = attributes["rate"].strip()
        if value in RATES:
            return RATES[value]
        percent = _PERCENT.fullmatch(value)
        if percent is not None or _NUMBER.fullmatch(value):
            rate = float(percent["value"]) / 100 if percent is not None else float(value)
            if MIN_RATE <= rate <= MAX_RATE:
                return rate
        raise self._error(
            f"<prosody rate='{attributes['rate']}'> is not one of {', '.join(RATES)}, a percentage or a "
            f"number from {MIN_RATE:g} to {MAX_RATE:g}"
        )
