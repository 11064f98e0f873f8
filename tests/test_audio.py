"""Tests for tts_neuron.audio: mel filterbank, log-mel extraction, Griffin-Lim and spectral convergence."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tts_neuron.audio import AudioConfig, GriffinLim, MelSpectrogram, mel_filterbank, spectral_convergence

CFG = AudioConfig()
SR = CFG.sample_rate
HOP = CFG.hop_length


def slaney_hz_to_mel(hz: float) -> float:
    """Slaney mel scale written out independently of the module: 3 mel / 200 Hz, log above 1 kHz."""
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def slaney_mel_to_hz(mel: float) -> float:
    if mel < 15.0:
        return 200.0 * mel / 3.0
    return 1000.0 * math.exp((mel - 15.0) * math.log(6.4) / 27.0)


def band_edges_hz(cfg: AudioConfig, band: int) -> tuple[float, float, float]:
    """(lower edge, centre, upper edge) of a mel band in Hz."""
    lo_mel, hi_mel = slaney_hz_to_mel(cfg.f_min), slaney_hz_to_mel(cfg.f_max)
    step = (hi_mel - lo_mel) / (cfg.n_mels + 1)
    return tuple(slaney_mel_to_hz(lo_mel + (band + i) * step) for i in range(3))  # type: ignore[return-value]


def slaney_weight(cfg: AudioConfig, band: int, fft_bin: int) -> float:
    """One filterbank entry: triangle on the mel-spaced edges, scaled to unit area (2 / bandwidth)."""
    lo, centre, hi = band_edges_hz(cfg, band)
    freq = fft_bin * cfg.sample_rate / cfg.n_fft
    triangle = max(0.0, min((freq - lo) / (centre - lo), (hi - freq) / (hi - centre)))
    return triangle * 2.0 / (hi - lo)


def harmonic_signal(seconds: float = 3.0, seed: int = 0) -> torch.Tensor:
    """Speech-like test signal: 8 harmonics of a pitch gliding 120 -> 200 Hz, plus three noise bursts."""
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR  # [S]
    f0 = 120.0 + 80.0 * t / seconds  # [S]
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR  # [S]
    voiced = sum((0.3 / k) * torch.sin(k * phase) for k in range(1, 9))  # [S]
    noise = 0.05 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    bursts = torch.zeros(n, dtype=torch.float64)
    for start in (0.5, 1.5, 2.4):
        bursts[int(start * SR) : int((start + 0.15) * SR)] = 1.0
    return (voiced + noise * bursts).to(torch.float32)


def numpy_log_mel(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Reference log-mel in numpy: reflect pad n_fft/2, periodic Hann frames, |rfft|, filterbank, ln."""
    pad = cfg.n_fft // 2
    padded = np.pad(audio.astype(np.float64), pad, mode="reflect")
    n = np.arange(cfg.win_length)
    window = np.zeros(cfg.n_fft)
    start = (cfg.n_fft - cfg.win_length) // 2
    window[start : start + cfg.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)
    n_frames = 1 + (len(padded) - cfg.n_fft) // cfg.hop_length
    frames = np.stack([padded[t * cfg.hop_length : t * cfg.hop_length + cfg.n_fft] for t in range(n_frames)])
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1))  # [T, F]
    mel = magnitude @ mel_filterbank(cfg).double().numpy().T  # [T, M]
    return np.log(np.maximum(mel, cfg.log_floor))


# --------------------------------------------------------------------------------------------- config


