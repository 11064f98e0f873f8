"""VITS inference (Kim et al. 2021, "Conditional Variational Autoencoder with Adversarial Learning for
End-to-End Text-to-Speech"), written for imported Piper voices.

Written from the paper and the MIT-licensed reference implementation's published design; parameter names
follow the checkpoint layout (`enc_p`, `dp`, `flow`, `dec`, `emb_g`) because that is the format being
read. Only inference paths exist: the posterior encoder, the duration predictor's posterior flows and
its first (unused in reverse) coupling are not built.

Three things differ from a training implementation, for fixed shapes and exact streaming:
- every random draw is an input (`noise` tensors), so a compiled graph holds no random operator;
- the duration predictor's rational-quadratic spline computes every element and selects with
  `torch.where` instead of indexing with a boolean mask;
- relative-position attention gathers its embeddings with a constant [N, N] offset table instead of the
  pad-and-reshape trick, so it traces at any bucket.
Tensors are channel-first inside ([B, C, T]), as the convolutions want; `FlowCpuForm`, the flow as a CPU runs
it, is time-major ([B, T, C]) instead.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tts_neuron.models import ChannelNorm, ChannelsLastConv1d, channels_last

LRELU_SLOPE = 0.1
SPLINE_BINS = 10
SPLINE_TAIL = 5.0
MIN_BIN = 1e-3


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class RelativeAttention(nn.Module):
    """Multi-head self-attention with relative-position keys and values within `window` tokens."""

    def __init__(self, channels: int, heads: int, window: int = 4) -> None:
        super().__init__()
        self.heads, self.window, self.k = heads, window, channels // heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k))

    def _bands(self, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Constant index tables for a length n: key offsets as [N, N] indices into the 2W+1 relative
        positions, the N x (2W+1) band of keys around each query, and where each is inside the sequence."""
        w = self.window
        pos = torch.arange(n, device=device)
        offset = pos.unsqueeze(0) - pos.unsqueeze(1)  # [N, N]: j - i
        relative = (offset + w).clamp(0, 2 * w)
        near = offset.abs() <= w  # [N, N]
        band = pos.unsqueeze(1) + torch.arange(-w, w + 1, device=device).unsqueeze(0)  # [N, 2W+1]: i + o
        inside = (band >= 0) & (band < n)
        return relative, near, torch.where(inside, band, torch.zeros_like(band)), inside

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        # x: [B, C, N], attn_mask: [B, 1, N, N]
        b, c, n = x.shape
        q, k, v = (
            conv(x).view(b, self.heads, self.k, n).transpose(2, 3)  # [B, H, N, K]
            for conv in (self.conv_q, self.conv_k, self.conv_v)
        )
        out = self.attend(q, k, v, attn_mask)  # [B, H, N, K]
        return self.conv_o(out.transpose(2, 3).reshape(b, c, n))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        """Each head's attention with relative keys and values: q, k, v [B, H, N, K] -> [B, H, N, K]."""
        b, _, n, _ = q.shape
        relative, near, band, inside = self._bands(n, q.device)
        q = q / math.sqrt(self.k)
        scores = q @ k.transpose(2, 3)  # [B, H, N, N]
        # The relative keys: each query against the 2W+1 offsets, placed at j = i + offset (0 beyond W).
        by_offset = q @ self.emb_rel_k[0].transpose(0, 1)  # [B, H, N, 2W+1]
        placed = by_offset.gather(-1, relative.expand(b, self.heads, n, n))  # [B, H, N, N]
        scores = scores + placed * near.to(q.dtype)
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        p = torch.softmax(scores, dim=-1)
        # The relative values: each query's weights on the keys at offsets -W..W, times their embeddings.
        weights = p.gather(-1, band.expand(b, self.heads, n, band.shape[1])) * inside.to(q.dtype)
        return p @ v + weights @ self.emb_rel_v[0]


class FeedForward(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(x * mask))
        return self.conv_2(x * mask) * mask


