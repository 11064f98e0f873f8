"""Two blocks written outside tts_neuron, plugged into a stack by "my_blocks:Gain" and
"my_blocks:ChunkSizes" once this folder is on PYTHONPATH. Each extends one abstraction and nothing else."""

import sys
from collections.abc import Iterator

from tts_neuron import Chunk, StreamableBlock


class Gain(StreamableBlock):
    """Scales whatever passes through it (audio or frames) by `gain`."""

    def __init__(self, gain: float = 0.5) -> None:
        self.gain = gain

    def stream(self, upstream: Iterator[Chunk] | None, features: dict) -> Iterator[Chunk]:
        for chunk in upstream or ():
            yield Chunk(chunk.data * self.gain, chunk.start, chunk.final)


class ChunkSizes(StreamableBlock):
    """A diagnostic: prints each chunk's start, length and finality to stderr and passes it on."""

    def __init__(self, label: str = "chunk") -> None:
        self.label = label

    def stream(self, upstream: Iterator[Chunk] | None, features: dict) -> Iterator[Chunk]:
        for chunk in upstream or ():
            print(
                f"{self.label}: start {chunk.start} length {chunk.data.shape[0]} final {chunk.final}",
                file=sys.stderr,
            )
            yield chunk
