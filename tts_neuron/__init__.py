"""tts_neuron: voices of different architectures in one streaming runtime, built from blocks by a JSON
stack, and compiled at fixed bucketed shapes for AWS Inferentia2 with CPU and GPU fallbacks.

Each public name is imported on first use (`_EXPORTS`), so that `import tts_neuron.cli` does not import
torch: the command line refuses a bad argument in a fraction of a second instead of 2 to 3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "ShapeError": "tts_neuron.backends.executor",
    "CompiledArtifactError": "tts_neuron.backends.manifest",
    **dict.fromkeys(
        [
            "Chunk",
            "SequenceBlock",
            "SequenceBlockContainer",
            "StreamableBlock",
            "StreamablePipeline",
            "StreamableStack",
        ],
        "tts_neuron.blocks",
    ),
    **dict.fromkeys(
        [
            "AddonError",
            "AttentionError",
            "OutputError",
            "SettingError",
            "StackError",
            "SynthesisError",
            "TargetUnavailableError",
            "TextError",
            "TTSNeuronError",
            "UnknownSpeakerError",
        ],
        "tts_neuron.errors",
    ),
    "Frontend": "tts_neuron.frontend",
    "EspeakError": "tts_neuron.frontend.espeak",
    "known_blocks": "tts_neuron.registry",
    "register_block": "tts_neuron.registry",
    "Voice": "tts_neuron.voice",
    "VoiceSet": "tts_neuron.voice",
    "load": "tts_neuron.voice",
}
"""Each public name and the module it lives in."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tts_neuron' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