class AttentionEncoder(nn.Module):
    def __init__(
        self, channels: int, filter_channels: int, heads: int, layers: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(RelativeAttention(channels, heads) for _ in range(layers))
        self.norm_layers_1 = nn.ModuleList(ChannelNorm(channels) for _ in range(layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(channels, filter_channels, kernel_size) for _ in range(layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelNorm(channels) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, C, N], mask: [B, 1, N]
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)  # [B, 1, N, N]
        x = x * mask
        for attn, norm_1, ffn, norm_2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm_1(x + attn(x, attn_mask))
            x = norm_2(x + ffn(x, mask))
        return x * mask


class TextEncoder(nn.Module):
    """Phoneme ids to hidden states and the prior's mean and log-scale per phoneme."""

    def __init__(
        self, n_vocab: int, out_channels: int, hidden: int, filter_channels: int, heads: int, layers: int,
        kernel_size: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.hidden, self.out_channels = hidden, out_channels
        self.emb = nn.Embedding(n_vocab, hidden)
        self.encoder = AttentionEncoder(hidden, filter_channels, heads, layers, kernel_size)
        self.proj = nn.Conv1d(hidden, out_channels * 2, 1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # tokens: [B, N], mask: [B, 1, N] -> x, m, logs: [B, H, N], [B, C, N], [B, C, N]
        x = (self.emb(tokens) * math.sqrt(self.hidden)).transpose(1, 2)
        x = self.encoder(x * mask, mask)
        stats = self.proj(x) * mask
        return x, stats[:, : self.out_channels], stats[:, self.out_channels :]


class DilatedDepthSeparableConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList(
            nn.Conv1d(
                channels, channels, kernel_size, groups=channels, dilation=kernel_size**i,
                padding=_same_padding(kernel_size, kernel_size**i),
            )
            for i in range(layers)
        )  # fmt: skip
        self.convs_1x1 = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(layers))
        self.norms_1 = nn.ModuleList(ChannelNorm(channels) for _ in range(layers))
        self.norms_2 = nn.ModuleList(ChannelNorm(channels) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for sep, one, norm_1, norm_2 in zip(
            self.convs_sep, self.convs_1x1, self.norms_1, self.norms_2, strict=True
        ):
            y = F.gelu(norm_1(sep(x * mask)))
            x = x + F.gelu(norm_2(one(y)))
        return x * mask


def _searchsorted(edges: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index of the bin of `x` among ascending `edges` [..., K+1] (the last edge nudged up by 1e-6)."""
    top = torch.zeros_like(edges)
    top[..., -1] = 1e-6
    return ((x.unsqueeze(-1) >= edges + top).sum(-1) - 1).clamp(0, edges.shape[-1] - 2)


def inverse_spline(
    x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor
) -> torch.Tensor:
    """Inverse monotonic rational-quadratic spline on [-5, 5], identity outside (Durkan et al. 2019).

    x: [...], widths/heights: [..., K] unnormalised, derivatives: [..., K-1] unnormalised (inner knots).
    Every element is computed on a clamped input and the tails are selected with torch.where."""
    inside = (x >= -SPLINE_TAIL) & (x <= SPLINE_TAIL)
    xc = x.clamp(-SPLINE_TAIL, SPLINE_TAIL)
    edge = math.log(math.exp(1 - MIN_BIN) - 1)
    derivatives = F.pad(derivatives, (1, 1), value=edge)

    def knots(unnormalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Knot positions [..., K+1] on [-tail, tail] (ends exact) and bin sizes [..., K]."""
        bins = unnormalised.shape[-1]
        sizes = MIN_BIN + (1 - MIN_BIN * bins) * torch.softmax(unnormalised, dim=-1)
        cum = torch.cumsum(sizes, dim=-1)[..., :-1] * (2 * SPLINE_TAIL) - SPLINE_TAIL
        end = torch.full_like(cum[..., :1], SPLINE_TAIL)
        cum = torch.cat([-end, cum, end], dim=-1)
        return cum, cum[..., 1:] - cum[..., :-1]

    cumwidths, widths = knots(widths)
    cumheights, heights = knots(heights)
    slopes = MIN_BIN + F.softplus(derivatives)
    idx = _searchsorted(cumheights, xc).unsqueeze(-1)

    def at(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx).squeeze(-1)

    delta = heights / widths
    y0, h, w, x0, d = at(cumheights), at(heights), at(widths), at(cumwidths), at(delta)
    s0, s1 = at(slopes[..., :-1]), at(slopes[..., 1:])
    dy = xc - y0
    a = dy * (s0 + s1 - 2 * d) + h * (d - s0)
    b = h * s0 - dy * (s0 + s1 - 2 * d)
    c = -d * dy
    root = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))
    return torch.where(inside, root * w + x0, x)


class ConvFlow(nn.Module):
    """Neural spline coupling of the duration predictor, run in reverse."""

    def __init__(self, filter_channels: int, kernel_size: int, layers: int = 3) -> None:
        super().__init__()
        self.filter_channels = filter_channels
        self.pre = nn.Conv1d(1, filter_channels, 1)
        self.convs = DilatedDepthSeparableConv(filter_channels, kernel_size, layers)
        self.proj = nn.Conv1d(filter_channels, 3 * SPLINE_BINS - 1, 1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # z: [B, 2, N], mask: [B, 1, N], g: [B, F, N]
        z0, z1 = z[:, :1], z[:, 1:]
        h = self.proj(self.convs(self.pre(z0), mask, g=g)) * mask  # [B, 3K-1, N]
        h = h.transpose(1, 2)  # [B, N, 3K-1]
        scale = math.sqrt(self.filter_channels)
        k = SPLINE_BINS
        z1 = inverse_spline(z1[:, 0], h[..., :k] / scale, h[..., k : 2 * k] / scale, h[..., 2 * k :])
        return torch.cat([z0, z1.unsqueeze(1)], 1) * mask


class ElementwiseAffine(nn.Module):
    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (z - self.m) * torch.exp(-self.logs) * mask


class Identity(nn.Module):
    """Placeholder that keeps checkpoint indices (`flows.1`, ...) where a flip or unused flow sat."""


class StochasticDurationPredictor(nn.Module):
    """log-durations from noise [B, 2, N] through the reverse flows, conditioned on the text."""

    def __init__(self, channels: int, kernel_size: int = 3, n_flows: int = 4, gin_channels: int = 0) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.convs = DilatedDepthSeparableConv(channels, kernel_size, 3)
        self.proj = nn.Conv1d(channels, channels, 1)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, channels, 1)
        # Checkpoint layout: flows.0 affine, then (spline, flip) pairs at 1..8. Reverse inference skips the
        # first spline (flows.1), so only flows.3, .5 and .7 are built; the others hold no parameters.
        self.flows = nn.ModuleList(
            ConvFlow(channels, kernel_size) if i % 2 and i > 1 else Identity() for i in range(2 * n_flows)
        )
        self.flows[0] = ElementwiseAffine(2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, g: torch.Tensor | None
    ) -> torch.Tensor:
        # x: [B, H, N], mask: [B, 1, N], noise: [B, 2, N] (already times noise_w) -> log w: [B, 1, N]
        x = self.pre(x)
        if g is not None:
            x = x + self.cond(g)
        x = self.proj(self.convs(x, mask)) * mask
        z = torch.flip(noise, [1])
        for flow in reversed(self.flows[1:]):
            if isinstance(flow, ConvFlow):
                z = torch.flip(flow(z, mask, x), [1])
        affine = self.flows[0]
        assert isinstance(affine, ElementwiseAffine)
        return affine(z, mask)[:, :1]


class WaveNet(nn.Module):
    """Non-causal WaveNet of gated dilated convolutions (the flow's coupling network)."""

    def __init__(self, hidden: int, kernel_size: int, layers: int, gin_channels: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        if gin_channels:
            self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * layers, 1)
        self.in_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden, kernel_size, padding=kernel_size // 2) for _ in range(layers)
        )
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1) for i in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        # x: [B, H, T], mask: [B, 1, T], g: [B, G, 1] or None
        h = self.hidden
        cond = self.cond_layer(g) if g is not None else None  # [B, 2H * layers, 1]
        out = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (conv, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a = conv(x)
            if cond is not None:
                a = a + cond[:, 2 * h * i : 2 * h * (i + 1)]
            acts = res_skip(torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:]))
            if i < last:
                x = (x + acts[:, :h]) * mask
                out = out + acts[:, h:]
            else:
                out = out + acts
        return out * mask


class CouplingLayer(nn.Module):
    """Mean-only affine coupling, run in reverse."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, layers: int, gin_channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        self.pre = nn.Conv1d(self.split, hidden, 1)
        self.enc = WaveNet(hidden, kernel_size, layers, gin_channels)
        self.post = nn.Conv1d(hidden, self.split, 1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        z0, z1 = z[:, : self.split], z[:, self.split :]
        mean = self.post(self.enc(self.pre(z0) * mask, mask, g)) * mask
        return torch.cat([z0, (z1 - mean) * mask], 1)


class ReverseFlow(nn.Module):
    """The prior-to-latent flow: couplings at even checkpoint indices, flips between them."""

    def __init__(self, channels: int, hidden: int, gin_channels: int, n_flows: int = 4) -> None:
        super().__init__()
        self.flows = nn.ModuleList(
            CouplingLayer(channels, hidden, 5, 4, gin_channels) if i % 2 == 0 else Identity()
            for i in range(2 * n_flows)
        )
        self.receptive_radius = n_flows * 4 * (5 // 2)
        """Frames each side a latent frame depends on: 4 couplings of 4 layers of kernel 5."""

    def forward(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        for flow in reversed(self.flows):
            z = flow(z, mask, g) if isinstance(flow, CouplingLayer) else torch.flip(z, [1])
        return z


class ResBlock(nn.Module):
    """HiFi-GAN residual block: type "1" pairs a dilated and a plain conv per dilation, type "2" has one.
    With a mask, every convolution's input is zero outside it (what zero padding gives at an utterance's
    edges), so a window padded to a bucket gives the unpadded window's samples."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], kind: str) -> None:
        super().__init__()

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(
                channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d)
            )

        if kind == "1":
            self.convs1 = nn.ModuleList(conv(d) for d in dilations)
            self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        else:
            self.convs = nn.ModuleList(conv(d) for d in dilations)
        self.kind = kind

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, S], mask: [B, 1, S] or None (x is zero outside the mask on entry)
        if self.kind == "1":
            for c1, c2 in zip(self.convs1, self.convs2, strict=True):
                y = F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)
                x = _masked(x + c2(_masked(y, mask)), mask)
        else:
            for c in self.convs:
                x = _masked(x + c(F.leaky_relu(x, LRELU_SLOPE)), mask)
        return x


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _upsampled_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, 1, T] -> [B, 1, T * factor], each frame's value repeated (a reshape: it traces at any shape)."""
    b, _, t = mask.shape
    return mask.unsqueeze(-1).expand(b, 1, t, factor).reshape(b, 1, t * factor)


