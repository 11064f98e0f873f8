"""A sliding buffer over the frames of one utterance, for blocks that need context around what they emit."""

from __future__ import annotations

import torch

from tts_neuron.blocks.base import Chunk


class FrameBuffer:
    """Frames [start, end) of the utterance received so far; frames before `start` have been dropped."""

    def __init__(self) -> None:
        self.start = 0
        self.end = 0
        self._frames: torch.Tensor | None = None  # [end - start, ...]

    def append(self, chunk: Chunk) -> None:
        if chunk.start != self.end:
            raise ValueError(f"chunks must be contiguous: expected start {self.end}, got {chunk.start}")
        self._frames = chunk.data if self._frames is None else torch.cat([self._frames, chunk.data])
        self.end = chunk.end

    def window(self, lo: int, hi: int) -> torch.Tensor:
        """Frames [lo, hi) of the utterance; they must not have been dropped."""
        if not self.start <= lo <= hi <= self.end or self._frames is None:
            raise IndexError(f"frames [{lo}, {hi}) are outside the buffer [{self.start}, {self.end})")
        return self._frames[lo - self.start : hi - self.start]

    def drop_before(self, index: int) -> None:
        """Forget frames before `index`: they will not be needed as context again."""
        index = min(max(index, self.start), self.end)
        if self._frames is not None:
            self._frames = self._frames[index - self.start :]
        self.start = index
