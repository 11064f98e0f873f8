"""How audio leaves the server: raw PCM, a streaming WAV, or OpenAI's server-sent events."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np

RESPONSE_FORMATS = ("pcm", "wav")
"""What `response_format` may be. OpenAI's others (mp3, opus, aac, flac) need a codec library we do not
ship: they are refused with a 400 before any synthesis."""

MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav"}

UNKNOWN_SIZE = 0xFFFFFFFF
"""The RIFF and data sizes of a WAV whose length is not known when its header goes out (as OpenAI's and
Kokoro's streamed WAVs do); players read to the end of the stream."""


def pcm16(audio: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to signed 16-bit little-endian PCM, clipped."""
    # audio: [S] float32
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit WAV of unknown length."""
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", UNKNOWN_SIZE)
    )


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_delta(pcm: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(pcm).decode("ascii")})


def sse_done(input_tokens: int, output_tokens: int) -> bytes:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return sse_event({"type": "speech.audio.done", "usage": usage})
