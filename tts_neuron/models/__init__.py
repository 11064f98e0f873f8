"""Network architectures an addon can declare, by name (or "package.module:Class" for others).

An addon stores a network as its architecture name, its constructor arguments and a safetensors file of
parameters: no pickled code, and the module code stays traceable at any shape on the compile host.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

_NETWORKS: dict[str, str] = {
    "MelVocoder": "tts_neuron.models.vocoder:MelVocoder",
    "TextEncoder": "tts_neuron.models.fastspeech:TextEncoder",
    "DurationPredictor": "tts_neuron.models.fastspeech:DurationPredictor",
    "MelDecoder": "tts_neuron.models.fastspeech:MelDecoder",
    "TacotronEncoder": "tts_neuron.models.tacotron:TacotronEncoder",
    "AttentionStep": "tts_neuron.models.tacotron:AttentionStep",
    "Postnet": "tts_neuron.models.tacotron:Postnet",
}


def is_builtin(architecture: str) -> bool:
    """Whether an architecture is one of ours (naming any other imports its module: code, not data)."""
    return architecture in _NETWORKS


def network_class(architecture: str) -> type[nn.Module]:
    """The module class of an architecture name; ValueError lists the known ones."""
    spec = _NETWORKS.get(architecture, architecture)
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"unknown architecture '{architecture}'; known: {', '.join(sorted(_NETWORKS))}")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import architecture '{architecture}': {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"architecture '{architecture}' is not a torch.nn.Module")
    return cls


def create_network(architecture: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate an architecture; TypeError/ValueError from bad arguments propagate to the caller."""
    return network_class(architecture)(**config)
