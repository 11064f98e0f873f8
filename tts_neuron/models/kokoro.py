"""Kokoro-82M inference (StyleTTS2 text side + iSTFTNet decoder) rewritten for fixed shapes.

Written from the architecture of hexgrad's `kokoro` 0.9.4 (Apache-2.0), itself adapted from yl4579's
StyleTTS2 (MIT): ALBERT, the text encoder, the prosody predictor (duration, F0 and energy) and the iSTFTNet
decoder with a harmonic-plus-noise source. Parameter names follow Kokoro's state dicts (weight norm folded
by the importer), so a checkpoint loads by name. What differs, and why:

- No packed sequences: each bi-LSTM is two one-way LSTMs, the backward one run on every sequence reversed
  within its own length by a gather, so a padded token bucket gives the same values at real positions
  and the token side exports at a fixed shape. Each direction is an `LSTMCell` run by `run_lstm`: torch's
  fused operator on the host, the cell unrolled within `split_safe()` (what Neuron's trace records).
- Two networks, as the toolkit runs them: `KokoroEncoders` (the token side: ALBERT, the text encoder and
  the duration predictor, at token buckets) and `KokoroDecoder` (F0 and energy, then the decoder, over a
  whole sentence's frames at frame-count buckets; the host repeats token features for their durations).
  `KokoroVoices` holds the voice packs and picks a style row per sentence.
- No random ops: SineGen's initial harmonic phases and its additive noise are inputs (`phase0`,
  `noise`), drawn by the caller from a per-stream seed; the library draws them inside its forward.
- No complex ops: the harmonic source's STFT is a strided convolution with a windowed DFT basis and
  `atan2`, and the output iSTFT is the toolkit's real-only `InverseSTFT` (a DFT matmul and shifted adds).

The frame side (F0/energy and the decoder) has no finite receptive field (instance norm and a bi-LSTM over
all frames, a phase cumulative sum from the first sample), so it runs once per sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tts_neuron.models import ChannelNorm, LSTMCell, run_lstm, split_columns
from tts_neuron.models.vocoder import InverseSTFT

SAMPLE_RATE = 24000
HARMONICS = 9  # the fundamental and 8 overtones (Kokoro's SourceModuleHnNSF(harmonic_num=8))
_SINE_AMP, _NOISE_STD, _VOICED_THRESHOLD = 0.1, 0.003, 10.0


@dataclass(frozen=True)
class KokoroConfig:
    """The fields of Kokoro's config.json the network is built from."""

    n_token: int
    hidden_dim: int
    style_dim: int
    n_layer: int
    max_dur: int
    text_encoder_kernel_size: int
    plbert: dict[str, int]
    istftnet: dict[str, Any]

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> KokoroConfig:
        return cls(**{name: config[name] for name in cls.__dataclass_fields__})

    def encoder_config(self) -> dict[str, Any]:
        """KokoroEncoders' constructor arguments."""
        names = ("n_token", "hidden_dim", "style_dim", "n_layer", "max_dur", "text_encoder_kernel_size")
        return {**{name: getattr(self, name) for name in names}, "plbert": dict(self.plbert)}

    def decoder_config(self) -> dict[str, Any]:
        """KokoroDecoder's constructor arguments."""
        return {"hidden_dim": self.hidden_dim, "style_dim": self.style_dim, "istftnet": dict(self.istftnet)}


def samples_per_frame(istftnet: dict[str, Any]) -> int:
    """Audio samples per predicted frame: the decoder doubles frames, then upsamples and hops."""
    return 2 * math.prod(istftnet["upsample_rates"]) * istftnet["gen_istft_hop_size"]


class Scope(nn.Module):
    """A module that only names its children (modules or parameters), to keep Kokoro's parameter paths."""

    def __init__(self, **children: nn.Module | nn.Parameter) -> None:
        super().__init__()
        for name, child in children.items():
            if isinstance(child, nn.Parameter):
                self.register_parameter(name, child)
            else:
                self.add_module(name, child)

    def __getattr__(self, name: str) -> Any:
        return super().__getattr__(name)


