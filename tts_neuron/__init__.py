"""tts_neuron: voices of different architectures in one streaming runtime, built from blocks by a JSON
stack, and compiled at fixed bucketed shapes for AWS Inferentia2 with CPU and GPU fallbacks."""

from typing import Any

from tts_neuron import voice as _voice
from tts_neuron.backends.executor import ShapeError
from tts_neuron.backends.manifest import CompiledArtifactError
from tts_neuron.blocks import (
    Chunk,
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    StreamablePipeline,
    StreamableStack,
)
from tts_neuron.errors import (
    AddonError,
    AttentionError,
    OutputError,
    StackError,
    SynthesisError,
    TargetUnavailableError,
    TextError,
    TTSNeuronError,
)
from tts_neuron.frontend import Frontend
from tts_neuron.frontend.espeak import EspeakError
from tts_neuron.registry import known_blocks, register_block
from tts_neuron.stack import allowing_imports
from tts_neuron.voice import Voice, VoiceSet

__version__ = "0.1.0"


def load(*args: Any, allow_imports: bool = True, **kwargs: Any) -> Voice:
    """`tts_neuron.voice.load` (same arguments); with `allow_imports=False` the stack may use only built-in,
    registered and entry-point blocks, and a "module:Class" entry is a StackError raised before anything
    is imported."""
    with allowing_imports(allow_imports):
        return _voice.load(*args, **kwargs)


__all__ = [
    "AddonError",
    "AttentionError",
    "Chunk",
    "CompiledArtifactError",
    "EspeakError",
    "Frontend",
    "OutputError",
    "SequenceBlock",
    "SequenceBlockContainer",
    "ShapeError",
    "StackError",
    "StreamableBlock",
    "StreamablePipeline",
    "StreamableStack",
    "SynthesisError",
    "TTSNeuronError",
    "TargetUnavailableError",
    "TextError",
    "Voice",
    "VoiceSet",
    "known_blocks",
    "load",
    "register_block",
]