class Generator(nn.Module):
    """HiFi-GAN: latent frames [B, C, T] to audio [B, 1, T * prod(upsample_rates)]."""

    def __init__(
        self, in_channels: int, resblock: str, resblock_kernel_sizes: list[int],
        resblock_dilation_sizes: list[list[int]], upsample_rates: list[int], upsample_initial_channel: int,
        upsample_kernel_sizes: list[int], gin_channels: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        ch = upsample_initial_channel
        self.n_kernels = len(resblock_kernel_sizes)
        self.rates = list(upsample_rates)
        self.conv_pre = nn.Conv1d(in_channels, ch, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(ch // 2 ** (i + 1), k, d, resblock)
            for i in range(len(upsample_rates))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True)
        )
        self.conv_post = nn.Conv1d(ch // 2 ** len(upsample_rates), 1, 7, padding=3, bias=False)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, ch, 1)
        self.receptive_radius = generator_radius(
            resblock, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates, upsample_kernel_sizes
        )

    def forward(
        self, x: torch.Tensor, g: torch.Tensor | None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: [B, C, T] (zero outside the mask), g: [B, G, 1] or None, mask: [B, 1, T] or None (no padding)
        x = self.conv_pre(x)
        if g is not None:
            x = x + self.cond(g)
        x, rate = _masked(x, mask), 1
        for i, up in enumerate(self.ups):
            rate *= self.rates[i]
            m = None if mask is None else _upsampled_mask(mask, rate)
            x = _masked(up(F.leaky_relu(x, LRELU_SLOPE)), m)
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            x = sum((block(x, m) for block in blocks), torch.zeros_like(x)) / self.n_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # the last activation uses slope 0.01


def generator_radius(
    resblock: str,
    kernel_sizes: list[int],
    dilations: list[list[int]],
    rates: list[int],
    up_kernels: list[int],
) -> int:
    """Frames of context each side that one frame's samples depend on, summed layer by layer in frames (an
    upper bound): conv_pre, then per upsampling its transposed convolution and its widest residual block,
    then conv_post. A transposed convolution of kernel k and stride u reaches k / 2u + 1/2 input samples."""
    frames, rate = 3.0, 1  # conv_pre: kernel 7
    for u, k in zip(rates, up_kernels, strict=True):
        frames += math.ceil(k / (2 * u) + 0.5) / rate
        rate *= u
        reach = max(
            sum(d * (ks - 1) // 2 + ((ks - 1) // 2 if resblock == "1" else 0) for d in ds)
            for ks, ds in zip(kernel_sizes, dilations, strict=True)
        )
        frames += reach / rate
    frames += 3 / rate  # conv_post: kernel 7
    return math.ceil(frames)


class Vits(nn.Module):
    """A whole VITS voice in the checkpoint's layout (`enc_p`, `dp`, `flow`, `dec`, `emb_g`), for the
    importer: its state dict names what the ONNX file's initializers are mapped to, and `split` cuts it
    into the addon's three networks. `config` holds the constructor arguments, read from the weights."""

    def __init__(
        self, n_vocab: int, n_speakers: int = 1, gin_channels: int = 0, inter_channels: int = 192,
        hidden_channels: int = 192, filter_channels: int = 768, n_heads: int = 2, n_layers: int = 6,
        kernel_size: int = 3, resblock: str = "2", resblock_kernel_sizes: list[int] | None = None,
        resblock_dilation_sizes: list[list[int]] | None = None, upsample_rates: list[int] | None = None,
        upsample_initial_channel: int = 256, upsample_kernel_sizes: list[int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        gin = gin_channels if n_speakers > 1 else 0
        self.enc_p = TextEncoder(
            n_vocab, inter_channels, hidden_channels, filter_channels, n_heads, n_layers, kernel_size
        )
        self.dp = StochasticDurationPredictor(hidden_channels, 3, 4, gin)
        self.flow = ReverseFlow(inter_channels, hidden_channels, gin)
        self.dec = Generator(
            inter_channels, resblock, resblock_kernel_sizes or [3, 5, 7],
            resblock_dilation_sizes or [[1, 2], [2, 6], [3, 12]], upsample_rates or [8, 8, 4],
            upsample_initial_channel, upsample_kernel_sizes or [16, 16, 8], gin,
        )  # fmt: skip
        if n_speakers > 1:
            self.emb_g = nn.Embedding(n_speakers, gin)


NETWORK_PARTS = {"encoder": ("enc_p.", "dp."), "flow": ("flow.",), "generator": ("dec.",)}
"""Which checkpoint prefixes each addon network holds (each multi-speaker network also holds `emb_g`)."""


class _Speakers(nn.Module):
    """A network's own copy of the speaker embedding (multi-speaker voices): speaker [B] -> g [B, G, 1]."""

    def __init__(self, n_speakers: int, gin_channels: int) -> None:
        super().__init__()
        self.n_speakers = n_speakers
        if n_speakers > 1:
            self.emb_g = nn.Embedding(n_speakers, gin_channels)

    @property
    def gin(self) -> int:
        return self.emb_g.embedding_dim if self.n_speakers > 1 else 0

    def speaker(self, speaker: torch.Tensor | None) -> torch.Tensor | None:
        if self.n_speakers <= 1:
            return None
        if speaker is None:
            raise ValueError("a multi-speaker voice needs a speaker id")
        return self.emb_g(speaker.long()).unsqueeze(-1)

    def speaker_example(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, dtype=torch.int32),) if self.n_speakers > 1 else ()


class VitsEncoder(_Speakers):
    """The token side (role "encoder"): text encoder and stochastic duration predictor in reverse.

    tokens [B, N] (int), token_mask [B, N], duration_noise [B, N, 2] (standard normal times noise_w),
    speaker [B] (multi-speaker voices only) -> prior [B, N, 2C] (the prior's mean and log-scale per token)
    and log_durations [B, N] (log w: Piper's frames are ceil(exp(log w) * length_scale)). Padded positions
    give zeros and do not change real ones."""

    def __init__(
        self, n_vocab: int, n_speakers: int = 1, gin_channels: int = 0, inter_channels: int = 192,
        hidden_channels: int = 192, filter_channels: int = 768, n_heads: int = 2, n_layers: int = 6,
        kernel_size: int = 3,
    ) -> None:  # fmt: skip
        super().__init__(n_speakers, gin_channels)
        self.enc_p = TextEncoder(
            n_vocab, inter_channels, hidden_channels, filter_channels, n_heads, n_layers, kernel_size
        )
        self.dp = StochasticDurationPredictor(hidden_channels, 3, 4, self.gin)

    def forward(
        self, tokens: torch.Tensor, token_mask: torch.Tensor, duration_noise: torch.Tensor,
        speaker: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        mask = token_mask.unsqueeze(1).to(self.enc_p.proj.weight.dtype)  # [B, 1, N]
        g = self.speaker(speaker)
        x, m, logs = self.enc_p(tokens.long(), mask)
        logw = self.dp(x, mask, duration_noise.transpose(1, 2), g)[:, 0] * token_mask  # [B, N]
        return torch.cat([m, logs], 1).transpose(1, 2), logw

    def cpu_form(self) -> nn.Module:
        """Time-major text encoder and duration predictor: 0.70-0.82x the network's time on CPU
        (docs/importing.md)."""
        return EncoderCpuForm(self)

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]:
        tokens = torch.zeros(1, bucket, dtype=torch.int32)
        return (tokens, torch.ones(1, bucket), torch.zeros(1, bucket, 2), *self.speaker_example())


class EncoderCpuForm(nn.Module):
    """`VitsEncoder` as a CPU with dynamic shapes runs it: the text encoder time-major ([B, N, C], as
    the embedding gives it) from end to end, query, key and value one matrix product, each kernel-3
    convolution of the feed-forward layers three products over shifted views (no im2col), the layer norms
    without transposes; the duration predictor time-major too, its depthwise convolutions as
    multiply-adds of shifted views. The encoder's own parameters, which the compiler and `check` read,
    are left as they are (the matrices are copies, 26 MiB for a medium voice); equal to the encoder
    within float rounding."""

    def __init__(self, encoder: VitsEncoder) -> None:
        super().__init__()
        self.encoder = encoder  # its embedding, norms, relative embeddings and duration predictor, shared
        text = encoder.enc_p.encoder
        self.layers = [
            _AttentionLayer.of(*modules)
            for modules in zip(
                text.attn_layers, text.norm_layers_1, text.ffn_layers, text.norm_layers_2, strict=True
            )
        ]
        self.proj = _taps(encoder.enc_p.proj)
        self.durations = _DurationPredictor.of(encoder.dp)

    def forward(
        self, tokens: torch.Tensor, token_mask: torch.Tensor, duration_noise: torch.Tensor,
        speaker: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        encoder, enc_p = self.encoder, self.encoder.enc_p
        mask = token_mask.unsqueeze(2).to(enc_p.proj.weight.dtype)  # [B, N, 1]
        x = enc_p.emb(tokens.long()) * math.sqrt(enc_p.hidden) * mask  # [B, N, C]
        attn_mask = (mask * mask.transpose(1, 2)).unsqueeze(1)  # [B, 1, N, N]
        for layer in self.layers:
            x = layer(x, mask, attn_mask)
        x = x * mask
        prior = _conv(x, *self.proj) * mask  # [B, N, 2C]: the mean, then the log-scale
        logw = self.durations(x, mask, duration_noise, encoder.speaker(speaker))  # [B, N]
        return prior, logw * token_mask


@dataclasses.dataclass
class _AttentionLayer:
    """One layer of the text encoder, time-major: its modules (shared) and its convolutions as matrices
    per kernel tap ([K, in, out]) and biases, the query's, key's and value's side by side."""

    attn: RelativeAttention
    norm_1: ChannelNorm
    norm_2: ChannelNorm
    qkv: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    ffn_1: tuple[torch.Tensor, torch.Tensor]
    ffn_2: tuple[torch.Tensor, torch.Tensor]

    @staticmethod
    @torch.no_grad()
    def of(attn: nn.Module, norm_1: nn.Module, ffn: nn.Module, norm_2: nn.Module) -> _AttentionLayer:
        assert isinstance(attn, RelativeAttention) and isinstance(ffn, FeedForward)
        assert isinstance(norm_1, ChannelNorm) and isinstance(norm_2, ChannelNorm)
        q, k, v = (_taps(conv) for conv in (attn.conv_q, attn.conv_k, attn.conv_v))
        qkv = (torch.cat([q[0], k[0], v[0]], dim=2), torch.cat([q[1], k[1], v[1]]))
        return _AttentionLayer(
            attn, norm_1, norm_2, qkv, _taps(attn.conv_o), _taps(ffn.conv_1), _taps(ffn.conv_2)
        )

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        # x: [B, N, C], mask: [B, N, 1], attn_mask: [B, 1, N, N] -> [B, N, C]
        b, n, c = x.shape
        heads, k = self.attn.heads, self.attn.k
        q, key, v = (y.view(b, n, heads, k).transpose(1, 2) for y in _conv(x, *self.qkv).split(c, dim=2))
        out = self.attn.attend(q, key, v, attn_mask).transpose(1, 2).reshape(b, n, c)  # [B, N, C]
        x = self.norm_1.time_major(x + _conv(out, *self.out))
        h = torch.relu(_conv(x * mask, *self.ffn_1))  # [B, N, F]
        return self.norm_2.time_major(x + _conv(h * mask, *self.ffn_2) * mask)


_SeparableLayer = tuple[
    torch.Tensor, torch.Tensor, int, tuple[torch.Tensor, torch.Tensor], ChannelNorm, ChannelNorm
]
"""Depthwise taps [K, C], bias [C], dilation, the 1x1 convolution as (matrix [1, C, C], bias), two norms."""


@dataclasses.dataclass
class _SeparableLayers:
    """A `DilatedDepthSeparableConv`, time-major: per layer its depthwise taps [K, C], bias and dilation,
    its 1x1 convolution as a matrix, and its two norms (shared)."""

    layers: list[_SeparableLayer]

    @staticmethod
    @torch.no_grad()
    def of(convs: DilatedDepthSeparableConv) -> _SeparableLayers:
        layers: list[_SeparableLayer] = []
        for sep, one, norm_1, norm_2 in zip(
            convs.convs_sep, convs.convs_1x1, convs.norms_1, convs.norms_2, strict=True
        ):
            assert isinstance(sep, nn.Conv1d) and sep.bias is not None
            assert isinstance(norm_1, ChannelNorm) and isinstance(norm_2, ChannelNorm)
            taps = sep.weight[:, 0].t().clone(memory_format=torch.contiguous_format)  # [K, C]
            layers.append((taps, sep.bias.clone(), sep.dilation[0], _taps(one), norm_1, norm_2))
        return _SeparableLayers(layers)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, N, C], mask: [B, N, 1], g: [B, N, C] or [B, 1, C] -> [B, N, C]
        if g is not None:
            x = x + g
        n = x.shape[1]
        for taps, bias, dilation, one, norm_1, norm_2 in self.layers:
            reach = dilation * (taps.shape[0] // 2)
            padded = F.pad(x * mask, (0, 0, reach, reach))  # [B, N + 2 reach, C]
            y = torch.addcmul(bias, padded[:, :n], taps[0])
            for k in range(1, taps.shape[0]):
                y.addcmul_(padded[:, k * dilation : k * dilation + n], taps[k])
            y = F.gelu(norm_1.time_major(y))
            x = x + F.gelu(norm_2.time_major(_conv(y, *one)))
        return x * mask


@dataclasses.dataclass
class _SplineFlow:
    """A `ConvFlow`, time-major (z [B, N, 2])."""

    pre: tuple[torch.Tensor, torch.Tensor]
    convs: _SeparableLayers
    proj: tuple[torch.Tensor, torch.Tensor]
    scale: float

    @staticmethod
    def of(flow: ConvFlow) -> _SplineFlow:
        convs = _SeparableLayers.of(flow.convs)
        return _SplineFlow(_taps(flow.pre), convs, _taps(flow.proj), math.sqrt(flow.filter_channels))

    def __call__(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # z: [B, N, 2], mask: [B, N, 1], g: [B, N, F] -> [B, N, 2]
        z0, k = z[..., :1], SPLINE_BINS
        h = _conv(self.convs(_conv(z0, *self.pre), mask, g), *self.proj) * mask  # [B, N, 3K-1]
        widths, heights = h[..., :k] / self.scale, h[..., k : 2 * k] / self.scale
        z1 = inverse_spline(z[..., 1], widths, heights, h[..., 2 * k :])  # [B, N]
        return torch.cat([z0, z1.unsqueeze(2)], 2) * mask


@dataclasses.dataclass
class _DurationPredictor:
    """A `StochasticDurationPredictor`, time-major, as `EncoderCpuForm` runs it."""

    pre: tuple[torch.Tensor, torch.Tensor]
    cond: tuple[torch.Tensor, torch.Tensor] | None
    convs: _SeparableLayers
    proj: tuple[torch.Tensor, torch.Tensor]
    flows: list[_SplineFlow]
    """In the order they run (reverse)."""
    affine: ElementwiseAffine

    @staticmethod
    def of(dp: StochasticDurationPredictor) -> _DurationPredictor:
        affine = dp.flows[0]
        assert isinstance(affine, ElementwiseAffine)
        cond = _taps(dp.cond) if hasattr(dp, "cond") else None
        flows = [_SplineFlow.of(flow) for flow in reversed(dp.flows[1:]) if isinstance(flow, ConvFlow)]
        return _DurationPredictor(
            _taps(dp.pre), cond, _SeparableLayers.of(dp.convs), _taps(dp.proj), flows, affine
        )

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, g: torch.Tensor | None
    ) -> torch.Tensor:
        # x: [B, N, H], mask: [B, N, 1], noise: [B, N, 2] (times noise_w), g: [B, G, 1] -> log w [B, N]
        x = _conv(x, *self.pre)
        if g is not None and self.cond is not None:
            x = x + _conv(g.transpose(1, 2), *self.cond)  # [B, 1, H]
        x = _conv(self.convs(x, mask), *self.proj) * mask
        z = torch.flip(noise, [2])
        for flow in self.flows:
            z = torch.flip(flow(z, mask, x), [2])
        affine = self.affine
        z = (z - affine.m.t()) * torch.exp(-affine.logs.t()) * mask  # [B, N, 2]
        return z[..., 0]


class VitsFlow(_Speakers):
    """The reverse flow (role "decoder"), frames to frames: z_p [B, T, C] (the prior's sample: mean plus
    noise times its scale), frame_mask [B, T], speaker [B] (multi-speaker only) -> z [B, T, C]. Each
    frame depends on `receptive_radius` frames each side (4 couplings of 4 layers of kernel 5)."""

    def __init__(
        self,
        n_speakers: int = 1,
        gin_channels: int = 0,
        inter_channels: int = 192,
        hidden_channels: int = 192,
    ) -> None:
        super().__init__(n_speakers, gin_channels)
        self.channels = inter_channels
        self.flow = ReverseFlow(inter_channels, hidden_channels, self.gin)
        self.receptive_radius = self.flow.receptive_radius

    def cpu_form(self) -> nn.Module:
        """Time-major products instead of convolutions: 0.8-0.9x the time on CPU (docs/importing.md)."""
        return FlowCpuForm(self)

    def carried_form(self) -> nn.Module:
        """Fed each frame once, time-major as the CPU form (`CarriedFlow`)."""
        return FlowCpuForm(self).carried_form()

    def forward(
        self, z_p: torch.Tensor, frame_mask: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = frame_mask.unsqueeze(1).to(z_p.dtype)  # [B, 1, T]
        return self.flow(z_p.transpose(1, 2) * mask, mask, self.speaker(speaker)).transpose(1, 2)

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, bucket, self.channels), torch.ones(1, bucket), *self.speaker_example())


class FlowCpuForm(nn.Module):
    """`VitsFlow` as a CPU with dynamic shapes runs it: time-major ([B, T, C], the flow's own input
    layout) from end to end, each kernel-5 convolution five matrix products over shifted views of one
    zero-padded buffer (no im2col copy), and the gate's tanh(a) * sigmoid(b) as
    2 (sigmoid(2a) - 1/2) * sigmoid(b): one sigmoid over both halves, with the 2s folded into copies of
    the weights (27 MiB for a medium voice, as much as the flow's parameters). The flow's own
    parameters, which the compiler and `check` read, are left as they are; equal to the flow within
    float rounding."""

    def __init__(self, flow: VitsFlow) -> None:
        super().__init__()
        self.flow = flow  # its speaker embedding and cond layers, shared
        self.couplings = [c for c in flow.flow.flows if isinstance(c, CouplingLayer)]
        self.matrices = [_CouplingMatrices.of(c) for c in self.couplings]

    def carried_form(self) -> CarriedFlow:
        """Fed each frame once, with these matrices (shared, not copied again)."""
        return CarriedFlow(self)

    def forward(
        self, z_p: torch.Tensor, frame_mask: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        # z_p: [B, T, C], frame_mask: [B, T]
        mask = frame_mask.unsqueeze(2).to(z_p.dtype)  # [B, T, 1]
        g = self.flow.speaker(speaker)  # [B, G, 1] or None
        z = z_p * mask
        for coupling, matrices in zip(reversed(self.couplings), reversed(self.matrices), strict=True):
            z = torch.flip(z, [2])  # the flip that precedes each coupling in reverse
            z0, z1 = z[..., : coupling.split], z[..., coupling.split :]
            cond = None if g is None else coupling.enc.cond_layer(g).transpose(1, 2)  # [B, 1, 2H * layers]
            mean = matrices.mean(z0, mask, cond) * mask  # [B, T, S]
            z = torch.cat([z0, (z1 - mean) * mask], 2)
        return z


class CarriedFlow(nn.Module):
    """`VitsFlow` fed each frame once (`CarriedNetwork`), time-major with a `FlowCpuForm`'s matrices: a call
    takes the next latent frames (and the speaker, for a multi-speaker voice) with the state the call
    before left, and returns the flow's output `delay` frames behind the last frame fed. Each coupling
    lags its input by its WaveNet's reach (4 layers of kernel 5: 8 frames) and keeps, for that: its last
    inputs (passed through, delayed), each layer's last inputs, and each layer's sum of skips so far. An
    utterance's first call computes each layer from the utterance's start only, as `CarriedGenerator`'s
    does."""

    def __init__(self, form: FlowCpuForm) -> None:
        super().__init__()
        self.form = form  # its matrices, shared
        self.flow, self.couplings, self.matrices = form.flow, form.couplings[::-1], form.matrices[::-1]
        kernel, self.hidden = self.matrices[0].layers[0][0].shape[:2]  # run order: the flow in reverse
        self.reach, self.layers = kernel // 2, len(self.matrices[0].layers)
        self.lag = self.reach * self.layers  # frames a coupling's output lags its input
        self.delay = self.lag * len(self.couplings)
        self.conditioned = form.flow.n_speakers > 1

    def initial_state(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Nothing before the utterance (masked zeros), batch 1: the mask of the last `delay` frames; per
        coupling its last inputs, each layer's last inputs, and each layer's skips after the first."""
        couplings, r, layers, hidden = len(self.couplings), self.reach, self.layers, self.hidden
        shapes = [
            (1, self.delay),
            (1, couplings, self.lag, self.flow.channels),
            (1, couplings, layers, 2 * r, hidden),
            (1, couplings, layers - 1, r, hidden),
        ]
        return tuple(torch.zeros(shape, dtype=dtype, device=device) for shape in shapes)

    def forward(
        self, z_p: torch.Tensor, frame_mask: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        # z_p: [B, n, C], frame_mask: [B, n], rest: (speaker [B],) if conditioned, then the state ->
        # z: [B, n, C], `delay` frames behind, and the state as given
        speaker, (mask_kept, inputs_kept, layers_kept, skips_kept) = (
            (rest[0], rest[1:]) if self.conditioned else (None, rest)
        )
        n, r, lag, delay = z_p.shape[1], self.reach, self.lag, self.delay
        masks = torch.cat([mask_kept, frame_mask], 1)  # [B, delay + n]
        mask = masks.unsqueeze(2)  # [B, delay + n, 1]: from `delay` frames before the first fed
        # In a fresh call each layer computes only from the utterance's start, so each coupling's frames
        # are `lag` fewer; the output is padded back.
        skipped = r if _fresh(mask_kept, n) else 0  # a layer's outputs before the start, not computed
        g = self.flow.speaker(speaker)  # [B, G, 1] or None
        z = z_p * mask[:, -n:]
        keep_inputs, keep_layers, keep_skips = [], [], []
        for j, (coupling, matrices) in enumerate(zip(self.couplings, self.matrices, strict=True)):
            end = delay + n - lag * j  # the mask row after this coupling's last input frame
            length = z.shape[1]  # its input frames: n, or n - lag * j in a fresh call
            z = torch.flip(z, [2])  # the flip that precedes each coupling in reverse
            cond = None if g is None else coupling.enc.cond_layer(g).transpose(1, 2)  # [B, 1, 2H * layers]
            x = _matmul(z[..., : coupling.split], *matrices.pre) * mask[:, end - length : end]  # [B, m, H]
            skip: torch.Tensor | None = None
            for i, ((taps, bias), res_skip) in enumerate(
                zip(matrices.layers, matrices.res_skip, strict=True)
            ):
                x = torch.cat([layers_kept[:, j, i], x], 1)  # [B, 2r + m, H]
                keep_layers.append(x[:, -2 * r :])
                taken = x[:, skipped:]  # the inputs of the outputs computed
                m = taken.shape[1] - 2 * r  # outputs, r frames behind the inputs
                a = torch.baddbmm(bias, taken[:, :m], taps[0].expand(len(x), -1, -1))  # [B, m, 2H]
                for k in range(1, 2 * r + 1):
                    a.baddbmm_(taken[:, k : k + m], taps[k].expand(len(x), -1, -1))
                if cond is not None:
                    a += cond[..., 2 * self.hidden * i : 2 * self.hidden * (i + 1)] * matrices.gate
                gates = a.sigmoid_()
                acts = _matmul((gates[..., : self.hidden] - 0.5).mul_(gates[..., self.hidden :]), *res_skip)
                last = i == self.layers - 1
                skips = acts if last else acts[..., self.hidden :]  # [B, m, H], r(i + 1) behind the input
                if skip is not None:  # the skips so far, r frames further behind
                    before = skip.shape[1]
                    skip = torch.cat([skips_kept[:, j, i - 1], skip], 1)  # [B, r + before, H]
                    keep_skips.append(skip[:, -r:])
                    skips = skips + skip[:, before - m : before]
                skip = skips
                if not last:
                    out = end - r * (i + 1)  # the mask row after this layer's last output frame
                    x = (taken[:, r : r + m] + acts[..., : self.hidden]) * mask[:, out - m : out]
            assert skip is not None
            m = skip.shape[1]  # the coupling's output frames, `lag` behind its input
            done = mask[:, end - lag - m : end - lag]  # [B, m, 1]
            mean = _matmul(skip * done, *matrices.post) * done  # [B, m, S]
            z = torch.cat([inputs_kept[:, j], z], 1)  # [B, lag + length, C]: this coupling's inputs
            keep_inputs.append(z[:, -lag:])
            z = z[:, length - m : length]  # its inputs `lag` frames later, under its outputs
            z = torch.cat([z[..., : coupling.split], (z[..., coupling.split :] - mean) * done], 2)
        z = F.pad(z, (0, 0, n - z.shape[1], 0))  # a fresh call's output, padded back to n frames
        couplings = len(self.couplings)
        return (
            z,
            masks[:, -self.delay :],
            torch.stack(keep_inputs, 1),  # [B, couplings, lag, C]
            torch.stack(keep_layers, 1).unflatten(
                1, (couplings, self.layers)
            ),  # [B, couplings, layers, 2r, H]
            torch.stack(keep_skips, 1).unflatten(
                1, (couplings, self.layers - 1)
            ),  # [B, couplings, layers - 1, r, H]
        )


@dataclasses.dataclass
class _CouplingMatrices:
    """A coupling's convolutions as matrices per kernel tap ([K, in, out]) and biases, gate folded in."""

    pre: tuple[torch.Tensor, torch.Tensor]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    res_skip: list[tuple[torch.Tensor, torch.Tensor]]
    post: tuple[torch.Tensor, torch.Tensor]
    gate: torch.Tensor  # [2H]: 2 on the tanh half, 1 on the sigmoid half

    @staticmethod
    @torch.no_grad()
    def of(coupling: CouplingLayer) -> _CouplingMatrices:
        hidden = coupling.enc.hidden
        gate = torch.ones(2 * hidden)
        gate[:hidden] = 2.0  # tanh(a) = 2 sigmoid(2a) - 1
        return _CouplingMatrices(
            pre=_taps(coupling.pre),
            layers=[_taps(conv, gate, gate) for conv in coupling.enc.in_layers],
            res_skip=[_taps(conv, torch.tensor(2.0)) for conv in coupling.enc.res_skip_layers],
            post=_taps(coupling.post),
            gate=gate,
        )

    def mean(self, z0: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        # z0: [B, T, S], mask: [B, T, 1], cond: [B, 1, 2H * layers] or None -> [B, T, S]
        batch, frames, _ = z0.shape
        kernel, hidden = self.layers[0][0].shape[:2]
        pad = kernel // 2
        padded = z0.new_zeros(batch, frames + 2 * pad, hidden)  # [B, T + K - 1, H]: zero edges stay zero
        x = padded[:, pad : pad + frames]  # [B, T, H], a view: the layers update it in place
        torch.mul(_matmul(z0, *self.pre), mask, out=x)
        skip = z0.new_zeros(batch, frames, hidden)
        last = len(self.layers) - 1
        for i, ((taps, bias), res_skip) in enumerate(zip(self.layers, self.res_skip, strict=True)):
            a = torch.baddbmm(bias, padded[:, :frames], taps[0].expand(batch, -1, -1))  # [B, T, 2H]
            for k in range(1, kernel):
                a.baddbmm_(padded[:, k : k + frames], taps[k].expand(batch, -1, -1))
            if cond is not None:
                a += cond[..., 2 * hidden * i : 2 * hidden * (i + 1)] * self.gate
            gates = a.sigmoid_()
            acts = _matmul((gates[..., :hidden] - 0.5).mul_(gates[..., hidden:]), *res_skip)  # [B, T, 2H | H]
            if i < last:
                x.add_(acts[..., :hidden]).mul_(mask)
                skip += acts[..., hidden:]
            else:
                skip += acts
        return _matmul(skip * mask, *self.post)


def _taps(
    conv: nn.Module, scale: torch.Tensor | None = None, bias_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Conv1d as matrices per kernel tap, weight [K, in, out] times `scale` per output channel, and its
    bias [out] times `bias_scale`: copies, never the parameters themselves."""
    assert isinstance(conv, nn.Conv1d) and conv.bias is not None
    weight = conv.weight if scale is None else conv.weight * scale.reshape(-1, 1, 1)
    bias = conv.bias if bias_scale is None else conv.bias * bias_scale
    return weight.permute(2, 1, 0).clone(memory_format=torch.contiguous_format), bias.clone()


def _matmul(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # x: [B, T, in], taps: [1, in, out], bias: [out] -> [B, T, out]: a 1x1 convolution, time-major
    return torch.baddbmm(bias, x, taps[0].expand(x.shape[0], -1, -1))


def _conv(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A zero-padded Conv1d of odd kernel K, time-major: one product per tap over a shifted view."""
    # x: [B, T, in], taps: [K, in, out], bias: [out] -> [B, T, out]
    kernel, (batch, frames, _) = taps.shape[0], x.shape
    if kernel == 1:
        return _matmul(x, taps, bias)
    padded = F.pad(x, (0, 0, kernel // 2, kernel // 2))  # [B, T + K - 1, in]
    out = torch.baddbmm(bias, padded[:, :frames], taps[0].expand(batch, -1, -1))
    for k in range(1, kernel):
        out.baddbmm_(padded[:, k : k + frames], taps[k].expand(batch, -1, -1))
    return out


class VitsGenerator(_Speakers):
    """HiFi-GAN (role "vocoder"): z [B, T, C], frame_mask [B, T], speaker [B] (multi-speaker only) ->
    audio [B, T * hop]. The dynamic form runs unpadded windows; `compiled_form` masks every layer at its
    own rate, so a window padded to a bucket gives the same samples."""

    def __init__(
        self, n_speakers: int = 1, gin_channels: int = 0, inter_channels: int = 192, resblock: str = "2",
        resblock_kernel_sizes: list[int] | None = None,
        resblock_dilation_sizes: list[list[int]] | None = None,
        upsample_rates: list[int] | None = None, upsample_initial_channel: int = 256,
        upsample_kernel_sizes: list[int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(n_speakers, gin_channels)
        self.channels = inter_channels
        self.dec = Generator(
            inter_channels, resblock, resblock_kernel_sizes or [3, 5, 7],
            resblock_dilation_sizes or [[1, 2], [2, 6], [3, 12]], upsample_rates or [8, 8, 4],
            upsample_initial_channel, upsample_kernel_sizes or [16, 16, 8], self.gin,
        )  # fmt: skip
        self.hop = math.prod(upsample_rates or [8, 8, 4])
        self.receptive_radius = self.dec.receptive_radius
        self.masked = False
        """Every layer masked (the compiled form: windows padded to a bucket)."""
        self.pads_windows = False
        """Layers masked where a call's mask has zeros (the CPU form): a window padded past the
        utterance's end (`Window.end_pad`) gives the same samples. oneDNN builds its convolutions'
        kernels at each new length (a first call at a length took 1.2 to 2.4x the next), so whole
        sentences in one window, padded, meet a few lengths instead of one each; unpadded windows skip
        the masks (2 to 7% of a 32-frame window)."""

    def compiled_form(self) -> VitsGenerator:
        """The same network (shared parameters), masked at every layer: for padded windows."""
        twin = copy.copy(self)
        twin.masked = True
        return twin

    def cpu_form(self) -> nn.Module:
        """Channels-last convolutions (1.2-1.8x faster on CPU: docs/importing.md, "Benchmark"), masked
        when padded (`pads_windows`)."""
        twin = copy.copy(self)
        twin.pads_windows = True
        return channels_last(twin)

    def carried_form(self) -> CarriedGenerator:
        """Fed each frame once (`CarriedGenerator`), channels-last as the CPU form (shared with it)."""
        return CarriedGenerator(self)

    def forward(
        self, z: torch.Tensor, frame_mask: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = frame_mask.unsqueeze(1).to(z.dtype)  # [B, 1, T]
        x = z.transpose(1, 2) * mask
        masked = self.masked or (self.pads_windows and not bool(frame_mask.all()))
        return self.dec(x, self.speaker(speaker), mask if masked else None)[:, 0]

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, bucket, self.channels), torch.ones(1, bucket), *self.speaker_example())


class CarriedGenerator(nn.Module):
    """`VitsGenerator` fed each frame once (`CarriedNetwork`), time-major, with channels-last convolutions
    (the CPU form's, shared). Every layer runs at its own rate and lags its input by its right reach:
    each convolution keeps its last inputs (its dilated kernel's reach; a residual is a view of them),
    each transposed one its last input frame, and the sum of a stage's residual blocks a delay line that
    lines it up with the widest. One more delay line rounds the output's lag up to whole frames
    (`delay`). Every layer's input is masked at its own lag where a call's frames or those it keeps are
    masked (an utterance's first and last calls), as zero padding would; an utterance's first call
    computes each layer from the utterance's start only (`_CarriedCall.fresh`), and its output outside the
    utterance is silence. The state's layout is what the forward asks for, found by running it once over
    one frame."""

    def __init__(self, generator: VitsGenerator) -> None:
        super().__init__()
        twin = channels_last(generator)  # the CPU form's convolutions where it is one
        assert isinstance(twin, VitsGenerator)
        self.generator = twin
        self.hop, self.conditioned = generator.hop, generator.n_speakers > 1
        layout = _CarriedCall(torch.ones(1, 1), 0, None)
        with torch.no_grad():
            weight = generator.dec.conv_pre.weight  # its device and dtype (a GPU's, on one)
            z = weight.new_zeros(1, 1, generator.channels)
            speaker = (s.to(weight.device) for s in generator.speaker_example())
            _, self.delay = self._run(z, layout, *speaker)
        self.lines = layout.lines

    def initial_state(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Nothing before the utterance, batch 1: the mask of the last `delay` frames, then each delay
        line's kept samples (zeros)."""
        shapes = [(1, self.delay), *((1, width, channels) for width, channels in self.lines)]
        return tuple(torch.zeros(shape, dtype=dtype, device=device) for shape in shapes)

    def forward(
        self, z: torch.Tensor, frame_mask: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        # z: [B, n, C], frame_mask: [B, n], rest: (speaker [B],) if conditioned, then the state ->
        # audio [B, n * hop], `delay` frames behind, and the state as given
        speaker, (mask_kept, *kept) = (rest[0:1], rest[1:]) if self.conditioned else ((), rest)
        masks = torch.cat([mask_kept, frame_mask.to(z.dtype)], 1)  # [B, delay + n]
        call = _CarriedCall(masks, self.delay, kept)
        audio, _ = self._run(z, call, *speaker)
        return audio, masks[:, -self.delay :], *call.kept

    def _run(
        self, z: torch.Tensor, call: _CarriedCall, speaker: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        # z: [B, n, C] -> audio [B, n * hop] and its lag in frames
        dec = self.generator.dec
        x, lag = call.conv(dec.conv_pre, call.masked(z.clone(), 1, 0), 0)  # [B, n, ch]
        g = self.generator.speaker(speaker)  # [B, G, 1] or None
        if g is not None:
            x = x + dec.cond(g).transpose(1, 2)  # [B, 1, ch]
        x, rate = call.masked(x, 1, lag), 1
        for i, up in enumerate(dec.ups):
            x, lag = call.upsampled(up, x, lag)  # [B, n * rate * u, ch / 2^(i + 1)]
            rate *= dec.rates[i]
            x = call.masked(x, rate, lag)
            total: torch.Tensor | None = None  # the blocks' sum so far, at the widest block's lag so far
            for block in dec.resblocks[i * dec.n_kernels : (i + 1) * dec.n_kernels]:
                y, block_lag = _carried_resblock(call, block, x, rate, lag)
                if total is None:
                    total, total_lag = y, block_lag
                elif block_lag > total_lag:  # the sum waits for this block
                    total, total_lag = call.delayed(total, block_lag - total_lag).add_(y), block_lag
                else:  # this block waits for the sum
                    total.add_(call.delayed(y, total_lag - block_lag))
            assert total is not None
            x, lag = total.div_(dec.n_kernels), total_lag
        audio, lag = call.conv(dec.conv_post, F.leaky_relu(x), lag)  # the slope 0.01 as `Generator`'s
        delay = -(-lag // self.hop)
        audio = call.masked(torch.tanh(audio), self.hop, lag)  # silence outside the utterance
        audio = call.delayed(audio, delay * self.hop - lag)[..., 0]  # [B, S]
        return F.pad(audio, (z.shape[1] * self.hop - audio.shape[1], 0)), delay  # a fresh call's, padded


def _carried_resblock(
    call: _CarriedCall, block: nn.Module, x: torch.Tensor, rate: int, lag: int
) -> tuple[torch.Tensor, int]:
    """A residual block in a carried call: x [B, S, C] masked, `lag` samples behind the frames fed at
    `rate` samples a frame -> the block's output and its lag. Each residual is a view of its first
    convolution's input, which holds the samples it lags by."""
    assert isinstance(block, ResBlock)
    kind_1 = block.kind == "1"
    pairs = zip(block.convs1, block.convs2, strict=True) if kind_1 else ((c, None) for c in block.convs)
    for c1, c2 in pairs:
        reach = _reach(c1)
        xs = call.extended(x, reach)  # [B, reach + S, C]
        y = call.trimmed(_unpadded(c1, F.leaky_relu(xs, LRELU_SLOPE)), reach // 2)
        y_lag = lag + reach // 2
        if c2 is not None:
            y = call.masked(F.leaky_relu_(y, LRELU_SLOPE), rate, y_lag)
            y, y_lag = call.conv(c2, y, y_lag)
        first = reach - (y_lag - lag) + x.shape[1] - y.shape[1]  # the residual's sample under y's first
        x, lag = call.masked(y.add_(xs[:, first : first + y.shape[1]]), rate, y_lag), y_lag
    return x, lag


def _reach(layer: nn.Module) -> int:
    """The inputs a convolution fed once keeps: its dilated kernel's reach."""
    assert isinstance(layer, ChannelsLastConv1d)
    return layer.conv.dilation[0] * (layer.conv.kernel_size[0] - 1)


def _unpadded(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ChannelsLastConv1d over x [B, T, C] without its zero padding -> [B, T', C'], time-major."""
    return layer(x.transpose(1, 2), padding=0).transpose(1, 2)


def _fresh(mask_kept: torch.Tensor, frames: int) -> bool:
    """Whether a carried call is every row's first (nothing kept from before the utterance: its kept
    frames' mask [B, delay] all zero) and longer than `delay`: then what each layer's lag puts before the
    utterance's start would be masked to zeros, and need not be computed. Never without a delay (the
    generator's first run, which finds its state's layout)."""
    return 0 < mask_kept.shape[1] < frames and not bool(mask_kept.any())


class _CarriedCall:
    """One call of a carried network whose layers run at several rates: its delay lines, each read from
    the state and kept for the next call in the order the network meets them, and its frames' masks.
    Without a state (`kept` None) each line starts from zeros and records its width and channels."""

    def __init__(self, masks: torch.Tensor, history: int, kept: Sequence[torch.Tensor] | None) -> None:
        # masks: [B, history + n]: the frames' mask from `history` frames before the first fed
        self.masks, self.history, self.frames = masks, history, masks.shape[1] - history
        unmasked = masks.all(0).nonzero()[:, 0]  # frames unmasked in every row
        self.unmasked = (0, 0) if not len(unmasked) else (int(unmasked[0]), int(unmasked[-1]) + 1)
        """Frames [a, b) unmasked in every row, where they are all the frames between (an utterance's
        first and last calls mask frames before and after them); (0, 0) where they are not."""
        if self.unmasked[1] - self.unmasked[0] != len(unmasked):
            self.unmasked = (0, 0)
        self.whole = len(unmasked) == masks.shape[1]
        """Every frame unmasked: nothing to mask."""
        self.fresh = _fresh(masks[:, :history], self.frames)
        """Each layer computes only its samples from the utterance's start on (`trimmed`); the output is
        shorter, and `CarriedGenerator` pads it back."""
        self.state = None if kept is None else iter(kept)
        self.kept: list[torch.Tensor] = []
        self.lines: list[tuple[int, int]] = []

    def extended(self, x: torch.Tensor, width: int) -> torch.Tensor:
        """x [B, S, C] after the `width` samples its line kept from the call before: [B, width + S, C]."""
        if not width:
            return x
        kept = x.new_zeros(len(x), width, x.shape[2]) if self.state is None else next(self.state)
        full = torch.cat([kept, x], 1)
        self.kept.append(full[:, -width:].clone())  # a copy: a view would keep all of `full`
        self.lines.append((width, x.shape[2]))
        return full

    def delayed(self, x: torch.Tensor, width: int) -> torch.Tensor:
        """x [B, S, C] `width` samples later: the same length, the line's kept samples first."""
        return self.trimmed(self.extended(x, width)[:, : x.shape[1]], width)

    def trimmed(self, y: torch.Tensor, shift: int) -> torch.Tensor:
        """A layer's output y [B, S, C] whose first `shift` samples fall before its input's first (a lag):
        in a fresh call, where every tensor starts at the utterance's start, without them."""
        return y[:, shift:] if self.fresh else y

    def masked(self, x: torch.Tensor, rate: int, lag: int) -> torch.Tensor:
        """x [B, S, C], `lag` samples behind the frames fed (its last sample `lag` before their end; S is
        n * rate, less in a fresh call), zero where its frame is masked, in place: only the samples
        outside the frames unmasked in every row are multiplied (none where every frame is unmasked)."""
        if self.whole:
            return x
        length = x.shape[1]
        first = (self.history + self.frames) * rate - lag - length  # x's first sample in the masks' samples
        a, b = (min(max(edge * rate - first, 0), length) for edge in self.unmasked)
        if a == 0 and b == length:
            return x
        samples = self.masks.unsqueeze(2).expand(-1, -1, rate).flatten(1)[:, first : first + length, None]
        x[:, :a] *= samples[:, :a]  # [B, S, 1]: the masks' samples under x's
        x[:, b:] *= samples[:, b:]
        return x

    def conv(self, layer: nn.Module, x: torch.Tensor, lag: int) -> tuple[torch.Tensor, int]:
        """A convolution of odd kernel fed x [B, S, C] once: the same length, lagging x by half its reach."""
        reach = _reach(layer)
        return self.trimmed(_unpadded(layer, self.extended(x, reach)), reach // 2), lag + reach // 2

    def upsampled(self, layer: nn.Module, x: torch.Tensor, lag: int) -> tuple[torch.Tensor, int]:
        """A transposed convolution of stride u (after the leaky ReLU) fed x [B, S, C] once, keeping the
        input samples whose outputs overlap the next call's -> [B, S * u, C'] and its lag at the new rate."""
        assert isinstance(layer, ChannelsLastConv1d)
        conv = layer.conv
        stride, kernel = conv.stride[0], conv.kernel_size[0]
        before = -(-kernel // stride) - 1  # input samples kept: each reaches `kernel` outputs
        full = F.leaky_relu(self.extended(x, before), LRELU_SLOPE)
        y = _unpadded(layer, full)  # [B, (before + S - 1) u + kernel, C']
        pad = int(conv.padding[0])
        return self.trimmed(y[:, before * stride : (before + x.shape[1]) * stride], pad), lag * stride + pad


def network_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The constructor arguments of the three addon networks, from a `Vits` config."""
    speakers: dict[str, Any] = {k: config[k] for k in ("n_speakers", "gin_channels") if k in config}
    encoder_keys = (
        "n_vocab", "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers",
        "kernel_size",
    )  # fmt: skip
    generator_keys = (
        "inter_channels", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
        "upsample_initial_channel", "upsample_kernel_sizes",
    )  # fmt: skip
    return {
        "encoder": {**{k: config[k] for k in encoder_keys if k in config}, **speakers},
        "flow": {
            **{k: config[k] for k in ("inter_channels", "hidden_channels") if k in config},
            **speakers,
        },
        "generator": {**{k: config[k] for k in generator_keys if k in config}, **speakers},
    }


def split_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A `Vits` state dict cut into the three networks' state dicts (emb_g copied into each)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for network, prefixes in NETWORK_PARTS.items():
        parts[network] = {k: v for k, v in state.items() if k.startswith(prefixes) or k == "emb_g.weight"}
    return parts
