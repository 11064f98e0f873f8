"""Audio front end: waveform <-> log-mel features.

`MelSpectrogram` produces the acoustic features the models are trained on, `GriffinLim` turns such
features back into a waveform without a neural vocoder (for debugging and as a baseline), and
`spectral_convergence` scores how close two waveforms are in the STFT-magnitude domain.

Conventions shared by every function here, so that features and waveforms line up sample-exactly:
magnitude (power 1) STFT, centred frames with reflect padding of ``n_fft // 2`` on both sides, and a
periodic Hann window of ``win_length`` samples (zero-padded to ``n_fft`` in the middle). Frame ``t`` is
centred on sample ``t * hop_length`` and is attributed the output samples ``[t * hop, (t + 1) * hop)``;
a waveform of ``S`` samples gives ``S // hop_length + 1`` frames and ``T`` frames give
``T * hop_length`` samples back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AudioConfig", "GriffinLim", "MelSpectrogram", "mel_filterbank", "spectral_convergence"]

# Slaney mel scale constants (Auditory Toolbox / librosa ``htk=False``).
_MEL_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_HZ_PER_MEL  # 15 mel
_MEL_LOG_STEP = math.log(6.4) / 27.0

# Added to |X| before dividing by it in Griffin-Lim, so that all-zero bins give phase 0, not NaN.
_PHASE_EPS = 1e-16


_LIMITS = {"sample_rate": 192_000, "n_fft": 16_384, "hop_length": 16_384, "win_length": 16_384, "n_mels": 512}
"""Far above what speech needs; a size past these exhausts memory, or writes a WAV no player reads."""


@dataclass(frozen=True)
class AudioConfig:
    """STFT and mel parameters; one instance must be shared by feature extraction and synthesis."""

    sample_rate: int = 22050
    """Samples per second of the waveform."""
    n_fft: int = 1024
    """FFT size in samples; even, so that a waveform of S samples gives exactly S // hop + 1 frames."""
    hop_length: int = 256
    """Samples between successive frames; also the number of output samples per frame."""
    win_length: int = 1024
    """Hann window length in samples (<= n_fft; zero-padded to n_fft in the middle)."""
    n_mels: int = 80
    """Number of mel bands."""
    f_min: float = 0.0
    """Lower edge of the lowest mel band in Hz."""
    f_max: float = 8000.0
    """Upper edge of the highest mel band in Hz (<= sample_rate / 2)."""
    log_floor: float = 1e-5
    """Mel magnitudes are clamped to at least this before the natural log, so silence is finite."""

    def __post_init__(self) -> None:
        """Check types and ranges at construction, so a bad config fails here and not deep in an STFT."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(field.default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"AudioConfig.{field.name} must be an int, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"AudioConfig.{field.name} must be a float, got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"AudioConfig.{field.name} must be finite, got {value!r}")
                object.__setattr__(self, field.name, float(value))
        for name, most in _LIMITS.items():
            if not 0 < getattr(self, name) <= most:
                raise ValueError(f"AudioConfig.{name} must be in [1, {most}], got {getattr(self, name)}")
        if self.n_fft % 2:
            raise ValueError(f"AudioConfig.n_fft must be even, got {self.n_fft}")
        if self.win_length > self.n_fft:
            raise ValueError(f"AudioConfig.win_length must be <= n_fft ({self.n_fft}), got {self.win_length}")
        if self.hop_length >= self.win_length:
            # With hop >= window some samples are covered by no (non-zero part of a) window: not invertible.
            raise ValueError(
                f"AudioConfig.hop_length must be < win_length ({self.win_length}), got {self.hop_length}"
            )
        if self.f_min < 0:
            raise ValueError(f"AudioConfig.f_min must be >= 0, got {self.f_min}")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(
                f"AudioConfig.f_max must be <= sample_rate / 2 ({self.sample_rate / 2}), got {self.f_max}"
            )
        if self.f_min >= self.f_max:
            raise ValueError(f"AudioConfig.f_min must be < f_max ({self.f_max}), got {self.f_min}")
        if self.log_floor <= 0:
            raise ValueError(f"AudioConfig.log_floor must be > 0, got {self.log_floor}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioConfig:
        """Build from a (e.g. JSON/YAML) mapping; missing keys take defaults, unknown keys are an error."""
        if not isinstance(d, Mapping):
            raise ValueError(f"AudioConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"AudioConfig has no field {key!r}; known fields: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields, the inverse of `from_dict`."""
        return dataclasses.asdict(self)


