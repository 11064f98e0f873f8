"""Where a sentence too long for one call is cut: after a pause, else between words, else anywhere.

Encoders that take at most N tokens and attention decoders that decode at most N tokens cut a sentence
with the same function and the same inputs, so their pieces line up.
"""

from __future__ import annotations

import torch

from tts_neuron.blocks.base import Features

PAUSE_SYMBOLS = ("_:", "_", "_!", ";")
"""espeak-ng's pauses: a phrase ends after one of these."""


def pause_ids(symbols: list[str]) -> set[int]:
    return {i for i, symbol in enumerate(symbols) if symbol in PAUSE_SYMBOLS}


def split_points(n: int, limit: int, phrase_ends: set[int], word_starts: set[int]) -> list[int]:
    """Cut positions [0, ..., n] so that no piece is longer than `limit` tokens.

    Each cut is the latest phrase end that fits, else the latest word start that fits, else `limit`
    tokens on. `phrase_ends` and `word_starts` are token indices a piece may start at.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    cuts = [0]
    while n - cuts[-1] > limit:
        start = cuts[-1]
        fits = range(start + limit, start, -1)
        cut = next((p for p in fits if p in phrase_ends), None) or next(
            (p for p in fits if p in word_starts), None
        )
        cuts.append(cut or start + limit)
    return [*cuts, n]


def sentence_pieces(features: Features, limit: int, pauses: set[int]) -> list[tuple[int, int]]:
    """[start, stop) token ranges of at most `limit` tokens covering the sentence in `features`."""
    tokens = features["tokens"][0]  # [N]
    n = len(tokens)
    words = features.get("words")
    starts = set(range(n)) if words is None else word_starts(words[0])
    phrase_ends = {i + 1 for i, t in enumerate(tokens.tolist()) if t in pauses}
    cuts = split_points(n, limit, phrase_ends, starts)
    return list(zip(cuts, cuts[1:], strict=False))


def word_starts(words: torch.Tensor) -> set[int]:
    """Indices where the word index changes: where a piece may start without splitting a word."""
    values = words.tolist()
    return {i for i in range(1, len(values)) if values[i] != values[i - 1]}
