"""A small Tacotron2-style acoustic model: a text encoder, an autoregressive decoder step with
location-sensitive attention, a prenet and a stop token, and a convolutional postnet.

The decoder is one *step* network: given the frame it made last and its recurrent state it makes the
next `reduction` frames. The loop over steps lives outside it (in training, and in the runtime's
AttentionDecoder block), so the step compiles once per encoder-length bucket at fixed shapes.

The encoder is convolutional, not Tacotron2's conv + BiLSTM: a backward LSTM would read the padding of a
bucket before the real tokens, so a padded sentence would not encode like the unpadded one. Masked convs
give the same memory at every bucket, and attention never sees padded positions (their energy is -1e9).

Prenet dropout stays on at inference, as in Tacotron2, but its masks are inputs to the step: the runtime
draws them from a seeded generator, so one text gives the same frames on every target (to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tts_neuron.models import LSTMCell, lstm_update, split_columns
from tts_neuron.models.fastspeech import CarriedConvNetwork, ConvStack

MASKED_ENERGY = -1e9
"""Attention energy at padded memory positions: exp() of it is exactly zero next to any real energy."""


class TacotronEncoder(nn.Module):
    """Symbol ids to the attention memory and its keys (the memory projected once per sentence)."""

    def __init__(
        self,
        n_symbols: int,
        channels: int = 256,
        layers: int = 4,
        kernel_size: int = 5,
        attention_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels, padding_idx=0)
        self.convs = ConvStack(channels, layers, kernel_size, dropout)
        self.key = nn.Linear(channels, attention_dim, bias=False)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, dtype=torch.int32), torch.ones(1, length)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens: [B, N] int32 (int64 in training), token_mask: [B, N]
        mask = token_mask.unsqueeze(-1)  # [B, N, 1]
        memory = self.convs(self.embedding(tokens) * mask, mask)  # [B, N, C]
        return memory, self.key(memory) * mask  # [B, N, C], [B, N, A]


class AttentionStep(nn.Module):
    """One decoder step: prenet -> attention LSTM -> location-sensitive attention -> decoder LSTM ->
    `reduction` mel frames and a stop logit.

    Recurrent state travels as two tensors so that a compiled step has few inputs:
    `state` [B, S] packs (attention h, attention c, decoder h, decoder c, context) and
    `alignment` [B, 2, N] holds the last attention weights and their running sum.
    """

    length_axes = ((1, 1, 1, 2, None, None, None), (None, None, 2, None))
    """The token axis of memory, keys, memory_mask and alignment, in and out (LengthPaddedNetwork): tokens
    past a row's length are masked to MASKED_ENERGY, so they take no weight and change nothing."""

    def __init__(
        self,
        n_mels: int = 80,
        memory_channels: int = 256,
        attention_dim: int = 128,
        reduction: int = 3,
        prenet_channels: int = 128,
        attention_rnn: int = 256,
        decoder_rnn: int = 256,
        location_filters: int = 16,
        location_kernel: int = 15,
        rnn_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_mels, self.reduction, self.prenet_channels = n_mels, reduction, prenet_channels
        self.sizes = [attention_rnn, attention_rnn, decoder_rnn, decoder_rnn, memory_channels]
        self.prenet = nn.ModuleList(
            [nn.Linear(n_mels, prenet_channels), nn.Linear(prenet_channels, prenet_channels)]
        )
        self.attention_rnn = LSTMCell(prenet_channels + memory_channels, attention_rnn)
        self.query = nn.Linear(attention_rnn, attention_dim, bias=False)
        self.location_conv = nn.Conv1d(
            2, location_filters, location_kernel, padding=location_kernel // 2, bias=False
        )
        self.location = nn.Linear(location_filters, attention_dim, bias=False)
        self.energy = nn.Linear(attention_dim, 1, bias=False)
        self.decoder_rnn = LSTMCell(attention_rnn + memory_channels, decoder_rnn)
        self.frames = nn.Linear(decoder_rnn + memory_channels, n_mels * reduction)
        self.stop = nn.Linear(decoder_rnn + memory_channels, 1)
        self.rnn_dropout = rnn_dropout

    @property
    def state_size(self) -> int:
        return sum(self.sizes)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, ...]:
        """One sentence's inputs with a memory of `length` tokens; the bucket is dim 1 of the first."""
        memory_channels, attention_dim = self.sizes[-1], self.query.out_features
        return (
            torch.zeros(1, length, memory_channels),  # memory
            torch.zeros(1, length, attention_dim),  # keys
            torch.ones(1, length),  # memory_mask
            torch.zeros(1, 2, length),  # alignment
            torch.zeros(1, self.state_size),  # state
            torch.zeros(1, self.n_mels),  # last frame
            torch.ones(1, 2, self.prenet_channels),  # prenet dropout masks
        )

    def run_prenet(self, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # frames: [..., n_mels], masks: [..., 2, P] (0 or 1 / keep-probability) -> [..., P]
        return _prenet(self.prenet, frames, masks)

    def attend(
        self,
        prenet_out: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        memory_mask: torch.Tensor,
        alignment: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance the recurrent state by one step: (decoder output [B, H + C], alignment, state)."""
        att_h, att_c, dec_h, dec_c, context = split_columns(state, self.sizes)  # [B, S] -> [B, size] each
        att_h, att_c = self.attention_rnn(torch.cat([prenet_out, context], dim=1), (att_h, att_c))
        att_h = F.dropout(att_h, self.rnn_dropout, self.training)
        location = self.location(self.location_conv(alignment).transpose(1, 2))  # [B, N, A]
        weights, context = _attention(self.energy, self.query(att_h), keys, location, memory_mask, memory)
        dec_h, dec_c = self.decoder_rnn(torch.cat([att_h, context], dim=1), (dec_h, dec_c))
        dec_h = F.dropout(dec_h, self.rnn_dropout, self.training)
        alignment = torch.stack([weights, alignment[:, 1] + weights], dim=1)  # [B, 2, N]
        state = torch.cat([att_h, att_c, dec_h, dec_c, context], dim=1)
        return torch.cat([dec_h, context], dim=1), alignment, state

    def project(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # outputs: [..., H + C] -> frames [..., r, n_mels], stop logits [...]
        frames = self.frames(outputs).unflatten(-1, (self.reduction, self.n_mels))
        return frames, self.stop(outputs).squeeze(-1)

    def forward(
        self,
        memory: torch.Tensor,
        keys: torch.Tensor,
        memory_mask: torch.Tensor,
        alignment: torch.Tensor,
        state: torch.Tensor,
        last_frame: torch.Tensor,
        prenet_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frames [B, r, n_mels], stop logit [B], alignment [B, 2, N], state [B, S])."""
        outputs, alignment, state = self.attend(
            self.run_prenet(last_frame, prenet_masks), memory, keys, memory_mask, alignment, state
        )
        frames, stop = self.project(outputs)
        return frames, stop, alignment, state

    def cpu_form(self) -> nn.Module:
        """Fewer, larger products a step: 0.78-0.82x the step's time on one CPU thread (docs/voices.md)."""
        return AttentionStepCpuForm(self)


class AttentionStepCpuForm(nn.Module):
    """`AttentionStep` as a CPU runs it, where a step is a few matrix-vector products and each operator's
    fixed cost counts: each LSTM's input and recurrent products as one product over [input, hidden], the
    location convolution and its projection as one product over windows of the alignment, and the frame
    and stop projections as one. The step's own parameters, which training, the compiler and `check` read,
    are left as they are (these are copies, 6 MiB); equal to the step within float rounding."""

    length_axes = AttentionStep.length_axes
    attention_weight: torch.Tensor
    attention_bias: torch.Tensor
    decoder_weight: torch.Tensor
    decoder_bias: torch.Tensor
    location_weight: torch.Tensor
    output_weight: torch.Tensor
    output_bias: torch.Tensor

    def __init__(self, step: AttentionStep) -> None:
        super().__init__()
        self.prenet, self.query, self.energy = step.prenet, step.query, step.energy
        self.sizes, self.reduction, self.n_mels = step.sizes, step.reduction, step.n_mels
        self.kernel = step.location_conv.kernel_size[0]
        with torch.no_grad():
            for name, cell in (("attention", step.attention_rnn), ("decoder", step.decoder_rnn)):
                weight = torch.cat([cell.weight_ih, cell.weight_hh], 1)  # [4H, I+H]
                self.register_buffer(f"{name}_weight", weight)
                self.register_buffer(f"{name}_bias", cell.bias_ih + cell.bias_hh)  # [4H]
            conv, projection = step.location_conv.weight, step.location.weight  # [F, 2, K], [A, F]
            location = torch.einsum("af,fck->cka", projection, conv).flatten(0, 1)  # [2K, A]
            output = torch.cat([step.frames.weight, step.stop.weight])  # [rM+1, H+C]
            self.register_buffer("location_weight", location.contiguous())
            self.register_buffer("output_weight", output)
            self.register_buffer("output_bias", torch.cat([step.frames.bias, step.stop.bias]))  # [rM+1]

    def forward(
        self,
        memory: torch.Tensor,
        keys: torch.Tensor,
        memory_mask: torch.Tensor,
        alignment: torch.Tensor,
        state: torch.Tensor,
        last_frame: torch.Tensor,
        prenet_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frames [B, r, n_mels], stop logit [B], alignment [B, 2, N], state [B, S]), as AttentionStep."""
        x = _prenet(self.prenet, last_frame, prenet_masks)  # [B, P]
        att_h, att_c, dec_h, dec_c, context = split_columns(state, self.sizes)  # [B, size] each
        att_h, att_c = _lstm(
            torch.cat([x, context, att_h], 1), att_c, self.attention_weight, self.attention_bias
        )
        side = self.kernel // 2
        windows = F.pad(alignment, (side, side)).unfold(2, self.kernel, 1)  # [B, 2, N, K]
        location = windows.permute(0, 2, 1, 3).flatten(2) @ self.location_weight  # [B, N, A]
        weights, context = _attention(self.energy, self.query(att_h), keys, location, memory_mask, memory)
        dec_h, dec_c = _lstm(
            torch.cat([att_h, context, dec_h], 1), dec_c, self.decoder_weight, self.decoder_bias
        )
        outputs = F.linear(torch.cat([dec_h, context], 1), self.output_weight, self.output_bias)  # [B, rM+1]
        frames = outputs[:, :-1].unflatten(-1, (self.reduction, self.n_mels))  # [B, r, n_mels]
        alignment = torch.stack([weights, alignment[:, 1] + weights], dim=1)  # [B, 2, N]
        return frames, outputs[:, -1], alignment, torch.cat([att_h, att_c, dec_h, dec_c, context], dim=1)


def _prenet(layers: nn.ModuleList, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each prenet layer's ReLU output times its dropout mask (drawn by the caller, kept at inference)."""
    # frames: [..., n_mels], masks: [..., 2, P] (0 or 1 / keep-probability) -> [..., P]
    x = frames
    for i, layer in enumerate(layers):
        x = torch.relu(layer(x)) * masks[..., i, :]
    return x


def _attention(
    energy: nn.Module,
    query: torch.Tensor,
    keys: torch.Tensor,
    location: torch.Tensor,
    memory_mask: torch.Tensor,
    memory: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Location-sensitive attention: the weights over the memory (padding gets none) and the context."""
    # query: [B, A], keys, location: [B, N, A], memory_mask: [B, N], memory: [B, N, C]
    energies = energy(torch.tanh(query.unsqueeze(1) + keys + location)).squeeze(-1)  # [B, N]
    weights = torch.softmax(energies.masked_fill(memory_mask == 0, MASKED_ENERGY), dim=1)  # [B, N]
    return weights, torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # [B, N], [B, C]


def _lstm(
    x: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM cell step with its two products as one: x is [input, hidden state] [B, I+H], c [B, H]."""
    return lstm_update(F.linear(x, weight, bias).chunk(4, dim=1), c)


class Postnet(nn.Module):
    """Residual convolutional refinement of the decoder's mel frames, with a known receptive field, so the
    runtime's Decoder block streams it with exactly that much context."""

    def __init__(self, n_mels: int = 80, channels: int = 256, layers: int = 4, kernel_size: int = 5) -> None:
        super().__init__()
        self.inp = nn.Linear(n_mels, channels)
        self.convs = ConvStack(channels, layers, kernel_size, dropout=0.1)
        self.out = nn.Linear(channels, n_mels)
        self.n_mels = n_mels
        self.receptive_radius = self.convs.receptive_radius

    def carried_form(self) -> CarriedConvNetwork:
        """Fed each frame once (shared parameters): no context recomputed between windows."""
        return CarriedConvNetwork(self.inp, self.convs, self.out, residual=True)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.n_mels), torch.ones(1, length)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, n_mels], frame_mask: [B, T]
        mask = frame_mask.unsqueeze(-1)
        return (frames + self.out(self.convs(self.inp(frames) * mask, mask))) * mask  # [B, T, n_mels]
