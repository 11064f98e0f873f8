"""tts_neuron: voices of different architectures in one streaming runtime, built from blocks by a JSON
stack, and compiled at fixed bucketed shapes for AWS Inferentia2 with CPU and GPU fallbacks."""

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
    SettingError,
    StackError,
    SynthesisError,
    TargetUnavailableError,
    TextError,
    TTSNeuronError,
    UnknownSpeakerError,
)
from tts_neuron.frontend import Frontend
from tts_neuron.frontend.espeak import EspeakError
from tts_neuron.registry import known_blocks, register_block
from tts_neuron.voice import Voice, VoiceSet, load

__version__ = "0.1.0"


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
    "SettingError",
    "ShapeError",
    "StackError",
    "StreamableBlock",
    "StreamablePipeline",
    "StreamableStack",
    "SynthesisError",
    "TTSNeuronError",
    "TargetUnavailableError",
    "TextError",
    "UnknownSpeakerError",
    "Voice",
    "VoiceSet",
    "known_blocks",
    "load",
    "register_block",
]
