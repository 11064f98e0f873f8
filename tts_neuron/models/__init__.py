"""Network architectures an addon can declare, by name (or "package.module:Class" for others).

An addon stores a network as its architecture name, its constructor arguments and a safetensors file of
parameters: no pickled code, and the module code stays traceable at any shape on the compile host.
"""

from __future__ import annotations

import contextlib
import copy
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
        return self.time_major(x.transpose(1, 2)).transpose(1, 2)

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """The same norm of [B, T, C]."""
        return nn.functional.layer_norm(x, (x.shape[-1],), self.gamma, self.beta, 1e-5)


class ChannelsLastConv1d(nn.Module):
    """A Conv1d or ConvTranspose1d (zero padding) run as its 2-D form over [B, C, 1, T] in channels-last
    layout, for CPUs. oneDNN runs a 1-D convolution of the plain [B, C, T] layout through im2col and a GEMM,
    but a channels-last one with its direct kernels: 2.8x faster for HiFi-GAN's 32-channel layers at 5,120
    samples on an AVX2 host. Its output stays channels-last, and so do elementwise layers after it, so a
    network of convolutions pays the change of layout once. The parameters are the original's (shared);
    the weight is kept once more in the 2-D channels-last layout."""

    weight_2d: torch.Tensor

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only zero padding of a fixed size runs channels-last, not {conv}")
        self.conv = conv
        weight = conv.weight.detach().unsqueeze(2)  # [O, I, 1, K] (ConvTranspose: [I, O, 1, K])
        self.register_buffer("weight_2d", weight.contiguous(memory_format=torch.channels_last), False)

    @property
    def weight(self) -> torch.Tensor:
        """The original's weight, for code that reads it (its dtype, its device)."""
        return self.conv.weight

    def forward(self, x: torch.Tensor, padding: int | None = None) -> torch.Tensor:
        """`padding` replaces the convolution's own (0: a carried form's calls, whose context is given)."""
        # x: [B, C, T] in any layout -> [B, C', T'] channels-last ([B, T', C'] in memory)
        c = self.conv
        stride, dilation = (1, c.stride[0]), (1, c.dilation[0])
        pads = (0, int(c.padding[0]) if padding is None else padding)
        if isinstance(c, nn.ConvTranspose1d):
            out = nn.functional.conv_transpose2d(
                x.unsqueeze(2), self.weight_2d, c.bias, stride, pads, (0, c.output_padding[0]),
                c.groups, dilation,
            )  # fmt: skip
        else:
            out = nn.functional.conv2d(
                x.unsqueeze(2), self.weight_2d, c.bias, stride, pads, dilation, c.groups
            )
        return out.squeeze(2)


def channels_last(network: nn.Module) -> nn.Module:
    """`network` with every Conv1d and ConvTranspose1d run by a `ChannelsLastConv1d`: a new module tree
    where it differs (containers copied, parameters shared), so the original, which the compiler and
    `check` read, is left as it was. A network run channels-last already is returned as it is."""
    if isinstance(network, ChannelsLastConv1d):
        return network
    if type(network) is nn.Conv1d or type(network) is nn.ConvTranspose1d:
        return ChannelsLastConv1d(network)
    children = {name: channels_last(child) for name, child in network._modules.items() if child is not None}
    if all(children[name] is child for name, child in network._modules.items() if child is not None):
        return network
    twin = copy.copy(network)
    twin._modules = {**network._modules, **children}
    return twin


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
        return lstm_update(split_columns(gates, [self.hidden_size] * 4), c)


def lstm_update(gates: Sequence[torch.Tensor], c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM cell's new (h, c) from its four gates' pre-activations: input, forget, cell, output."""
    # gates: 4 x [B, H], c: [B, H] -> h, c: [B, H]
    i, f, g, o = gates
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


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
