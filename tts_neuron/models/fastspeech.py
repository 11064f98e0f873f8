"""A small FastSpeech-style acoustic model: text encoder, duration predictor and mel decoder.

Networks know nothing about blocks. Every network takes a mask and zeroes masked positions after every
layer, so a padded input gives the same outputs at real positions as the unpadded one, and the decoder
is purely convolutional with a known receptive field, so decoding in windows with that much context
equals decoding the whole utterance.
"""

from __future__ import annotations

import math

import torch
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
        y = self.norm(x + self.dropout(torch.relu(y)))
        return y * mask


class ConvStack(nn.Module):
    def __init__(self, channels: int, layers: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvLayer(channels, kernel_size, dropout) for _ in range(layers))
        self.receptive_radius = layers * (kernel_size // 2)
        """Frames of context each side that an output frame depends on."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


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

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.project_in.in_features), torch.ones(1, length)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # frames: [B, T, C_in], frame_mask: [B, T] -> mel: [B, T, n_mels]
        mask = frame_mask.unsqueeze(-1).to(frames.dtype)
        x = self.convs(self.project_in(frames) * mask, mask)
        return self.project_out(x) * mask
