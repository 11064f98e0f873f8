"""Network architectures an addon can declare, by name (or "package.module:Class" for others).

An addon stores a network as its architecture name, its constructor arguments and a safetensors file of
parameters: no pickled code, and the module code stays traceable at any shape on the compile host.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

_NETWORKS: dict[str, str] = {
    "MelVocoder": "tts_neuron.models.vocoder:MelVocoder",
    "TextEncoder": "tts_neuron.models.fastspeech:TextEncoder",
    "DurationPredictor": "tts_neuron.models.fastspeech:DurationPredictor",
    "MelDecoder": "tts_neuron.models.fastspeech:MelDecoder",
    "TacotronEncoder": "tts_neuron.models.tacotron:TacotronEncoder",
    "AttentionStep": "tts_neuron.models.tacotron:AttentionStep",
    "Postnet": "tts_neuron.models.tacotron:Postnet",
    "VitsEncoder": "tts_neuron.models.vits:VitsEncoder",
    "VitsFlow": "tts_neuron.models.vits:VitsFlow",
    "VitsGenerator": "tts_neuron.models.vits:VitsGenerator",
    "KokoroEncoders": "tts_neuron.models.kokoro:KokoroEncoders",
    "KokoroDecoder": "tts_neuron.models.kokoro:KokoroDecoder",
    "KokoroVoices": "tts_neuron.models.kokoro:KokoroVoices",
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


_gathering = False


@contextlib.contextmanager
def split_safe() -> Iterator[None]:
    """Within this block `split_columns` and `LSTMCell` split by gathers: for graphs that torch-xla compiles
    (Neuron's trace and `check --target neuron`). torch-neuronx 2.9 returns wrong data when a 2-D tensor is
    split along dim 1 (pytorch/xla#8640, a known issue in its release notes); a gather of constant indices is
    exact and is not that op. Outside, the plain split and torch's fused cell run (12% faster on CPU)."""
    global _gathering
    before, _gathering = _gathering, True
    try:
        yield
    finally:
        _gathering = before


def split_columns(x: torch.Tensor, sizes: Sequence[int], dim: int = -1) -> tuple[torch.Tensor, ...]:
    """`x.split(sizes, dim)`, as gathers (index_select) within `split_safe()`."""
    if sum(sizes) != x.shape[dim]:
        raise ValueError(f"sizes {list(sizes)} sum to {sum(sizes)}, dim {dim} has {x.shape[dim]}")
    if not _gathering:
        return x.split(list(sizes), dim)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(x.index_select(dim, torch.arange(start, start + size, device=x.device)))
        start += size
    return tuple(pieces)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of [B, C, T] (parameters `gamma` and `beta`, as VITS and Kokoro name
    them)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.layer_norm(x.transpose(1, 2), (x.shape[1],), self.gamma, self.beta, 1e-5)
        return y.transpose(1, 2)


class LSTMCell(nn.LSTMCell):
    """nn.LSTMCell (same parameters, same outputs) whose gates split by gathers within `split_safe()`."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, I], state: ([B, H], [B, H])
        if not _gathering:
            return super().forward(x, state)
        h, c = state
        gates = nn.functional.linear(x, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h, self.weight_hh, self.bias_hh
        )  # [B, 4H]: input, forget, cell, output
        i, f, g, o = split_columns(gates, [self.hidden_size] * 4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c  # [B, H] each


def run_lstm(cell: LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """A one-way LSTM with `cell`'s parameters over a whole sequence from a zero state: torch's fused
    sequence operator, or within `split_safe()` the cell step by step (unrolled at a fixed length, because
    the fused operator splits its gates along dim 1 too)."""
    # x: [B, T, I] -> [B, T, H]
    state = (x.new_zeros(x.shape[0], cell.hidden_size), x.new_zeros(x.shape[0], cell.hidden_size))
    if not _gathering:
        params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        hidden = (state[0][None], state[1][None])  # [layers, B, H]
        out, _, _ = torch.lstm(x, hidden, params, True, 1, 0.0, False, False, True)
        return out
    steps = []
    for t in range(x.shape[1]):
        state = cell(x[:, t], state)
        steps.append(state[0])
    return torch.stack(steps, dim=1)
