"""The networks and stacks of the Tacotron2-style voice, as addon entries: shared by the training recipe
and the test fixtures, so both write the same addon layout."""

from __future__ import annotations

from typing import Any

from tts_neuron.audio import AudioConfig
from tts_neuron.models.tacotron import AttentionStep, Postnet, TacotronEncoder
from tts_neuron_build.addon_writer import NetworkEntry
from tts_neuron_build.vocoder_voice import vocoder_network

DEFAULT_SIZES: dict[str, Any] = {
    "channels": 256,
    "encoder_layers": 4,
    "attention_dim": 128,
    "reduction": 4,
    "prenet_channels": 128,
    "rnn": 256,
    "postnet_channels": 256,
    "postnet_layers": 4,
}

TOKEN_BUCKETS = [16, 32, 64, 128, 256]
"""Encoder lengths the encoder and the decoder step are compiled for; longer sentences are split."""
MAX_TOKENS = TOKEN_BUCKETS[-1]
"""Tokens attention decodes at once, on every stack: a longer sentence is encoded and decoded in pieces."""
POSTNET_CORE_FRAMES = 48
"""Frames each full postnet window produces; a window adds the receptive field on each side."""


def _pipeline(encoders: str, attention: str, postnet: str, vocoder: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "StreamablePipeline",
            "sequence_block": {
                "type": encoders,
                **({"max_tokens": MAX_TOKENS} if encoders == "Encoders" else {}),
            },
            "streamable_block": {
                "type": "StreamableStack",
                "stack": [
                    {"type": attention, "max_tokens": MAX_TOKENS},
                    {"type": postnet, "network": "postnet"},
                ],
            },
        },
        {"type": vocoder},
    ]


SPEAKING_STACK = _pipeline("Encoders", "AttentionDecoder", "Decoder", "Vocoder")
NEURON_STACK = _pipeline("NeuronEncoders", "PaddedAttentionDecoder", "PaddedDecoder", "PaddedVocoder")
GRIFFIN_LIM_STACK = _pipeline("Encoders", "AttentionDecoder", "Decoder", "GriffinLim")
STACKS = {
    "cpu": SPEAKING_STACK,  # dynamic shapes: --target cpu or cuda
    "neuron": NEURON_STACK,
    "griffin-lim": GRIFFIN_LIM_STACK,
}


def tacotron_networks(
    n_symbols: int,
    n_mels: int = 80,
    sizes: dict[str, Any] | None = None,
    token_buckets: list[int] | None = None,
    vocoder_sizes: dict[str, Any] | None = None,
) -> dict[str, NetworkEntry]:
    """Freshly initialised networks (in a fixed order, so a seed reproduces them) with their buckets."""
    s = {**DEFAULT_SIZES, **(sizes or {})}
    encoder_cfg = {
        "n_symbols": n_symbols,
        "channels": s["channels"],
        "layers": s["encoder_layers"],
        "attention_dim": s["attention_dim"],
    }
    step_cfg = {
        "n_mels": n_mels,
        "memory_channels": s["channels"],
        "attention_dim": s["attention_dim"],
        "reduction": s["reduction"],
        "prenet_channels": s["prenet_channels"],
        "attention_rnn": s["rnn"],
        "decoder_rnn": s["rnn"],
    }
    postnet_cfg = {"n_mels": n_mels, "channels": s["postnet_channels"], "layers": s["postnet_layers"]}
    encoder, step, postnet = TacotronEncoder(**encoder_cfg), AttentionStep(**step_cfg), Postnet(**postnet_cfg)
    tokens = token_buckets or TOKEN_BUCKETS
    halo = 2 * postnet.receptive_radius
    windows = [POSTNET_CORE_FRAMES // 4 + halo, POSTNET_CORE_FRAMES + halo]
    step_inputs = ["memory", "keys", "memory_mask", "alignment", "state", "last_frame", "prenet_masks"]
    return {
        "encoder": NetworkEntry(
            encoder,
            "TacotronEncoder",
            "encoder",
            ["tokens", "token_mask"],
            ["memory", "keys"],
            encoder_cfg,
            tokens,
        ),
        "decoder_step": NetworkEntry(
            step,
            "AttentionStep",
            "decoder",
            step_inputs,
            ["frames", "stop_logit", "alignment", "state"],
            step_cfg,
            tokens,
        ),
        "postnet": NetworkEntry(
            postnet, "Postnet", "postnet", ["frames", "frame_mask"], ["mel"], postnet_cfg, windows
        ),
        "vocoder": vocoder_network(AudioConfig(n_mels=n_mels), vocoder_sizes),
    }
