"""The networks of a FastSpeech-style voice, as addon entries: shared by the training recipe, the
untrained placeholder voice and the test fixtures, so all three write the same addon layout."""

from __future__ import annotations

from typing import Any

from tts_neuron.audio import AudioConfig
from tts_neuron.models.fastspeech import DurationPredictor, MelDecoder, TextEncoder
from tts_neuron_build.addon_writer import GRIFFIN_LIM_STACK, NEURON_STACK, SPEAKING_STACK, NetworkEntry
from tts_neuron_build.vocoder_voice import vocoder_network

DEFAULT_SIZES: dict[str, Any] = {
    "channels": 192,
    "encoder_layers": 4,
    "decoder_channels": 256,
    "decoder_layers": 6,
}

STACKS = {
    "cpu": SPEAKING_STACK,  # dynamic shapes: --target cpu or cuda
    "neuron": NEURON_STACK,
    "griffin-lim": GRIFFIN_LIM_STACK,
}

TOKEN_BUCKETS = [16, 32, 64, 128, 256]
"""Encoder lengths compiled for fixed-shape targets; longer sentences are split between words."""
DECODER_CORE_FRAMES = 64
"""Frames each full decoder window produces; a window adds the receptive field on each side."""


def fastspeech_networks(
    n_symbols: int,
    n_mels: int = 80,
    sizes: dict[str, int] | None = None,
    token_buckets: list[int] | None = None,
    vocoder_sizes: dict[str, Any] | None = None,
) -> dict[str, NetworkEntry]:
    """Freshly initialised networks (in a fixed order, so a seed reproduces them) with their buckets."""
    s = {**DEFAULT_SIZES, **(sizes or {})}
    encoder_cfg = {"n_symbols": n_symbols, "channels": s["channels"], "layers": s["encoder_layers"]}
    duration_cfg = {"channels": s["channels"]}
    decoder_cfg = {
        "in_channels": s["channels"],
        "channels": s["decoder_channels"],
        "layers": s["decoder_layers"],
        "n_mels": n_mels,
    }
    text_encoder, duration_predictor = TextEncoder(**encoder_cfg), DurationPredictor(**duration_cfg)
    decoder = MelDecoder(**decoder_cfg)
    tokens = token_buckets or TOKEN_BUCKETS
    halo = 2 * decoder.receptive_radius
    windows = [DECODER_CORE_FRAMES // 4 + halo, DECODER_CORE_FRAMES + halo]  # a short last window, a full one
    return {
        "text_encoder": NetworkEntry(
            text_encoder,
            "TextEncoder",
            "encoder",
            ["tokens", "token_mask"],
            ["encodings"],
            encoder_cfg,
            tokens,
        ),
        "duration_predictor": NetworkEntry(
            duration_predictor,
            "DurationPredictor",
            "encoder",
            ["encodings", "token_mask"],
            ["log_durations"],
            duration_cfg,
            tokens,
        ),
        "decoder": NetworkEntry(
            decoder, "MelDecoder", "decoder", ["frames", "frame_mask"], ["mel"], decoder_cfg, windows
        ),
        "vocoder": vocoder_network(AudioConfig(n_mels=n_mels), vocoder_sizes),
    }