def _keep(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 1, size]: 1 at positions below each row's length."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]).float()[:, None, :]


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x [B, T, C] within its length; positions past it stay where they are."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # [1, T]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # [B, T]
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class BiLSTM(nn.Module):
    """A one-layer bidirectional LSTM over padded sequences without packing (batch first)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.forward_cell = LSTMCell(input_size, hidden_size)
        self.backward_cell = LSTMCell(input_size, hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C], lengths: [B] -> [B, T, 2H]; values past a sequence's length are not meaningful
        ahead = run_lstm(self.forward_cell, x)
        back = run_lstm(self.backward_cell, reverse_within(x, lengths))
        return torch.cat([ahead, reverse_within(back, lengths)], dim=-1)


class AlbertLayer(nn.Module):
    """One ALBERT transformer layer (post-norm, tanh-approximated GELU), shared by every depth."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = Scope(
            query=nn.Linear(hidden, hidden),
            key=nn.Linear(hidden, hidden),
            value=nn.Linear(hidden, hidden),
            dense=nn.Linear(hidden, hidden),
            LayerNorm=nn.LayerNorm(hidden, eps=eps),
        )
        self.ffn = nn.Linear(hidden, intermediate)
        self.ffn_output = nn.Linear(intermediate, hidden)
        self.full_layer_layer_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x: [B, T, H], bias: [B, 1, 1, T] (0 for real tokens, very negative for padding)
        b, t, h = x.shape
        att = self.attention

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)  # [B, heads, T, d]

        q, k, v = split(att.query(x)), split(att.key(x)), split(att.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads) + bias  # [B, heads, T, T]
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)  # [B, T, H]
        x = att.LayerNorm(x + att.dense(context))
        ffn = self.ffn_output(F.gelu(self.ffn(x), approximate="tanh"))
        return self.full_layer_layer_norm(x + ffn)


