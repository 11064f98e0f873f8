"""English text that is on every machine offline: sentences from the Python standard library's
docstrings. The training recipe adds generated sentences (numbers, dates, questions, lists) to these."""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from collections.abc import Iterator

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-]+[.!?]$")


def docstring_sentences(min_chars: int = 20, max_chars: int = 300) -> Iterator[str]:
    """Unique prose-like sentences from the docstrings of the standard library's modules and members."""
    seen: set[str] = set()
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {
            "antigravity",
            "this",
            "idlelib",
            "tkinter",
            "turtle",
            "turtledemo",
        }:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform-specific modules fail to import; skip them
            continue
        members = [module] + [
            getattr(module, attr, None) for attr in sorted(vars(module)) if not attr.startswith("_")
        ]
        for obj in members:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for sentence in _SENTENCE_END.split(" ".join(doc.split())):
                if (
                    min_chars <= len(sentence) <= max_chars
                    and _PROSE.match(sentence)
                    and sentence not in seen
                ):
                    seen.add(sentence)
                    yield sentence
