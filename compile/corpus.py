"""English text that is on every machine offline: sentences from the Python standard library's
docstrings. The training recipe adds generated sentences (numbers, dates, questions, lists) to these."""

from __future__ import annotations

import importlib
import random
import re
import sys
import warnings
from collections.abc import Iterator

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-/%$&]+[.!?]$")


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
        members += [
            getattr(cls, attr, None) for cls in members if isinstance(cls, type) for attr in sorted(vars(cls))
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


_NAMES = [
    "Alice",
    "Bob",
    "Carmen",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kate",
    "Liam",
]
_PLACES = ["Boston", "the library", "the station", "Lisbon", "the harbour", "Denver", "the office", "Nairobi"]
_THINGS = ["apples", "tickets", "books", "chairs", "boxes", "letters", "cables", "batteries", "umbrellas"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip
_TEMPLATES = [
    "{name} bought {n} {thing} for ${price}.",
    "The meeting in {place} starts at {hour}:{minute:02d} {ampm}.",
    "Did {name} really arrive on {month} {day}, {year}?",
    "We need {n} {thing}, {m} {thing2} and a few {thing3}.",
    "Prices rose by {pct}% in {year}, and then fell by {pct2}%.",
    "Is it true that {name} walked {n} miles to {place}?",
    "Please call {name} before {hour} {ampm} on {month} {day}.",
    "The train to {place} leaves from platform {m} at {hour}:{minute:02d}.",
    "On {date}, {name} paid ${price} for {n} {thing}.",
    "Why would anyone carry {n} {thing} all the way to {place}?",
    "Wow, {name} finished {ordinal} out of {big} runners!",
    "About {big} people visited {place} last year.",
    "First the {thing}, then the {thing2}, and finally the {thing3}.",
    "The temperature dropped to {m} degrees, so {name} stayed in {place}.",
    "Room {m}{letter} holds {n} {thing}; room {n}{letter} holds none.",
]


def generated_sentences(count: int, seed: int = 0) -> Iterator[str]:
    """Sentences from templates, to cover what docstrings lack: numbers, dates, times, money, questions."""
    rng = random.Random(seed)
    for _ in range(count):
        n, m = rng.randint(2, 99), rng.randint(2, 60)
        things = rng.sample(_THINGS, 3)
        yield rng.choice(_TEMPLATES).format(
            name=rng.choice(_NAMES), place=rng.choice(_PLACES),
            thing=things[0], thing2=things[1], thing3=things[2], n=n, m=m,
            big=f"{rng.randint(1000, 250000):,}", price=f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}",
            hour=rng.randint(1, 12), minute=rng.choice([0, 5, 15, 30, 45, rng.randint(0, 59)]),
            ampm=rng.choice(["am", "pm"]), month=rng.choice(_MONTHS), day=rng.randint(1, 28),
            year=rng.randint(1950, 2030), pct=rng.randint(1, 90), pct2=rng.randint(1, 40),
            date=f"{rng.randint(1990, 2029)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            ordinal=f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}",
            letter=rng.choice("ABCD"),
        )  # fmt: skip
