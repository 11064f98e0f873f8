"""The networks of a FastSpeech-style voice, as addon entries: shared by the training recipe, the
untrained placeholder voice and the test fixtures, so all three write the same addon layout."""

from __future__ import annotations

from typing import Any

from compile.addon_writer import SPEAKING_STACK, NetworkEntry
from tts_neuron.models.fastspeech import DurationPredictor, MelDecoder, TextEncoder

DEFAULT_SIZES: dict[str, Any] = {
    "channels": 192,
    "encoder_layers": 4,
    "decoder_channels": 256,
    "decoder_layers": 6,
}

STACKS = {"cpu": SPEAKING_STACK, "cuda": SPEAKING_STACK}


def fastspeech_networks(n_symbols: int, n_mels: int = 80, **sizes: Any) -> dict[str, NetworkEntry]:
    s = {**DEFAULT_SIZES, **sizes}
    encoder_cfg = {"n_symbols": n_symbols, "channels": s["channels"], "layers": s["encoder_layers"]}
    duration_cfg = {"channels": s["channels"]}
    decoder_cfg = {
        "in_channels": s["channels"],
        "channels": s["decoder_channels"],
        "layers": s["decoder_layers"],
        "n_mels": n_mels,
    }
    return {
        "text_encoder": NetworkEntry(
            TextEncoder(**encoder_cfg),
            "TextEncoder",
            "encoder",
            ["tokens", "token_mask"],
            ["encodings"],
            encoder_cfg,
        ),
        "duration_predictor": NetworkEntry(
            DurationPredictor(**duration_cfg),
            "DurationPredictor",
            "encoder",
            ["encodings", "token_mask"],
            ["log_durations"],
            duration_cfg,
        ),
        "decoder": NetworkEntry(
            MelDecoder(**decoder_cfg), "MelDecoder", "decoder", ["frames", "frame_mask"], ["mel"], decoder_cfg
        ),
    }