def test_config_dict_round_trip_and_int_to_float() -> None:
    cfg = AudioConfig.from_dict({"sample_rate": 16000, "f_max": 7600, "n_fft": 512, "win_length": 512})
    assert isinstance(cfg.f_max, float) and cfg.f_max == 7600.0
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    assert AudioConfig.from_dict({}) == AudioConfig()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sample_rate": 22050.0}, "sample_rate"),
        ({"n_mels": True}, "n_mels"),
        ({"f_min": "0"}, "f_min"),
        ({"log_floor": float("nan")}, "log_floor"),
        ({"hop_length": 0}, "hop_length"),
        ({"n_fft": 1023, "win_length": 1000}, "n_fft"),
        ({"win_length": 2048}, "win_length"),
        ({"hop_length": 1024}, "hop_length"),
        ({"f_max": 12000.0}, "f_max"),
        ({"f_min": 8000.0}, "f_min"),
        ({"f_min": -1.0}, "f_min"),
        ({"log_floor": 0.0}, "log_floor"),
        ({"n_mel": 80}, "n_mel"),
    ],
)
def test_config_rejects_bad_fields(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AudioConfig.from_dict(overrides)


# ----------------------------------------------------------------------------------------- filterbank


def test_filterbank_shape_and_sign() -> None:
    fb = mel_filterbank(CFG)
    assert fb.shape == (CFG.n_mels, CFG.n_fft // 2 + 1)
    assert fb.dtype == torch.float32
    assert bool((fb >= 0).all())
    assert bool((fb.amax(dim=1) > 0).all())  # 37 Hz mel steps vs 21.5 Hz bins: no empty band


@pytest.mark.parametrize("cfg", [CFG, AudioConfig(n_fft=4096, win_length=4096, n_mels=40)])
def test_filterbank_single_peak_and_ordered(cfg: AudioConfig) -> None:
    fb = mel_filterbank(cfg)
    peaks = []
    for band in fb:
        support = torch.nonzero(band).flatten()
        values = band[support[0] : support[-1] + 1]  # contiguous support: no zeros inside
        assert bool((values > 0).all())
        top = int(values.argmax())
        assert bool((values[: top + 1].diff() >= 0).all()) and bool((values[top:].diff() <= 0).all())
        peaks.append(int(support[0]) + top)
    assert bool((torch.tensor(peaks).diff() > 0).all())


def test_filterbank_matches_hand_computed_slaney_values() -> None:
    fb = mel_filterbank(CFG).double()
    for band in (1, 10, 30, 45, 79):
        lo, centre, hi = band_edges_hz(CFG, band)
        bin_hz = SR / CFG.n_fft
        for fft_bin in range(math.floor(lo / bin_hz), math.ceil(hi / bin_hz) + 1):
            expected = slaney_weight(CFG, band, fft_bin)
            assert fb[band, fft_bin].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # Worked by hand: 8 kHz = 15 + 27 ln(8) / ln(6.4) = 45.2456 mel, so the 82 edges are 0.558588 mel apart.
    # Band 1 (linear part): edges 37.239 / 74.478 / 111.718 Hz; bin 2 = 43.066 Hz is on the rising slope at
    # (43.066 - 37.239) / 37.239 = 0.15647, times 2 / 74.478 Hz = 0.0042020.
    assert fb[1, 2].item() == pytest.approx(0.0042020, rel=1e-4)
    # Band 60 (log part): edges 3571.405 / 3711.229 / 3856.526 Hz; bin 172 = 3703.711 Hz:
    # (3703.711 - 3571.405) / 139.824 = 0.94623, times 2 / 285.122 Hz = 0.0066374; it is the band's peak.
    assert fb[60, 172].item() == pytest.approx(0.0066374, rel=1e-4)
    assert int(fb[60].argmax()) == 172


def test_filterbank_has_unit_area() -> None:
    cfg = AudioConfig(n_fft=8192, win_length=8192, n_mels=40)  # 2.7 Hz bins: the sum approximates the area
    area = mel_filterbank(cfg).double().sum(dim=1) * cfg.sample_rate / cfg.n_fft
    assert torch.allclose(area, torch.ones_like(area), rtol=0.02)


# ------------------------------------------------------------------------------------ MelSpectrogram


@pytest.mark.parametrize("n_samples", [1, 2, 3, 255, 256, 300, 600, 1023, 1024, 1025, 5000])
def test_mel_frame_count_and_numpy_reference(n_samples: int) -> None:
    audio = torch.randn(n_samples, generator=torch.Generator().manual_seed(n_samples)) * 0.3
    log_mel = MelSpectrogram(CFG)(audio)
    assert log_mel.shape == (n_samples // HOP + 1, CFG.n_mels)
    assert log_mel.dtype == torch.float32
    expected = numpy_log_mel(audio.numpy(), CFG)
    # Floor-clamped values agree exactly; elsewhere float32 STFT vs float64 reference.
    assert np.allclose(log_mel.numpy(), expected, atol=2e-3)


def test_mel_sine_lands_in_nearest_band() -> None:
    t = torch.arange(SR) / SR
    log_mel = MelSpectrogram(CFG)(0.5 * torch.sin(2 * math.pi * 1000.0 * t))
    centres = torch.tensor([band_edges_hz(CFG, band)[1] for band in range(CFG.n_mels)])
    nearest = int((centres - 1000.0).abs().argmin())
    assert int(log_mel[5:-5].mean(dim=0).argmax()) == nearest


def test_mel_batch_equals_per_item() -> None:
    audio = torch.randn(3, 4000, generator=torch.Generator().manual_seed(1)) * 0.3
    mel = MelSpectrogram(CFG)
    batched = mel(audio)
    assert batched.shape == (3, 4000 // HOP + 1, CFG.n_mels)
    for i in range(3):
        assert torch.allclose(batched[i], mel(audio[i]), atol=1e-5)


@pytest.mark.parametrize("shape", [(), (2, 3, 100)])
def test_mel_rejects_wrong_rank(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[S\] or \[B, S\].*" + re.escape(str(list(shape)))):
        MelSpectrogram(CFG)(torch.zeros(shape))


def test_mel_rejects_integer_audio() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        MelSpectrogram(CFG)(torch.zeros(100, dtype=torch.int16))


# ---------------------------------------------------------------------------------------- GriffinLim


@pytest.fixture(scope="module")
def harmonic() -> torch.Tensor:
    return harmonic_signal()


def test_griffin_lim_deterministic_and_length(harmonic: torch.Tensor) -> None:
    gl = GriffinLim(CFG, n_iter=8)
    log_mel = MelSpectrogram(CFG)(harmonic[:20000])
    first, second = gl(log_mel), gl(log_mel)
    assert first.shape == (log_mel.shape[0] * HOP,) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert not torch.equal(first, GriffinLim(CFG, n_iter=8, seed=1)(log_mel))
    for n_frames in (1, 2, 7):
        assert gl(log_mel[:n_frames]).shape == (n_frames * HOP,)


def test_griffin_lim_batch_equals_per_item(harmonic: torch.Tensor) -> None:
    gl = GriffinLim(CFG, n_iter=8)
    log_mel = MelSpectrogram(CFG)(harmonic[:25000])  # [T, M], T = 98
    batched = gl(torch.stack([log_mel[:40], log_mel[40:80]]))  # [2, 40 * hop]
    assert batched.shape == (2, 40 * HOP)
    assert torch.allclose(batched[0], gl(log_mel[:40]), atol=1e-3)
    assert torch.allclose(batched[1], gl(log_mel[40:80]), atol=1e-3)


def test_griffin_lim_spectral_convergence_bound(harmonic: torch.Tensor) -> None:
    """Measured 0.287 (seeds 0/1/2: 0.287/0.285/0.294). The mel pseudo-inverse alone already costs 0.240
    (its magnitude vs the true STFT magnitude), so that is the floor for any phase; 0.35 leaves headroom for
    BLAS/FFT differences while a frame shift, a wrong scale or skipped iterations (0.68 at n_iter=0) fail."""
    log_mel = MelSpectrogram(CFG)(harmonic)
    estimate = GriffinLim(CFG)(log_mel)
    assert estimate.shape == (log_mel.shape[0] * HOP,)
    convergence = spectral_convergence(harmonic, estimate, CFG)
    assert 0.2 < convergence < 0.35
    assert convergence < spectral_convergence(harmonic, GriffinLim(CFG, n_iter=0)(log_mel), CFG) - 0.2


def test_griffin_lim_silence_is_finite_and_near_zero() -> None:
    silent = torch.full((50, CFG.n_mels), math.log(CFG.log_floor))
    audio = GriffinLim(CFG)(silent)
    assert bool(torch.isfinite(audio).all())
    assert audio.abs().max().item() < 1e-3  # measured 4.3e-5 (the floor itself, not exact silence)
    log_mel = MelSpectrogram(CFG)(torch.zeros(3000))
    assert torch.equal(GriffinLim(CFG)(log_mel), GriffinLim(CFG)(silent[: log_mel.shape[0]]))


def smoothed_energy(audio: torch.Tensor, width: int = 129) -> torch.Tensor:
    return F.avg_pool1d((audio**2)[None, None], width, 1, width // 2)[0, 0]  # [S]


def energy_lag(reference: torch.Tensor, estimate: torch.Tensor, max_lag: int) -> int:
    """Lag (samples) maximising the cross-correlation of smoothed energies; > 0: estimate is late."""
    ref, est = smoothed_energy(reference), smoothed_energy(estimate)
    n = ref.shape[0]
    scores = [
        float((ref[max_lag : n - max_lag] * est[max_lag + lag : n - max_lag + lag]).sum())
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def test_griffin_lim_is_time_aligned_on_click_train() -> None:
    n = SR
    clicks = torch.zeros(n)
    clicks[torch.arange(1000, n - 1000, 2242)] = 0.9
    estimate = GriffinLim(CFG)(MelSpectrogram(CFG)(clicks))[:n]
    assert abs(energy_lag(clicks, estimate, max_lag=2 * HOP)) <= 8  # measured 2 (seeds 0-3: 2, -1, 0, 5)
    # Control: the measure does see a one-hop shift.
    late = torch.cat([torch.zeros(HOP), clicks[:-HOP]])
    assert abs(energy_lag(clicks, late, max_lag=2 * HOP) - HOP) <= 1


def test_griffin_lim_frames_agree_at_lag_zero(harmonic: torch.Tensor) -> None:
    """Per-frame mel energy of GL(mel(x)) follows that of x at lag 0, on x gated on/off at 3.3 Hz."""
    t = torch.arange(harmonic.shape[0]) / SR  # [S]
    gated = harmonic * (torch.sin(2 * math.pi * 3.3 * t) > 0)  # [S]
    mel = MelSpectrogram(CFG)
    original = mel(gated).exp().sum(dim=1)  # [T]
    again = mel(GriffinLim(CFG)(mel(gated))).exp().sum(dim=1)[: original.shape[0]]  # [T]

    def relative_error(lag: int) -> float:
        n = original.shape[0]
        diff = original[2 : n - 2] - again[2 + lag : n - 2 + lag]
        return (diff.abs().sum() / original[2 : n - 2].sum()).item()

    # Measured 0.049 at lag 0 and 0.208 / 0.204 at lags -1 / +1.
    assert relative_error(0) < 0.1
    assert relative_error(0) < 0.5 * min(relative_error(-1), relative_error(1))


@pytest.mark.parametrize("shape", [(80,), (2, 3, 4, 80), (10, 64), (2, 10, 81), (0, 80)])
def test_griffin_lim_rejects_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(list(shape)))):
        GriffinLim(CFG)(torch.zeros(shape))


def test_griffin_lim_rejects_non_finite() -> None:
    log_mel = torch.zeros(5, CFG.n_mels)
    log_mel[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GriffinLim(CFG)(log_mel)


def test_modules_keep_constants_as_buffers() -> None:
    assert {name for name, _ in MelSpectrogram(CFG).named_buffers()} == {"window", "mel_basis"}
    gl = GriffinLim(CFG)
    assert {name for name, _ in gl.named_buffers()} == {"window", "inverse_basis"}
    assert gl.inverse_basis.shape == (CFG.n_fft // 2 + 1, CFG.n_mels)
    assert gl.state_dict() == {}  # derived from the config, so not saved in checkpoints


# ------------------------------------------------------------------------------ spectral_convergence


def test_spectral_convergence_zero_for_identical_positive_for_different(harmonic: torch.Tensor) -> None:
    clip = harmonic[:20000]
    assert spectral_convergence(clip, clip.clone(), CFG) == 0.0
    # Trimmed to the shorter input: a longer estimate with the same prefix still scores 0.
    assert spectral_convergence(clip, torch.cat([clip, torch.ones(500)]), CFG) == 0.0
    assert spectral_convergence(clip, 0.5 * clip, CFG) == pytest.approx(0.5, rel=1e-4)
    assert spectral_convergence(clip, harmonic[20000:40000], CFG) > 0.1
    batch = torch.stack([clip, clip])
    assert spectral_convergence(batch, batch, CFG) == 0.0


def test_spectral_convergence_silent_reference() -> None:
    assert spectral_convergence(torch.zeros(1000), torch.zeros(1000), CFG) == 0.0
    assert spectral_convergence(torch.zeros(1000), torch.ones(1000), CFG) == math.inf


def test_spectral_convergence_rejects_mismatched_batch() -> None:
    with pytest.raises(ValueError, match="leading shape"):
        spectral_convergence(torch.zeros(2, 1000), torch.zeros(3, 1000), CFG)
