"""Blocks: the two abstractions, their containers, and the built-in blocks a stack can name."""

from tts_neuron.blocks.base import (
    Chunk,
    Features,
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    StreamablePipeline,
    StreamableStack,
)

__all__ = [
    "Chunk",
    "Features",
    "SequenceBlock",
    "SequenceBlockContainer",
    "StreamableBlock",
    "StreamablePipeline",
    "StreamableStack",
]
