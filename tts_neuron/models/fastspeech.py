"""A small FastSpeech-style acoustic model: text encoder, duration predictor and mel decoder.

Networks know nothing about blocks. Every network takes a mask and zeroes masked positions after every
layer, so a padded input gives the same outputs at real positions as the unpadded one, and the decoder
is purely convolutional with a known receptive field, so decoding in windows with that much context
equals decoding the whole utterance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class ConvLayer(nn.Module):
    """Residual 1-D convolution, ReLU, LayerNorm; positions outside the mask stay zero."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C], mask: [B, T, 1]
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.finish(x, y, mask)

    def carried(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward` on frames that arrive with `kernel_size // 2` frames of context each side: the
        output of the frames between, with no padding (`ConvStack.carried`)."""
        # x: [B, 2r + n, C], mask: [B, n, 1] -> [B, n, C]
        y = F.conv1d(x.transpose(1, 2), self.conv.weight, self.conv.bias).transpose(1, 2)  # [B, n, C]
        r = self.conv.kernel_size[0] // 2
        return self.finish(x[:, r : x.shape[1] - r], y, mask)

    def finish(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per frame, after the convolution `y` of `x`: the residual, ReLU, LayerNorm and mask."""
        # x, y: [B, T, C], mask: [B, T, 1]
        return self.norm(x + self.dropout(torch.relu(y))) * mask


class ConvStack(nn.Module):
    def __init__(self, channels: int, layers: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvLayer(channels, kernel_size, dropout) for _ in range(layers))
        self.reach = kernel_size // 2
        self.receptive_radius = layers * self.reach
        """Frames of context each side that an output frame depends on."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def carried(
        self, x: torch.Tensor, mask: torch.Tensor, kept: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` on the next `n` frames, each layer given the last inputs it kept: the output lags the
        input by `receptive_radius` frames (`CarriedConvNetwork`). Returns it and what to keep next."""
        # x: [B, n, C] masked; mask: [B, radius + n, 1] from `radius` frames before x's first;
        # kept: [B, layers, 2 * reach, C] -> [B, n, C], radius frames behind x, and the same kept
        r, n, radius = self.reach, x.shape[1], self.receptive_radius
        keep = []
        for i, layer in enumerate(cast(Sequence[ConvLayer], self.layers)):
            x = torch.cat([kept[:, i], x], 1)  # [B, 2r + n, C]
            keep.append(x[:, -2 * r :])
            behind = radius - (i + 1) * r  # this layer's output starts at mask row `behind`
            x = layer.carried(x, mask[:, behind : behind + n])  # [B, n, C]
        return x, torch.stack(keep, 1)


class CarriedConvNetwork(nn.Module):
    """A network of a linear layer per frame, a `ConvStack` and a linear layer per frame (the mel
    decoder; the postnet, which adds its input to its output), fed each frame once: a call takes the next
    frames and the state the call before left, and returns the output `delay` frames behind the last
    frame fed, and the new state (`CarriedNetwork`). Shares the network's parameters."""

    def __init__(self, inp: nn.Linear, convs: ConvStack, out: nn.Linear, residual: bool) -> None:
        super().__init__()
        self.inp, self.convs, self.out, self.residual = inp, convs, out, residual
        self.delay = convs.receptive_radius

    def initial_state(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Nothing before the utterance (masked zeros), batch 1: the last `delay` inputs and their mask,
        and each layer's last inputs."""
        layers, width = len(self.convs.layers), self.inp.out_features
        return (
            torch.zeros(1, self.delay, self.inp.in_features, dtype=dtype, device=device),
            torch.zeros(1, self.delay, dtype=dtype, device=device),
            torch.zeros(1, layers, 2 * self.convs.reach, width, dtype=dtype, device=device),
        )

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        frames_kept: torch.Tensor,
        mask_kept: torch.Tensor,
        layers_kept: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # frames: [B, n, C_in], frame_mask: [B, n] -> output: [B, n, C_out], `delay` frames behind, and
        # the state as given
        n = frames.shape[1]
        masks = torch.cat([mask_kept, frame_mask], 1)  # [B, delay + n]
        mask = masks.unsqueeze(-1)  # [B, delay + n, 1]
        x, layers_kept = self.convs.carried(self.inp(frames) * mask[:, -n:], mask, layers_kept)
        frames = torch.cat([frames_kept, frames], 1)  # [B, delay + n, C_in]
        output = self.out(x)  # [B, n, C_out]
        if self.residual:
            output = output + frames[:, :n]
        return output * mask[:, :n], frames[:, n:], masks[:, n:], layers_kept


class TextEncoder(nn.Module):
    """Symbol ids to one encoding per phoneme."""

    def __init__(
        self, n_symbols: int, channels: int = 192, layers: int = 4, kernel_size: int = 5, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels, padding_idx=0)
        self.convs = ConvStack(channels, layers, kernel_size, dropout)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of one utterance of `length` tokens: what is traced at a bucket and what is padded to it."""
        return torch.zeros(1, length, dtype=torch.int32), torch.ones(1, length)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        # tokens: [B, N] int32 (int64 in training), token_mask: [B, N] -> encodings: [B, N, C]
        mask = token_mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        return self.convs(self.embedding(tokens) * mask, mask)


class DurationPredictor(nn.Module):
    """Encodings to log(1 + frames) per phoneme; the integration layer rounds them to frame counts."""

    def __init__(
        self, channels: int = 192, layers: int = 2, kernel_size: int = 3, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.convs = ConvStack(channels, layers, kernel_size, dropout)
        self.project = nn.Linear(channels, 1)
        # Start at a typical phoneme length (6 frames, about 70 ms), not at zero frames.
        nn.init.constant_(self.project.bias, math.log1p(6.0))

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.project.in_features), torch.ones(1, length)

    def forward(self, encodings: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        # encodings: [B, N, C], token_mask: [B, N] -> log_durations: [B, N]
        mask = token_mask.unsqueeze(-1).to(encodings.dtype)
        return self.project(self.convs(encodings, mask)).squeeze(-1) * mask.squeeze(-1)


class MelDecoder(nn.Module):
    """Upsampled encodings (one per frame) to log-mel frames, with a bounded receptive field."""

    def __init__(
        self,
        in_channels: int = 192,
        channels: int = 256,
        layers: int = 6,
        kernel_size: int = 5,
        n_mels: int = 80,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.project_in = nn.Linear(in_channels, channels)
        self.convs = ConvStack(channels, layers, kernel_size, dropout)
        self.project_out = nn.Linear(channels, n_mels)
        # Start near the log-mel level of speech rather than at 0 (loud).
        nn.init.constant_(self.project_out.bias, -5.0)

    @property
    def receptive_radius(self) -> int:
        return self.convs.receptive_radius

    def carried_form(self) -> CarriedConvNetwork:
        """Fed each frame once (shared parameters): no context recomputed between windows."""
        return CarriedConvNetwork(self.project_in, self.convs, self.project_out, residual=False)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.project_in.in_features), torch.ones(1, length)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, C_in], frame_mask: [B, T] -> mel: [B, T, n_mels]
        mask = frame_mask.unsqueeze(-1).to(frames.dtype)
        x = self.convs(self.project_in(frames) * mask, mask)
        return self.project_out(x) * mask
