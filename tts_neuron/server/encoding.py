"""How audio leaves the server: OpenAI's six formats, each encoded chunk by chunk as the audio is made, at
the rate the client expects, raw or as OpenAI's server-sent events.

The stage after the engine: float32 chunks at the voice's rate go through a streamed band-limited resampler
(soxr) when the output rate differs, are quantised once to 16-bit, then written as raw PCM, a streamed WAV,
or through one PyAV (ffmpeg) encoder and muxer per request: mp3, Ogg Opus, ADTS AAC, FLAC. One encoder per
stream, never one per chunk, so codecs with priming (AAC, mp3) add no gaps at chunk joins.
"""

from __future__ import annotations

import base64
import json
import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np
import soxr

RESPONSE_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
"""What `response_format` may be: OpenAI's enum, mp3 first as its default."""

DEFAULT_FORMAT = "mp3"
"""OpenAI's default when a request names no format: clients save the body as `speech.mp3`."""

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
"""The content types OpenAI answers with (checked against its API by stdapi.ai's suite)."""

SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Rates a request may ask for with `sample_rate`: those that mp3 and AAC can carry."""

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
"""The only rates libopus takes."""

OPENAI_RATE = 24000
"""OpenAI's `pcm` is 24 kHz, and clients play it at that rate whatever the server says; Opus cannot carry
22,050 Hz. The other formats name their rate in their headers and keep the voice's own."""

BIT_RATES = {"mp3": 64_000, "opus": 32_000, "aac": 64_000}
"""Bits per second of the lossy formats: ample for mono speech."""

_CODECS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}
"""Format -> (ffmpeg muxer, encoder)."""

_ENCODER_OPTIONS = {
    "mp3": {"compression_level": "7"},  # LAME -q 7: 5.0 ms per second of audio, not 9.3 at its default
    "opus": {"compression_level": "5"},  # 2.7 ms, not 9.4 at complexity 10
    "aac": {"aac_coder": "fast"},  # 3.6 ms, not 9.4 with the two-loop coder
}
"""Cheaper settings than the encoders' defaults, which spend as much CPU as synthesis itself on mono
speech at these bit rates (benchmarks/encode_cost.py, docs/serving.md#formats)."""

_MUXER_OPTIONS = {
    "mp3": {"write_xing": "0"},  # a Xing header's length and seek table are unknown while streaming
    "ogg": {"page_duration": "20000"},  # an Ogg page per 20 ms packet, not per second: nothing waits
}

UNKNOWN_SIZE = 0xFFFFFFFF
"""The RIFF and data sizes of a WAV whose length is not known when its header goes out (as OpenAI's and
Kokoro's streamed WAVs do); players read to the end of the stream."""


def output_rate(response_format: str, voice_rate: int, requested: int | None = None) -> int:
    """The rate a response is sent at: `requested` if given, else 24 kHz for pcm and opus, else the voice's
    own. Raises ValueError naming the allowed rates."""
    if requested is None:
        return OPENAI_RATE if response_format in ("pcm", "opus") else voice_rate
    allowed = OPUS_RATES if response_format == "opus" else SAMPLE_RATES
    if requested not in allowed:
        raise ValueError(
            f"sample_rate {requested} is not available for {response_format}; "
            f"use one of {', '.join(map(str, allowed))}"
        )
    return requested


def pcm16(audio: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to signed 16-bit little-endian PCM, clipped."""
    return _int16(audio).tobytes()


def _int16(audio: np.ndarray) -> np.ndarray:
    # audio: [S] float32 -> [S] int16
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")


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


class Resampler:
    """A band-limited resampler fed chunk by chunk (soxr's HQ). Its output, joined, is what resampling the
    whole utterance at once gives (tests/test_encoding.py); it lags a few milliseconds, given back by
    `finish`."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
            if in_rate != out_rate
            else None
        )

    def push(self, audio: np.ndarray) -> np.ndarray:
        # audio: [S] float32 at in_rate -> [S'] float32 at out_rate
        if self._stream is None:
            return audio
        return self._stream.resample_chunk(np.ascontiguousarray(audio, dtype=np.float32), last=False)

    def finish(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


class _Sink:
    """Where the muxer writes. It has no `seek`, so ffmpeg streams: no header is rewritten at the end
    (FLAC's STREAMINFO keeps its 'unknown length', mp3 gets no Xing frame)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class Encoder:
    """One response's audio in one format: `push` float32 chunks at the voice's rate as they come, and
    send what each returns (possibly nothing yet); `finish` returns the rest. Call `close` if the response
    ends early."""

    def __init__(self, response_format: str, voice_rate: int, sample_rate: int | None = None) -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"unknown response_format '{response_format}'")
        self.format = response_format
        self.rate = output_rate(response_format, voice_rate, sample_rate)
        self.resampler = Resampler(voice_rate, self.rate)
        self.samples = 0
        """Samples encoded so far, at the output rate."""
        self._header = wav_header(self.rate) if response_format == "wav" else b""
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        if response_format in _CODECS:
            muxer, codec = _CODECS[response_format]
            self._container = av.open(
                self._sink, mode="w", format=muxer, options=_MUXER_OPTIONS.get(muxer, {})
            )
            options = _ENCODER_OPTIONS.get(response_format, {})
            self._stream = self._container.add_stream(codec, rate=self.rate, options=options)
            self._stream.layout = "mono"
            if response_format in BIT_RATES:
                self._stream.bit_rate = BIT_RATES[response_format]

    def push(self, audio: np.ndarray) -> bytes:
        """Encode one chunk [S] float32 at the voice's rate; the bytes ready to send."""
        return self._encode(self.resampler.push(audio))

    def finish(self) -> bytes:
        """The resampler's and the encoder's last samples, and the container's trailer."""
        out = self._encode(self.resampler.finish())
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            out += self._sink.take()
        return out

    def close(self) -> None:
        """Free the encoder of a response that ended early."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def _encode(self, audio: np.ndarray) -> bytes:
        samples = _int16(audio)  # [S] int16: one quantisation, so flac holds exactly what pcm sends
        head, self._header = self._header, b""
        if self._container is None:
            self.samples += len(samples)
            return head + samples.tobytes()
        if len(samples):
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")  # [1, S]
            frame.sample_rate = self.rate
            frame.pts = self.samples
            frame.time_base = Fraction(1, self.rate)
            self.samples += len(samples)
            self._container.mux(self._stream.encode(frame))
        return self._sink.take()


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_delta(audio: bytes) -> bytes:
    """OpenAI's `speech.audio.delta`: a piece of the response's audio, in its format, base64-encoded."""
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


def sse_done(input_tokens: int, output_tokens: int) -> bytes:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return sse_event({"type": "speech.audio.done", "usage": usage})
