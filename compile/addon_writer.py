"""Writes an addon folder: each network's parameters as safetensors plus one validated addon.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from tts_neuron.addon import ADDON_FILE, FORMAT_VERSION, load_addon
from tts_neuron.audio import AudioConfig
from tts_neuron.backends.manifest import sha256_file

SEED_STACK: list[dict[str, Any]] = [
    {
        "type": "StreamablePipeline",
        "sequence_block": {"type": "Encoders"},
        "streamable_block": {
            "type": "StreamableStack",
            "stack": [{"type": "Upsampler"}, {"type": "Decoder"}],
        },
    }
]
"""The seed article's stack, verbatim: text to mel frames."""

SPEAKING_STACK: list[dict[str, Any]] = [*SEED_STACK, {"type": "Vocoder"}]
"""The seed's stack followed by the neural vocoder: text to audio."""

GRIFFIN_LIM_STACK: list[dict[str, Any]] = [*SEED_STACK, {"type": "GriffinLim"}]
"""The seed's stack followed by Griffin-Lim, the baseline the neural vocoder replaced."""

NEURON_STACK: list[dict[str, Any]] = [
    {
        "type": "StreamablePipeline",
        "sequence_block": {"type": "NeuronEncoders"},
        "streamable_block": {
            "type": "StreamableStack",
            "stack": [{"type": "Upsampler"}, {"type": "PaddedDecoder"}],
        },
    },
    {"type": "PaddedVocoder"},
]
"""The same voice at fixed shapes: compiled encoders, decoder and vocoder."""


BATCH_SIZES = [1, 2, 4, 8]
"""Batch sizes every bucket of a shipped voice is compiled at: the server's engine runs up to 8 streams'
calls of one network as one call (`tts_neuron.engine.Engine`)."""


@dataclass
class NetworkEntry:
    network: nn.Module
    architecture: str
    role: str
    inputs: list[str]
    outputs: list[str]
    config: dict[str, Any]
    buckets: list[int] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=lambda: list(BATCH_SIZES))
    compiler_args: dict[str, list[str]] = field(default_factory=dict)


FP32_ON_NEURON = {"MelVocoder", "AttentionStep"}
"""Architectures compiled with `--auto-cast none` on Neuron unless an entry says otherwise: the vocoder's
inverse-STFT basis sums large terms that cancel, and the attention recurrence's drift can trip the
alignment guards; bf16 for them waits for a hardware parity test (neuron-audit finding 5)."""


def save_parameters(root: Path, name: str, network: nn.Module) -> str:
    """Write a network's parameters as `networks/<name>.safetensors`; returns that path, relative to root."""
    (root / "networks").mkdir(parents=True, exist_ok=True)
    relative = f"networks/{name}.safetensors"
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(root / relative))
    return relative


def declaration(entry: NetworkEntry, root: Path, parameters: str) -> dict[str, Any]:
    """A network's entry in addon.json, with the sha256 of its parameter file (relative to root)."""
    return {
        "architecture": entry.architecture,
        "role": entry.role,
        "inputs": entry.inputs,
        "outputs": entry.outputs,
        "config": entry.config,
        "parameters": parameters,
        "sha256": sha256_file(root / parameters),
        **({"buckets": entry.buckets} if entry.buckets else {}),
        **({"batch_sizes": entry.batch_sizes} if entry.buckets else {}),
        **({"compiler_args": compiler_args} if (compiler_args := _compiler_args(entry)) else {}),
    }


def _compiler_args(entry: NetworkEntry) -> dict[str, list[str]]:
    if entry.compiler_args or entry.architecture not in FP32_ON_NEURON:
        return entry.compiler_args
    return {"neuron": ["--auto-cast", "none"]}


def write_addon(
    root: Path,
    *,
    name: str,
    description: str,
    trained: bool,
    symbols: list[str],
    networks: dict[str, NetworkEntry],
    stacks: dict[str, list[dict[str, Any]]],
    default_stack: str,
    audio: AudioConfig | None = None,
    language: str = "en-us",
) -> Path:
    """Write `root/addon.json` and `root/networks/<name>.safetensors`, then load it back to validate it."""
    declared = {
        name: declaration(entry, root, save_parameters(root, name, entry.network))
        for name, entry in networks.items()
    }
    config = {
        "format": FORMAT_VERSION,
        "name": name,
        "description": description,
        "trained": trained,
        "language": language,
        "audio": (audio or AudioConfig()).to_dict(),
        "symbols": symbols,
        "networks": declared,
        "stacks": stacks,
        "default_stack": default_stack,
    }
    (root / ADDON_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    load_addon(root)
    return root
