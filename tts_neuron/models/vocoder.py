"""A small frame-rate neural vocoder (Vocos-style) with an inverse-STFT head, and the inverse STFT itself.

The network runs at the mel frame rate: a convolutional embedding, ConvNeXt blocks normalised per frame,
and a head that predicts, for each of the n_fft // 2 + 1 bins, a log-magnitude correction to the
pseudo-inverse of the mel filterbank and a phase direction (two numbers whose angle is the phase). The
inverse STFT then makes `hop` samples per frame.

Nothing mixes the whole time axis, so the receptive field is finite (`receptive_radius` frames each side),
and activations are masked before every convolution, so a window padded to a bucket gives the same samples
at real positions as the utterance's own edge. The inverse STFT comes in two forms that agree to float
rounding: `torch.fft.irfft` (dynamic CPU/GPU blocks) and a real-only one for compiled targets (a fixed
DFT basis with the window folded in as one matmul, overlap-add by shifted adds), because neuronx-cc
rejects FFT ops and complex tensors. The phase is never turned into an angle at run time: the real and
imaginary parts are the magnitude times the unit direction, so no trigonometry is compiled either.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from tts_neuron.audio import AudioConfig, mel_filterbank
from tts_neuron.models import split_columns

LOG_MAGNITUDE_MAX = math.log(1e3)
"""Predicted log-magnitudes are clamped below this (a full-scale sine peaks near log(512) at n_fft 1024)."""
_DIRECTION_EPS = 1e-9


class InverseSTFT(nn.Module):
    """Frames of a spectrum [B, T, F] (real and imaginary parts) to samples [B, T * hop].

    The same convention as `tts_neuron.audio`: frame t is centred on sample t * hop (periodic Hann
    window), and T frames give T * hop samples. Each sample is divided by the overlap-added squared window
    of the frames that exist (the mask), so masked frames neither contribute nor count, and a padded
    window reproduces the utterance's edge exactly.
    """

    window: torch.Tensor
    basis: torch.Tensor

    def __init__(self, n_fft: int, hop_length: int, real_only: bool = False) -> None:
        super().__init__()
        if n_fft % (2 * hop_length):
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of 2 * hop_length ({hop_length})")
        self.n_fft, self.hop, self.real_only = n_fft, hop_length, real_only
        self.overlap = n_fft // hop_length  # frames covering each sample
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)  # [N]
        self.register_buffer("window", window.to(torch.float32), persistent=False)
        # irfft as a matmul: x[n] = sum_k c_k (Re_k cos(2 pi k n / N) - Im_k sin(2 pi k n / N)) / N, with
        # c_k = 1 at DC and Nyquist and 2 between (their imaginary parts are ignored, as irfft does).
        bins = n_fft // 2 + 1
        k = torch.arange(bins, dtype=torch.float64)[:, None]  # [F, 1]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]  # [1, N]
        scale = torch.full((bins, 1), 2.0, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0
        angle = 2 * math.pi * k * n / n_fft  # [F, N]
        cos, sin = scale * torch.cos(angle) / n_fft, -scale * torch.sin(angle) / n_fft
        sin[0] = sin[-1] = 0.0
        basis = torch.cat([cos, sin]) * window  # [2F, N], window folded in
        self.register_buffer("basis", basis.to(torch.float32), persistent=False)

    def forward(self, real: torch.Tensor, imag: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # real, imag: [B, T, F], mask: [B, T] (1 for real frames) -> audio: [B, T * hop]
        frames = self.frames(real, imag) * mask.unsqueeze(-1)  # [B, T, N]
        envelope = mask.unsqueeze(-1) * self.window.square()  # [B, T, N]
        audio = self._overlap_add(frames) / self._overlap_add(envelope).clamp(min=1e-8)  # [B, T, hop]
        return audio.flatten(1)  # [B, T * hop]

    def frames(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """Each frame's windowed samples [B, T, N], before overlap-add."""
        if self.real_only:
            return torch.cat([real, imag], dim=-1) @ self.basis
        return torch.fft.irfft(torch.complex(real, imag), n=self.n_fft) * self.window

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """Sum the `overlap` hop-long pieces of each frame into the blocks they cover, by shifted adds
        (no fold, no scatter), and keep the T blocks that centred frames attribute to the utterance."""
        # frames: [B, T, N] -> [B, T, hop]
        b, t, _ = frames.shape
        pieces = frames.reshape(b, t, self.overlap, self.hop)  # [B, T, overlap, hop]
        total = sum(
            F.pad(pieces[:, :, q], (0, 0, q, self.overlap - 1 - q)) for q in range(self.overlap)
        )  # [B, T + overlap - 1, hop]
        centre = self.overlap // 2  # frame t's centre is piece `centre` of it
        return total[:, centre : centre + t]  # type: ignore[index]


