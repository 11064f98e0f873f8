"""Blocks of a VITS voice (imported Piper voices) where the duration-voice blocks do not fit as they are.

VITS draws noise twice: the stochastic duration predictor starts from noise times `noise_w`, and the flow
starts from the prior's mean plus noise times its scale times `noise_scale`. Here both are drawn on the
host from the sentence's seed (a `seed` feature the voice sets per sentence) and enter the networks as
inputs, so compiled graphs hold no random operator, a seeded call repeats exactly, and a stream's noise
does not depend on the streams it is batched with. The rest is the framework's own blocks: `Encoders`
runs the VITS encoder network, `Decoder`/`PaddedDecoder` the reverse flow, `Vocoder`/`PaddedVocoder`
HiFi-GAN, all in windows with their receptive field of context.

    SequenceBlockContainer [DurationNoise, Encoders] -> VitsUpsampler -> Decoder (flow) -> Vocoder
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tts_neuron.blocks.acoustic import Upsampler
from tts_neuron.blocks.base import FRAME_TOKENS, Chunk, Features, SequenceBlock, first_chunk, place_tokens
from tts_neuron.errors import StackError

_STREAM_STEP = 0x9E3779B97F4A7C15
"""Spreads a sentence's seed into one independent generator seed per noise draw."""
DURATION_NOISE, PRIOR_NOISE = 0, 1


def noise_generator(features: Features, draw: int) -> torch.Generator:
    """A CPU generator for one of a sentence's noise draws, seeded from its `seed` feature (0 without)."""
    seed = int(features["seed"]) if "seed" in features else 0
    generator = torch.Generator()
    generator.manual_seed((seed + draw * _STREAM_STEP) % (1 << 63))
    return generator


def setting(features: Features, name: str, default: float) -> float:
    """A per-call setting's value: its feature (set by the voice from the call), else the block's default."""
    return float(features[name]) if name in features else default


class DurationNoise(SequenceBlock):
    """Adds `duration_noise` [1, N, 2]: standard normal noise times `noise_w`, drawn from the sentence's
    seed, the stochastic duration predictor's starting point (zero when noise_w is 0)."""

    def __init__(self, noise_w: float = 0.8, output: str = "duration_noise") -> None:
        if not 0 <= noise_w <= 10:
            raise ValueError(f"noise_w must be in [0, 10], got {noise_w}")
        self.noise_w, self.output = noise_w, output

    def __call__(self, features: Features) -> Features:
        tokens = features["tokens"]
        scale = setting(features, "noise_w", self.noise_w)
        n = tokens.shape[1]
        if scale == 0:
            noise = torch.zeros(1, n, 2)
        else:  # drawn [1, 2, N] as VITS lays it out, handed over token-first so buckets pad it
            noise = torch.randn(1, 2, n, generator=noise_generator(features, DURATION_NOISE)) * scale
            noise = noise.transpose(1, 2).contiguous()
        return {**features, self.output: noise.to(tokens.device)}

    def describe(self) -> str:
        return f"DurationNoise (noise_w {self.noise_w} unless the call sets it, seeded per sentence)"


class VitsUpsampler(Upsampler):
    """Piper's durations and the flow's starting point, a chunk at a time.

    Each token gets `ceil(exp(log w) * length_scale / rate)` frames (Piper's rule; `length_scale` from the
    call, else this block's), its prior's mean `m` and log-scale `logs` are repeated for them, and each
    frame leaves as `z_p = m + noise * exp(logs) * noise_scale`, the noise [T, C] drawn once per sentence
    from its seed. The first chunk (56 frames) is what the flow's first window needs (a core of 24, the
    first audio window of 8 frames plus HiFi-GAN's right context of 12, and its own right context of
    32)."""

    def __init__(
        self,
        chunk_frames: int = 64,
        first_chunk_frames: int = 56,
        length_scale: float = 1.0,
        noise_scale: float = 0.667,
        max_frames_per_phoneme: int = 1000,
        prior: str = "prior",
        durations: str = "log_durations",
    ) -> None:
        super().__init__(
            chunk_frames, first_chunk_frames, length_scale, max_frames_per_phoneme, prior, durations
        )
        if not 0 <= noise_scale <= 10:
            raise ValueError(f"noise_scale must be in [0, 10], got {noise_scale}")
        self.noise_scale = noise_scale

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        for key in (self.encodings_key, self.durations_key):
            if key not in features:
                raise StackError(f"VitsUpsampler needs feature '{key}'; it was given {sorted(features)}")
        prior = features[self.encodings_key][0]  # [N, 2C]
        rate = setting(features, "rate", 1.0)
        scale = setting(features, "length_scale", self.length_scale) / rate
        logw = features[self.durations_key][0].float()  # [N]
        frames = torch.ceil(torch.exp(logw) * scale).clamp(0, self.max_frames_per_phoneme).long()
        ends = torch.cumsum(frames.to(prior.device), 0)  # [N]
        total = int(ends[-1]) if len(ends) else 0
        if FRAME_TOKENS in features:
            frame_tokens = torch.searchsorted(ends, torch.arange(total + 1, device=ends.device), right=True)
            place_tokens(features, 0, frame_tokens)
        channels = prior.shape[1] // 2
        noise_scale = setting(features, "noise_scale", self.noise_scale)
        if noise_scale == 0:
            noise = None
        else:
            noise = torch.randn(total, channels, generator=noise_generator(features, PRIOR_NOISE))
            noise = (noise * noise_scale).to(prior.device)
        first = first_chunk(features, self.first_chunk_frames, self.chunk_frames)
        return self._prior_chunks(prior, noise, ends, total, first)

    def _prior_chunks(
        self, prior: torch.Tensor, noise: torch.Tensor | None, ends: torch.Tensor, total: int, first: int
    ) -> Iterator[Chunk]:
        channels = prior.shape[1] // 2
        for chunk in self._chunks(prior, ends, total, first):
            m, logs = chunk.data[:, :channels], chunk.data[:, channels:]  # [T, C] each
            z_p = m if noise is None else m + noise[chunk.start : chunk.end] * torch.exp(logs)
            yield Chunk(z_p, chunk.start, chunk.final)

    def describe(self) -> str:
        return (
            f"VitsUpsampler (Piper's durations, prior noise_scale {self.noise_scale} unless the call sets "
            "it; "
            f"chunks {self.first_chunk_frames}, then {self.chunk_frames} frames)"
        )