class Albert(nn.Module):
    """ALBERT (Kokoro's PL-BERT): factorised embeddings and one layer applied `num_hidden_layers` times."""

    def __init__(self, vocab: int, plbert: dict[str, int]) -> None:
        super().__init__()
        hidden, emb, eps = plbert["hidden_size"], plbert.get("embedding_size", 128), 1e-12
        self.depth = plbert["num_hidden_layers"]
        self.embeddings = Scope(
            word_embeddings=nn.Embedding(vocab, emb),
            position_embeddings=nn.Embedding(plbert["max_position_embeddings"], emb),
            token_type_embeddings=nn.Embedding(2, emb),
            LayerNorm=nn.LayerNorm(emb, eps=eps),
        )
        layer = AlbertLayer(hidden, plbert["num_attention_heads"], plbert["intermediate_size"], eps)
        self.encoder = Scope(
            embedding_hidden_mapping_in=nn.Linear(emb, hidden),
            albert_layer_groups=nn.ModuleList([Scope(albert_layers=nn.ModuleList([layer]))]),
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # ids: [B, N], mask: [B, N] (1 for real tokens) -> [B, N, H]
        emb = self.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = (
            emb.word_embeddings(ids)
            + emb.position_embeddings(positions)
            + emb.token_type_embeddings.weight[0]
        )
        x = self.encoder.embedding_hidden_mapping_in(emb.LayerNorm(x))  # [B, N, H]
        bias = (1.0 - mask[:, None, None, :]) * torch.finfo(x.dtype).min  # [B, 1, 1, N]
        layer = self.encoder.albert_layer_groups[0].albert_layers[0]
        for _ in range(self.depth):
            x = layer(x, bias)
        return x


class TextEncoder(nn.Module):
    """Token embeddings, convolutions (channel LayerNorm, leaky ReLU), a bi-LSTM: [B, N] -> [B, C, N]."""

    def __init__(self, channels: int, kernel_size: int, depth: int, n_symbols: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels)
        self.cnn = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2), ChannelNorm(channels)
            )
            for _ in range(depth)
        )
        self.lstm = BiLSTM(channels, channels // 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :]  # [B, 1, N]
        x = self.embedding(ids).transpose(1, 2) * keep  # [B, C, N]
        for conv_norm in self.cnn:
            x = F.leaky_relu(conv_norm(x), 0.2) * keep
        return self.lstm(x.transpose(1, 2), lengths).transpose(1, 2) * keep  # [B, C, N]


class AdaLayerNorm(nn.Module):
    """LayerNorm over channels with a style-predicted gain and bias: x [B, N, C], s [B, S]."""

    def __init__(self, style_dim: int, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = split_columns(self.fc(s), [x.shape[-1]] * 2)  # [B, C] each
        return (1 + gamma[:, None]) * F.layer_norm(x, x.shape[-1:], eps=1e-5) + beta[:, None]


class DurationEncoder(nn.Module):
    """Bi-LSTMs and style LayerNorms over token features, the style appended to each: -> [B, N, C + S]."""

    def __init__(self, style_dim: int, d_model: int, nlayers: int) -> None:
        super().__init__()
        self.lstms = nn.ModuleList()
        for _ in range(nlayers):
            self.lstms.append(BiLSTM(d_model + style_dim, d_model // 2))
            self.lstms.append(AdaLayerNorm(style_dim, d_model))

    def forward(
        self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        # x: [B, N, C], s: [B, S], mask: [B, N]
        keep = mask[:, :, None]  # [B, N, 1]
        style = s[:, None, :].expand(-1, x.shape[1], -1)  # [B, N, S]
        x = torch.cat([x, style], dim=-1) * keep
        for lstm, norm in zip(self.lstms[0::2], self.lstms[1::2], strict=True):
            x = lstm(x, lengths) * keep
            x = torch.cat([norm(x, s), style], dim=-1) * keep
        return x


def masked_instance_norm(x: torch.Tensor, keep: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm over the real frames only: x [B, C, T], keep [B, 1, T] (1 for real frames)."""
    count = keep.sum(-1, keepdim=True).clamp(
        min=1
    )  # [B, 1, 1]; a row of no frames (a warm-up's) stays finite
    mean = (x * keep).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * keep).sum(-1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps)


class AdaIN1d(nn.Module):
    """Instance norm (with its affine parameters, which Kokoro keeps) and a style-predicted gain and bias."""

    def __init__(self, style_dim: int, channels: int) -> None:
        super().__init__()
        self.norm = Scope(weight=nn.Parameter(torch.ones(channels)), bias=nn.Parameter(torch.zeros(channels)))
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        gamma, beta = split_columns(self.fc(s), [x.shape[1]] * 2)  # [B, C] each
        normed = masked_instance_norm(x, keep) * self.norm.weight[:, None] + self.norm.bias[:, None]
        return (1 + gamma[:, :, None]) * normed + beta[:, :, None]


class AdainResBlk1d(nn.Module):
    """StyleTTS2's residual block: AdaIN, leaky ReLU, (2x upsampling), conv, twice; shortcut; / sqrt 2."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv1d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv1d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN1d(style_dim, dim_in)
        self.norm2 = AdaIN1d(style_dim, dim_out)
        self.conv1x1 = nn.Conv1d(dim_in, dim_out, 1, bias=False) if dim_in != dim_out else None
        if upsample:
            self.pool = nn.ConvTranspose1d(
                dim_in, dim_in, 3, stride=2, groups=dim_in, padding=1, output_padding=1
            )

    def forward(self, x: torch.Tensor, s: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T], keep: [B, 1, T] -> [B, C', T] or [B, C', 2T] when upsampling
        out_keep = keep.repeat_interleave(2, dim=-1) if self.upsample else keep
        y = F.leaky_relu(self.norm1(x, s, keep), 0.2) * keep
        if self.upsample:
            y = self.pool(y) * out_keep
        y = F.leaky_relu(self.norm2(self.conv1(y), s, out_keep), 0.2) * out_keep
        y = self.conv2(y)
        shortcut = F.interpolate(x, scale_factor=2.0, mode="nearest") if self.upsample else x
        if self.conv1x1 is not None:
            shortcut = self.conv1x1(shortcut)
        return (y + shortcut) * out_keep / math.sqrt(2.0)


def _curve_blocks(style_dim: int, d_hid: int) -> nn.ModuleList:
    """The F0 or energy branch: residual blocks, the second one upsampling frames by 2."""
    return nn.ModuleList(
        [
            AdainResBlk1d(d_hid, d_hid, style_dim),
            AdainResBlk1d(d_hid, d_hid // 2, style_dim, upsample=True),
            AdainResBlk1d(d_hid // 2, d_hid // 2, style_dim),
        ]
    )


class CurvePredictor(nn.Module):
    """The prosody predictor's frame half (Kokoro's `predictor.shared`, `F0`, `N`): F0 and energy curves,
    at twice the frame rate, from the token features repeated for their frames."""

    def __init__(self, style_dim: int, d_hid: int) -> None:
        super().__init__()
        self.shared = BiLSTM(d_hid + style_dim, d_hid // 2)
        self.F0, self.N = _curve_blocks(style_dim, d_hid), _curve_blocks(style_dim, d_hid)
        self.F0_proj = nn.Conv1d(d_hid // 2, 1, 1)
        self.N_proj = nn.Conv1d(d_hid // 2, 1, 1)

    def forward(
        self, en: torch.Tensor, s: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # en: [B, C + S, T], keep: [B, 1, T] -> F0, energy: [B, 2T] each
        lengths = keep.sum((1, 2)).long()
        x = self.shared(en.transpose(1, 2), lengths).transpose(1, 2) * keep  # [B, C, T]
        out = []
        for blocks, proj in ((self.F0, self.F0_proj), (self.N, self.N_proj)):
            y, k = x, keep
            for block in blocks:
                y = block(y, s, k)
                k = k.repeat_interleave(2, dim=-1) if block.upsample else k
            out.append(proj(y)[:, 0] * k[:, 0])
        return out[0], out[1]


class AdaINResBlock1(nn.Module):
    """HiFi-GAN's resblock 1 with AdaIN and Snake activations (x + sin(a x)^2 / a)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], style_dim: int) -> None:
        super().__init__()

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.adain1 = nn.ModuleList(AdaIN1d(style_dim, channels) for _ in dilations)
        self.adain2 = nn.ModuleList(AdaIN1d(style_dim, channels) for _ in dilations)
        self.alpha1 = nn.ParameterList(nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations)
        self.alpha2 = nn.ParameterList(nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations)

    def forward(self, x: torch.Tensor, s: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for c1, c2, n1, n2, a1, a2 in zip(
            self.convs1, self.convs2, self.adain1, self.adain2, self.alpha1, self.alpha2, strict=True
        ):
            y = n1(x, s, keep)
            y = c1((y + (1 / a1) * torch.sin(a1 * y).square()) * keep)
            y = n2(y, s, keep)
            y = c2((y + (1 / a2) * torch.sin(a2 * y).square()) * keep)
            x = (x + y) * keep
        return x


class Generator(nn.Module):
    """iSTFTNet: upsampling convolutions fed by the harmonic source's spectrum, then an inverse STFT."""

    stft_basis: torch.Tensor

    def __init__(self, style_dim: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        rates, kernels = cfg["upsample_rates"], cfg["upsample_kernel_sizes"]
        channels, n_fft, hop = (
            cfg["upsample_initial_channel"],
            cfg["gen_istft_n_fft"],
            cfg["gen_istft_hop_size"],
        )
        self.n_fft, self.hop, self.rates = n_fft, hop, list(rates)
        self.upsample_scale = math.prod(rates) * hop
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.m_source = Scope(l_linear=nn.Linear(HARMONICS, 1))
        self.ups, self.resblocks = nn.ModuleList(), nn.ModuleList()
        self.noise_convs, self.noise_res = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels, strict=True)):
            ch = channels // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(2 * ch, ch, k, u, padding=(k - u) // 2))
            for rk, rd in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"], strict=True):
                self.resblocks.append(AdaINResBlock1(ch, rk, rd, style_dim))
            if i + 1 < len(rates):
                stride = math.prod(rates[i + 1 :])
                self.noise_convs.append(
                    nn.Conv1d(n_fft + 2, ch, 2 * stride, stride, padding=(stride + 1) // 2)
                )
                self.noise_res.append(AdaINResBlock1(ch, 7, [1, 3, 5], style_dim))
            else:
                self.noise_convs.append(nn.Conv1d(n_fft + 2, ch, 1))
                self.noise_res.append(AdaINResBlock1(ch, 11, [1, 3, 5], style_dim))
        self.conv_post = nn.Conv1d(ch, n_fft + 2, 7, 1, padding=3)
        # The source's STFT as a strided convolution: rows are window * cos and -window * sin per bin.
        bins = n_fft // 2 + 1
        k_ = torch.arange(bins, dtype=torch.float64)[:, None]
        n_ = torch.arange(n_fft, dtype=torch.float64)[None, :]
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        cos, sin = torch.cos(2 * math.pi * k_ * n_ / n_fft), -torch.sin(2 * math.pi * k_ * n_ / n_fft)
        sin[0] = sin[-1] = 0.0  # DC and Nyquist have no imaginary part
        self.register_buffer(
            "stft_basis", (torch.cat([cos, sin]) * window)[:, None, :].float(), persistent=False
        )
        self.istft = InverseSTFT(n_fft, hop, real_only=True)

    def source(
        self, f0: torch.Tensor, phase0: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """The harmonic-plus-noise excitation: f0 [B, 2T] Hz, phase0 [B, HARMONICS - 1] in [0, 1) (the
        overtones' initial phases, in turns), noise [B, HARMONICS, L] standard normal, lengths [B] real
        frames -> [B, L] samples."""
        f0 = F.interpolate(f0[:, None], scale_factor=float(self.upsample_scale)).transpose(1, 2)  # [B, L, 1]
        harmonics = torch.arange(1, HARMONICS + 1, device=f0.device, dtype=f0.dtype)
        rad = torch.remainder(f0 * harmonics / SAMPLE_RATE, 1.0)  # [B, L, H] turns per sample
        start = torch.cat([phase0.new_zeros(phase0.shape[0], 1), phase0], dim=1)[:, None, :]  # [B, 1, H]
        rad = torch.cat([rad[:, :1] + start, rad[:, 1:]], dim=1)
        scale = self.upsample_scale
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear")  # [B, H, L / scale]
        phase = torch.cumsum(rad, dim=-1) * 2 * math.pi  # [B, H, 2T]
        # Past a sentence's end, hold its last phase: linear upsampling then sees what the unpadded
        # sentence's edge (clamped) sees.
        t = torch.arange(phase.shape[-1], device=phase.device)[None, :]
        last = torch.minimum(t, (2 * lengths[:, None] - 1).clamp(min=0))[:, None, :].expand_as(
            phase
        )  # [B, H, 2T]
        phase = phase.gather(-1, last)
        phase = F.interpolate(phase * scale, scale_factor=float(scale), mode="linear").transpose(
            1, 2
        )  # [B, L, H]
        voiced = (f0 > _VOICED_THRESHOLD).to(f0.dtype)  # [B, L, 1]
        amplitude = voiced * _NOISE_STD + (1 - voiced) * _SINE_AMP / 3
        sines = torch.sin(phase) * _SINE_AMP * voiced + amplitude * noise.transpose(1, 2)  # [B, L, H]
        return torch.tanh(self.m_source.l_linear(sines))[:, :, 0]

    def spectrum(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """torch.stft's magnitude and angle (centred, reflect padding), no complex ops: [B, L] -> [B, 2F, T].

        Where the imaginary part is rounding noise around 0 with a negative real part (the first frame is
        symmetric), torch.stft's angle is +-pi by the sign of that noise; ours is pi: equal modulo 2 pi.
        Each row is reflected at its own length (samples, default all), by a gather."""
        half = self.n_fft // 2
        size = torch.full_like(x[:, 0], x.shape[1], dtype=torch.long) if lengths is None else lengths
        j = torch.arange(-half, x.shape[1] + half, device=x.device)[None, :]  # [1, L + N]
        j = torch.where(j < 0, -j, torch.where(j >= size[:, None], 2 * (size[:, None] - 1) - j, j))
        x = x.gather(1, j.clamp(0, x.shape[1] - 1))[:, None, :]  # [B, 1, L + N], reflect-padded
        spec = F.conv1d(x, self.stft_basis, stride=self.hop)  # [B, 2F, T]
        real, imag = spec.chunk(2, dim=1)
        magnitude = torch.sqrt(real.square() + imag.square())
        # An imaginary part that is rounding noise is +0, so its angle does not flip between pi and -pi
        # with the summation order (batch size, BLAS blocking).
        imag = torch.where(imag.abs() <= 1e-6 * magnitude, torch.zeros_like(imag), imag)
        return torch.cat([magnitude, torch.atan2(imag, real)], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        s: torch.Tensor,
        f0: torch.Tensor,
        phase0: torch.Tensor,
        noise: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        # x: [B, C, 2T], s: [B, S], f0: [B, 2T], lengths: [B] real frames (of T) -> audio [B, T * 600]
        scale = self.upsample_scale
        har = self.spectrum(self.source(f0, phase0, noise, lengths), lengths * 2 * scale)  # [B, 22, 2T*60+1]
        har = har * _keep(lengths * 2 * scale // self.hop + 1, har.shape[-1])
        per_frame = 2  # x's frames per predicted frame
        for i, up in enumerate(self.ups):
            per_frame *= self.rates[i]
            x = up(F.leaky_relu(x, 0.1))
            real = lengths * per_frame
            if i == len(self.ups) - 1:
                x, real = F.pad(x, (1, 0), mode="reflect"), real + 1
            keep = _keep(real, x.shape[-1])
            x = (x + self.noise_res[i](self.noise_convs[i](har), s, keep)) * keep
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x, s, keep) for block in blocks) / self.num_kernels  # type: ignore[assignment]
        x = self.conv_post(F.leaky_relu(x) * keep)
        bins = self.n_fft // 2 + 1
        magnitude, phase = torch.exp(x[:, :bins]), torch.sin(x[:, bins:])  # [B, F, frames]
        real, imag = (
            (magnitude * torch.cos(phase)).transpose(1, 2),
            (magnitude * torch.sin(phase)).transpose(1, 2),
        )
        audio = self.istft(real, imag, keep[:, 0])  # [B, frames * hop]
        # torch.istft's length, (frames - 1) * hop, cut in 3-D (not a column slice of a 2-D tensor)
        return audio.view(audio.shape[0], -1, self.hop)[:, :-1].flatten(1)


class Decoder(nn.Module):
    """The frame-level decoder: AdaIN residual blocks over text features, F0 and energy, then iSTFTNet."""

    def __init__(self, dim_in: int, style_dim: int, istftnet: dict[str, Any]) -> None:
        super().__init__()
        self.encode = AdainResBlk1d(dim_in + 2, 1024, style_dim)
        self.decode = nn.ModuleList(AdainResBlk1d(1024 + 2 + 64, 1024, style_dim) for _ in range(3))
        self.decode.append(AdainResBlk1d(1024 + 2 + 64, 512, style_dim, upsample=True))
        self.F0_conv = nn.Conv1d(1, 1, 3, stride=2, padding=1)
        self.N_conv = nn.Conv1d(1, 1, 3, stride=2, padding=1)
        self.asr_res = nn.Sequential(nn.Conv1d(512, 64, 1))
        self.generator = Generator(style_dim, istftnet)

    def forward(
        self,
        asr: torch.Tensor,
        f0: torch.Tensor,
        energy: torch.Tensor,
        s: torch.Tensor,
        phase0: torch.Tensor,
        noise: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        # asr: [B, C, T], f0 and energy: [B, 2T], s: [B, S], lengths: [B] real frames -> [B, T * 600]
        keep = _keep(lengths, asr.shape[-1])  # [B, 1, T]
        f0_down, energy_down = self.F0_conv(f0[:, None]), self.N_conv(energy[:, None])  # [B, 1, T]
        x = self.encode(torch.cat([asr, f0_down, energy_down], dim=1), s, keep)
        asr_res = self.asr_res(asr)
        for block in self.decode:
            x = block(torch.cat([x, asr_res, f0_down, energy_down], dim=1), s, keep)
        return self.generator(x * _keep(2 * lengths, x.shape[-1]), s, f0, phase0, noise, lengths)


class KokoroEncoders(nn.Module):
    """The token side (ALBERT, the text encoder, the duration predictor) of sentences padded to a token
    bucket, with Kokoro's parameter names (`bert`, `bert_encoder`, `predictor.{text_encoder, lstm,
    duration_proj}`, `text_encoder`)."""

    def __init__(
        self,
        n_token: int,
        hidden_dim: int,
        style_dim: int,
        n_layer: int,
        max_dur: int,
        text_encoder_kernel_size: int,
        plbert: dict[str, int],
    ) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.bert = Albert(n_token, plbert)
        self.bert_encoder = nn.Linear(plbert["hidden_size"], hidden_dim)
        self.predictor = Scope(
            text_encoder=DurationEncoder(style_dim, hidden_dim, n_layer),
            lstm=BiLSTM(hidden_dim + style_dim, hidden_dim // 2),
            duration_proj=Scope(linear_layer=nn.Linear(hidden_dim, max_dur)),
        )
        self.text_encoder = TextEncoder(hidden_dim, text_encoder_kernel_size, n_layer, n_token)

    def forward(
        self, tokens: torch.Tensor, token_mask: torch.Tensor, style: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens, token_mask: [B, N] (Kokoro's ids with its 0 at both ends; mask 1 for real tokens),
        style: [B, 2S] (the voice's style row) -> frames per token before rounding and speed [B, N],
        prosody features [B, N, C + S], text features [B, N, C]."""
        lengths = token_mask.sum(-1).long()
        predictor = self.predictor
        _, prosody_style = split_columns(style, [self.style_dim] * 2)  # [B, S]
        d_en = self.bert_encoder(self.bert(tokens, token_mask))  # [B, N, C]
        d = predictor.text_encoder(d_en, prosody_style, token_mask, lengths)  # [B, N, C + S]
        logits = predictor.duration_proj.linear_layer(predictor.lstm(d, lengths))  # [B, N, max_dur]
        durations = torch.sigmoid(logits).sum(-1) * token_mask
        return durations, d, self.text_encoder(tokens, token_mask, lengths).transpose(1, 2)

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]:
        tokens = torch.ones(1, bucket, dtype=torch.int32)
        return tokens, torch.ones(1, bucket), torch.zeros(1, 2 * self.style_dim)


class KokoroDecoder(nn.Module):
    """The frame side of whole sentences padded to a frame-count bucket: F0 and energy (`predictor.shared`,
    `F0`, `N`), then the decoder and its harmonic source. It cannot be windowed (instance norms and a
    bi-LSTM over all frames, the source phase's running sum), so every norm, LSTM, convolution and the
    inverse STFT is masked at each row's own length; audio past a row's frames is 0."""

    def __init__(self, hidden_dim: int, style_dim: int, istftnet: dict[str, Any]) -> None:
        super().__init__()
        self.style_dim, self.hidden_dim = style_dim, hidden_dim
        self.samples_per_frame = samples_per_frame(istftnet)
        self.predictor = CurvePredictor(style_dim, hidden_dim)
        self.decoder = Decoder(hidden_dim, style_dim, istftnet)

    def forward(
        self,
        frame_mask: torch.Tensor,
        prosody: torch.Tensor,
        text: torch.Tensor,
        style: torch.Tensor,
        phase0: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """frame_mask: [B, T] (1 for real frames), prosody and text: the token features repeated for
        their frames [B, T, C + S] and [B, T, C], style: [B, 2S], phase0 and noise: the source's random
        inputs (`source_noise`) -> audio [B, T * samples_per_frame]."""
        lengths = frame_mask.sum(-1).long()  # [B] real frames
        keep = frame_mask[:, None, :]  # [B, 1, T]
        decoder_style, prosody_style = split_columns(style, [self.style_dim] * 2)  # [B, S] each
        f0, energy = self.predictor(prosody.transpose(1, 2), prosody_style, keep)
        audio = self.decoder(text.transpose(1, 2), f0, energy, decoder_style, phase0, noise, lengths)
        return audio * _keep(lengths * self.samples_per_frame, audio.shape[-1])[:, 0]

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]:
        return (
            torch.ones(1, bucket),
            torch.zeros(1, bucket, self.hidden_dim + self.style_dim),
            torch.zeros(1, bucket, self.hidden_dim),
            torch.zeros(1, 2 * self.style_dim),
            torch.zeros(1, HARMONICS - 1),
            torch.zeros(1, HARMONICS, bucket * self.samples_per_frame),
        )


def source_noise(
    frames: int, samples_per_frame: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's random inputs for a sentence of `frames` frames, drawn from a per-stream generator:
    the overtones' initial phases [1, HARMONICS - 1] in turns, and the source noise
    [1, HARMONICS, frames * samples_per_frame]."""
    phase0 = torch.rand(1, HARMONICS - 1, generator=generator)
    return phase0, torch.randn(1, HARMONICS, frames * samples_per_frame, generator=generator)


class KokoroVoices(nn.Module):
    """Every voice pack of the addon ([voices, rows, 2S] style vectors, row n - 1 for a sentence of n
    phonemes) and the style of one call: a voice or a blend, the packs weighted (Kokoro-FastAPI's
    `a+b` averages them)."""

    def __init__(self, voices: int, rows: int, style_dim: int) -> None:
        super().__init__()
        self.packs = nn.Parameter(torch.zeros(voices, rows, 2 * style_dim))

    def forward(self, weights: torch.Tensor, phonemes: int) -> torch.Tensor:
        """weights: [V] (summing to 1), phonemes: the sentence's phoneme count (without Kokoro's two 0
        ids), whose row is picked as Kokoro picks it (the last row past the pack's end) -> [1, 2S]."""
        row = min(max(phonemes, 1), self.packs.shape[1]) - 1
        return (weights[:, None] * self.packs[:, row]).sum(0, keepdim=True)