class ConvNeXtBlock(nn.Module):
    """Depthwise convolution, LayerNorm over channels (per frame), pointwise MLP, scaled residual."""

    def __init__(self, dim: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C], mask: [B, T, 1]
        y = self.depthwise((x * mask).transpose(1, 2)).transpose(1, 2)
        return x + self.mix(y)

    def carried(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward` on frames that arrive with `kernel_size // 2` frames of context each side: the
        output of the frames between, with no padding (`CarriedMelVocoder`)."""
        # x: [B, 2r + n, C], mask: [B, 2r + n, 1] -> [B, n, C]
        conv = self.depthwise
        y = F.conv1d((x * mask).transpose(1, 2), conv.weight, conv.bias, groups=conv.groups)  # [B, C, n]
        r = conv.kernel_size[0] // 2
        return x[:, r : x.shape[1] - r] + self.mix(y.transpose(1, 2))

    def mix(self, y: torch.Tensor) -> torch.Tensor:
        """The residual branch after the depthwise convolution: per frame."""
        # y: [B, T, C]
        return self.scale * self.down(F.gelu(self.up(self.norm(y))))


class MelVocoder(nn.Module):
    """log-mel frames [B, T, n_mels] to audio [B, T * hop], with a finite receptive field."""

    mel_inverse: torch.Tensor

    def __init__(
        self,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_length: int = 256,
        sample_rate: int = 22050,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        dim: int = 256,
        hidden: int = 768,
        layers: int = 4,
        kernel_size: int = 7,
        real_only: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        audio = AudioConfig(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=n_fft,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
        )
        self.n_mels, self.bins, self.hop = n_mels, n_fft // 2 + 1, hop_length
        # The magnitude prior: the minimum-norm linear magnitude of each mel frame (FreeV's amplitude prior).
        pinv = torch.linalg.pinv(mel_filterbank(audio).to(torch.float64))  # [F, M]
        self.register_buffer("mel_inverse", pinv.T.contiguous().to(torch.float32), persistent=False)  # [M, F]
        self.embed = nn.Conv1d(n_mels, dim, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, hidden, kernel_size) for _ in range(layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 3 * self.bins)  # log-magnitude correction, phase direction (x, y)
        self.istft = InverseSTFT(n_fft, hop_length, real_only)
        pad = kernel_size // 2
        overlap = n_fft // hop_length
        self.receptive_radius = pad * (layers + 1) + overlap // 2
        """Mel frames of context each side that the samples of one frame depend on: the convolutions'
        reach plus the inverse STFT's overlap (frames t - 1 .. t + 2 make frame t's samples when n_fft is
        4 hops)."""

    def compiled_form(self) -> MelVocoder:
        """The same network (shared parameters) with the real-only inverse STFT, for compiled targets."""
        twin = copy.copy(self)
        twin._modules = dict(self._modules)
        twin.istft = InverseSTFT(self.istft.n_fft, self.istft.hop, real_only=True)
        return twin

    def carried_form(self) -> CarriedMelVocoder:
        """The same network (shared parameters) streaming with carried state: every frame computed once."""
        return CarriedMelVocoder(self)

    def example_inputs(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, length, self.n_mels), torch.ones(1, length)

    def spectrum(
        self, log_mel: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log-magnitude [B, T, F] and the phase direction (x, y) [B, T, F] each, unnormalised."""
        # log_mel: [B, T, M], frame_mask: [B, T]
        mask = frame_mask.unsqueeze(-1).to(log_mel.dtype)  # [B, T, 1]
        prior = (log_mel.exp() @ self.mel_inverse).clamp(min=1e-5).log()  # [B, T, F]
        x = self.embed((log_mel * mask).transpose(1, 2)).transpose(1, 2)  # [B, T, C]
        for block in self.blocks:
            x = block(x, mask)
        return self.spectrum_head(x, prior)

    def spectrum_head(
        self, x: torch.Tensor, prior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per frame: the last blocks' output and the magnitude prior to the spectrum (`spectrum`)."""
        # x: [B, T, C], prior: [B, T, F]
        head = self.head(self.norm(x))  # [B, T, 3F]
        correction, phase_x, phase_y = split_columns(head, [self.bins] * 3)  # [B, T, F] each
        log_magnitude = (prior + correction).clamp(max=LOG_MAGNITUDE_MAX)
        return log_magnitude, phase_x, phase_y

    def forward(self, log_mel: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # log_mel: [B, T, M], frame_mask: [B, T] -> audio: [B, T * hop]
        log_magnitude, phase_x, phase_y = self.spectrum(log_mel, frame_mask)
        real, imag = to_real_imag(log_magnitude, phase_x, phase_y)
        return self.istft(real, imag, frame_mask.to(log_mel.dtype))


class CarriedMelVocoder(nn.Module):
    """`MelVocoder` fed each frame once: a call takes the next frames and the state the call before left
    (the last inputs each convolution and the overlap-add still need), and returns the audio those frames
    complete, `delay` frames behind them, with the new state. Windows with context each side recompute
    that context at every call (1.5x the frames at the engine's window sizes); this computes none.
    Frames past the utterance's end are fed masked (zeros) to finish it, as its convolutions' padding.

    Where the whole utterance's layers see frames t - r .. t + r of the layer below, this one sees them
    r frames later, so each layer lags the one below by r frames (r = kernel_size // 2); the inverse STFT
    lags `overlap // 2` more. Equal to `MelVocoder` on the whole utterance within float rounding."""

    def __init__(self, vocoder: MelVocoder) -> None:
        super().__init__()
        self.vocoder = vocoder  # shares its parameters
        self.hop, self.n_mels = vocoder.hop, vocoder.n_mels
        self.reach = vocoder.embed.kernel_size[0] // 2
        self.layers = len(vocoder.blocks)
        self.lag = self.reach * (self.layers + 1)  # frames between a mel frame and its spectrum
        self.overlap = vocoder.istft.overlap
        self.delay = self.lag + self.overlap // 2
        """Frames between the last frame fed and the last frame whose audio is complete."""
        # What the state keeps: mel frames for the embedding and the prior; each frame's mask until its
        # spectrum is overlap-added; each block's last inputs; the frames not yet fully overlap-added.
        self.keep_mel, self.keep_mask = self.lag, self.lag + self.overlap - 1
        self.keep_block, self.keep_frames = 2 * self.reach, self.overlap - 1

    def initial_state(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The state before an utterance's first frame: nothing there (masked zeros), batch 1."""
        channels = self.vocoder.embed.out_channels
        return (
            torch.zeros(1, self.keep_mel, self.n_mels, dtype=dtype, device=device),
            torch.zeros(1, self.keep_mask, dtype=dtype, device=device),
            torch.zeros(1, self.layers, self.keep_block, channels, dtype=dtype, device=device),
            torch.zeros(1, self.keep_frames, self.vocoder.istft.n_fft, dtype=dtype, device=device),
        )

    def forward(
        self,
        log_mel: torch.Tensor,
        frame_mask: torch.Tensor,
        mel_kept: torch.Tensor,
        mask_kept: torch.Tensor,
        block_kept: torch.Tensor,
        frames_kept: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """The audio of the `n` frames that end `delay` frames before the last one fed, and the new state."""
        # log_mel: [B, n, M], frame_mask: [B, n] -> audio: [B, n * hop], then the state as given
        vocoder, r, n = self.vocoder, self.reach, log_mel.shape[1]
        mel = torch.cat([mel_kept, log_mel * frame_mask.unsqueeze(-1)], 1)  # [B, keep_mel + n, M]
        masks = torch.cat([mask_kept, frame_mask], 1)  # [B, keep_mask + n]
        mask = masks.unsqueeze(-1)  # [B, keep_mask + n, 1]
        embed = vocoder.embed
        x = F.conv1d(mel[:, -n - 2 * r :].transpose(1, 2), embed.weight, embed.bias)  # [B, C, n]
        x = x.transpose(1, 2)  # [B, n, C], r frames behind the mel fed
        kept = []
        for layer, block in enumerate(cast(Sequence[ConvNeXtBlock], vocoder.blocks)):
            x = torch.cat([block_kept[:, layer], x], 1)  # [B, 2r + n, C]
            kept.append(x[:, -2 * r :])
            first = self.keep_mask - r * (layer + 1) - 2 * r  # where this input's frames start in `mask`
            x = block.carried(x, mask[:, first : first + 2 * r + n])  # [B, n, C], r frames further behind
        prior = (mel[:, :n].exp() @ vocoder.mel_inverse).clamp(min=1e-5).log()  # [B, n, F], `lag` behind
        real, imag = to_real_imag(*vocoder.spectrum_head(x, prior))  # [B, n, F] each
        mask = mask[:, : self.keep_frames + n]  # [B, keep_frames + n, 1]: the frames being overlap-added
        frames = torch.cat([frames_kept, vocoder.istft.frames(real, imag) * mask[:, -n:]], 1)
        envelope = mask * vocoder.istft.window.square()  # [B, keep_frames + n, N]
        audio = self._overlap_add(frames, n) / self._overlap_add(envelope, n).clamp(min=1e-8)
        return (
            audio.flatten(1),  # [B, n * hop]
            mel[:, -self.keep_mel :],
            masks[:, -self.keep_mask :],
            torch.stack(kept, 1),  # [B, layers, 2r, C]
            frames[:, -self.keep_frames :],
        )

    def _overlap_add(self, frames: torch.Tensor, n: int) -> torch.Tensor:
        """The last `n` hop-long blocks that every frame covering them has reached: block b sums piece q
        of frame `keep_frames + b - q` (a frame's centre piece is its own block, `InverseSTFT`)."""
        # frames: [B, keep_frames + n, N] -> [B, n, hop]
        b, t, _ = frames.shape
        pieces = frames.reshape(b, t, self.overlap, self.hop)  # [B, keep_frames + n, overlap, hop]
        k = self.keep_frames
        return sum(pieces[:, k - q : k - q + n, q] for q in range(self.overlap))  # type: ignore[return-value]


def to_real_imag(
    log_magnitude: torch.Tensor, phase_x: torch.Tensor, phase_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectrum's real and imaginary parts: magnitude times the unit phase direction (no trigonometry)."""
    scale = log_magnitude.exp() * torch.rsqrt(phase_x.square() + phase_y.square() + _DIRECTION_EPS)
    return scale * phase_x, scale * phase_y