def _hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    linear = hz / _MEL_LINEAR_HZ_PER_MEL
    log = _MEL_BREAK + torch.log(hz.clamp(min=_MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return torch.where(hz >= _MEL_BREAK_HZ, log, linear)


def _mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of `_hz_to_mel`."""
    linear = mel * _MEL_LINEAR_HZ_PER_MEL
    log = _MEL_BREAK_HZ * torch.exp(_MEL_LOG_STEP * (mel - _MEL_BREAK))
    return torch.where(mel >= _MEL_BREAK, log, linear)


def mel_filterbank(cfg: AudioConfig) -> Tensor:
    """Slaney-style triangular mel filters with area normalisation, shape [n_mels, n_fft // 2 + 1].

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")``
    (mel-spaced edges, triangles on linear Hz, each scaled by 2 / bandwidth), computed in float64 like librosa
    and returned as float32. If bands are narrower than the FFT bin spacing (many mels, small n_fft) a band
    can fall between two bins and be all zero, as in librosa; the defaults have none.
    """
    fft_hz = torch.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1, dtype=torch.float64)  # [F]
    mel_edges = torch.linspace(
        _hz_to_mel(torch.tensor(cfg.f_min, dtype=torch.float64, device="cpu")).item(),
        _hz_to_mel(torch.tensor(cfg.f_max, dtype=torch.float64, device="cpu")).item(),
        cfg.n_mels + 2,
        dtype=torch.float64,
    )  # [M + 2]
    hz_edges = _mel_to_hz(mel_edges)  # [M + 2]: band m spans hz_edges[m] .. hz_edges[m + 2]
    widths = hz_edges.diff()  # [M + 1]
    # Triangle sides: rising goes 0 -> 1 from lower edge to centre, falling 1 -> 0 from centre to top.
    rising = (fft_hz[None, :] - hz_edges[:-2, None]) / widths[:-1, None]  # [M, F]
    falling = (hz_edges[2:, None] - fft_hz[None, :]) / widths[1:, None]  # [M, F]
    weights = torch.minimum(rising, falling).clamp(min=0.0)  # [M, F]
    area_norm = 2.0 / (hz_edges[2:] - hz_edges[:-2])  # [M]: each triangle gets unit area in Hz
    return (weights * area_norm[:, None]).to(torch.float32)


def _reflect_pad(audio: Tensor, pad: int) -> Tensor:
    """Reflect-pad the last axis by `pad` on both sides, for any length (numpy "reflect" semantics).

    torch's reflect mode needs pad < length; reflecting repeatedly extends it to clips shorter than
    n_fft // 2, so that every clip of S >= 1 samples gives S // hop + 1 frames.
    """
    # audio: [B, S]
    if audio.shape[-1] == 1:
        return audio.repeat(1, 2 * pad + 1)  # [B, 1 + 2 * pad]: a single sample reflects onto itself
    while pad > 0:
        step = min(pad, audio.shape[-1] - 1)
        audio = F.pad(audio, (step, step), mode="reflect")  # [B, S + 2 * step]
        pad -= step
    return audio


def _stft(audio: Tensor, cfg: AudioConfig, window: Tensor) -> Tensor:
    """Centred, reflect-padded complex STFT: [B, S] -> [B, n_fft // 2 + 1, S // hop + 1]."""
    padded = _reflect_pad(audio, cfg.n_fft // 2)  # [B, S + n_fft]
    return torch.stft(
        padded,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=False,
        return_complex=True,
    )  # [B, F, T]


def _istft(spec: Tensor, cfg: AudioConfig, window: Tensor, length: int) -> Tensor:
    """Inverse of `_stft` (least-squares overlap-add): [B, F, T] -> [B, length]."""
    return torch.istft(
        spec,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        length=length,
    )


def _as_batch(x: Tensor, name: str, item_shape: str, item_rank: int) -> tuple[Tensor, bool]:
    """Return `x` as float32 with a leading batch axis, and whether the caller passed it unbatched."""
    if x.dim() not in (item_rank, item_rank + 1):
        raise ValueError(f"{name} must have shape {item_shape} or [B, {item_shape[1:]}, got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    unbatched = x.dim() == item_rank
    x = x.to(torch.float32)
    return (x.unsqueeze(0) if unbatched else x), unbatched


def _hann(cfg: AudioConfig) -> Tensor:
    """Periodic Hann window of win_length samples, [win_length]."""
    return torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float32)


class MelSpectrogram(torch.nn.Module):
    """waveform -> log-mel. Magnitude (power 1) STFT, centered with reflect padding, periodic Hann window.

    ``log_mel = ln(max(mel, log_floor))``; frame ``t`` is centred on sample ``t * hop_length``.
    """

    window: Tensor
    mel_basis: Tensor

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", _hann(cfg), persistent=False)  # [win_length]
        self.register_buffer("mel_basis", mel_filterbank(cfg), persistent=False)  # [M, F]

    def forward(self, audio: Tensor) -> Tensor:
        """audio [S] or [B, S] float in [-1, 1] -> log_mel [T, n_mels] or [B, T, n_mels], T = S // hop + 1."""
        batch, unbatched = _as_batch(audio, "audio", "[S]", 1)  # batch: [B, S]
        if batch.shape[-1] < 1:
            raise ValueError(f"audio must have at least 1 sample, got shape {list(audio.shape)}")
        magnitude = _stft(batch, self.cfg, self.window).abs()  # [B, F, T]
        mel = torch.matmul(self.mel_basis, magnitude)  # [B, M, T]
        log_mel = mel.clamp(min=self.cfg.log_floor).log().transpose(1, 2)  # [B, T, M]
        return log_mel[0] if unbatched else log_mel


class GriffinLim(torch.nn.Module):
    """log-mel -> waveform: mel to linear magnitude by the pseudo-inverse of the filterbank (clamped at >= 0),
    then the fast Griffin-Lim algorithm (Perraudin et al. 2013, momentum 0.99) for n_iter iterations.

    The initial phase is uniform random, drawn on every call from a CPU ``torch.Generator`` seeded with
    `seed` (then moved to the input's device), so the same input gives the same output on every call and
    every device. One [F, T] phase draw is shared by all items of a batch, so a batched call equals the
    per-item calls up to float rounding. Zero phase was measured as the alternative (32 iterations, 3 s
    test signals) and is not better overall: closer to the original on a slow-glide harmonic signal
    (spectral convergence 0.24 vs 0.29) but a worse fit to the target magnitude there (0.176 vs 0.164)
    and on a click train (0.104 vs 0.086), and equal on noise, chirp and vibrato signals.
    """

    window: Tensor
    inverse_basis: Tensor

    def __init__(self, cfg: AudioConfig, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.cfg = cfg
        self.n_iter = n_iter
        self.momentum = momentum
        self.seed = seed
        self.register_buffer("window", _hann(cfg), persistent=False)  # [win_length]
        # Pseudo-inverse once, in float64: minimum-norm linear magnitude per mel frame (0 above f_max).
        basis = mel_filterbank(cfg).to(torch.float64)  # [M, F]
        self.register_buffer(
            "inverse_basis", torch.linalg.pinv(basis).to(torch.float32), persistent=False
        )  # [F, M]

    def forward(self, log_mel: Tensor) -> Tensor:
        """log_mel [T, n_mels] or [B, T, n_mels] -> waveform [T * hop_length] or [B, T * hop_length]."""
        batch, unbatched = _as_batch(log_mel, "log_mel", "[T, n_mels]", 2)  # batch: [B, T, M]
        n_frames, n_mels = batch.shape[1], batch.shape[2]
        if n_mels != self.cfg.n_mels or n_frames < 1:
            raise ValueError(
                f"log_mel must have shape [T >= 1, {self.cfg.n_mels}] or [B, T >= 1, {self.cfg.n_mels}], "
                f"got {list(log_mel.shape)}"
            )
        if not bool(torch.isfinite(batch).all()):
            raise ValueError("log_mel contains NaN or inf")
        length = n_frames * self.cfg.hop_length
        mel = batch.exp().transpose(1, 2)  # [B, M, T]
        magnitude = torch.matmul(self.inverse_basis, mel).clamp(min=0.0)  # [B, F, T]

        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        phase = torch.rand(magnitude.shape[1:], generator=generator) * (2 * math.pi)  # [F, T]
        angles = torch.polar(torch.ones_like(phase), phase).to(magnitude.device)  # [F, T] complex
        angles = angles.expand(magnitude.shape)  # [B, F, T]

        # Fast Griffin-Lim: c_n = consistent(magnitude * angles); the next phase is taken from the
        # extrapolation c_n + a (c_n - c_{n-1}), which up to a positive scale is c_n - a / (1 + a) c_{n-1}.
        extrapolation = self.momentum / (1.0 + self.momentum)
        previous = torch.zeros_like(angles)  # [B, F, T] complex
        for _ in range(self.n_iter):
            audio = _istft(magnitude * angles, self.cfg, self.window, length)  # [B, T * hop]
            # T * hop samples give T + 1 centred frames; the last one lies past the features' end.
            rebuilt = _stft(audio, self.cfg, self.window)[..., :n_frames]  # [B, F, T]
            angles = rebuilt - extrapolation * previous
            angles = angles / (angles.abs() + _PHASE_EPS)  # unit phasors; all-zero bins stay 0
            previous = rebuilt
        audio = _istft(magnitude * angles, self.cfg, self.window, length)  # [B, T * hop]
        return audio[0] if unbatched else audio


def spectral_convergence(reference: Tensor, estimate: Tensor, cfg: AudioConfig) -> float:
    """||S_ref| - |S_est||_F / ||S_ref||_F on linear STFT magnitudes, after trimming to the shorter length.

    0 means identical magnitudes; it ignores phase, so it compares vocoders (e.g. streamed vs offline)
    on what is audible. Both inputs are [S] or [B, S] with equal leading shape. Returns 0.0 when both are
    silent and inf when only the reference is.
    """
    ref, _ = _as_batch(reference, "reference", "[S]", 1)  # [B, S1]
    est, _ = _as_batch(estimate, "estimate", "[S]", 1)  # [B, S2]
    if ref.shape[0] != est.shape[0] or reference.dim() != estimate.dim():
        raise ValueError(
            f"reference and estimate must have the same leading shape, got {list(reference.shape)} "
            f"and {list(estimate.shape)}"
        )
    length = min(ref.shape[-1], est.shape[-1])
    if length < 1:
        raise ValueError(
            f"inputs must have at least 1 sample, got {list(reference.shape)}, {list(estimate.shape)}"
        )
    window = _hann(cfg).to(ref.device)  # [win_length]
    ref_mag = _stft(ref[:, :length], cfg, window).abs()  # [B, F, T]
    est_mag = _stft(est[:, :length].to(ref.device), cfg, window).abs()  # [B, F, T]
    error = torch.linalg.vector_norm(ref_mag - est_mag).item()
    norm = torch.linalg.vector_norm(ref_mag).item()
    if norm == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / norm
