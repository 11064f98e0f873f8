"""The server's output stage on its own: each format encoded chunk by chunk decodes (with PyAV, as a client
would) to the audio that went in, and the streamed resampler equals resampling the whole utterance."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soxr

from tts_neuron.server.encoding import (
    MEDIA_TYPES,
    OPUS_RATES,
    RESPONSE_FORMATS,
    Encoder,
    Resampler,
    output_rate,
    pcm16,
)

RATE = 22050
CHUNKS = (3000, 1, 700, 11025, 0, 5000)
"""Uneven chunk sizes, an empty one and a single sample among them, as a voice's stream may give."""

PRIMING_SECONDS = 0.1
"""What a lossy codec adds at the start and pads at the end, which a decoder without gapless metadata
plays: mp3 about 64 ms and AAC about 90 ms at 22,050 Hz, Opus none (its pre-skip is in the Ogg header)."""


def speechlike(seconds: float, rate: int = RATE) -> np.ndarray:
    """A deterministic test signal with speech's range: a gliding tone under an envelope, plus noise."""
    t = np.arange(round(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (150 + 200 * t) * t) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.02
    return (0.5 * tone + noise).astype(np.float32)


def in_chunks(audio: np.ndarray) -> list[np.ndarray]:
    parts, start, i = [], 0, 0
    while start < len(audio):
        size = CHUNKS[i % len(CHUNKS)]
        parts.append(audio[start : start + size])
        start, i = start + size, i + 1
    return parts


def encode(
    response_format: str, audio: np.ndarray, sample_rate: int | None = None
) -> tuple[list[bytes], int]:
    encoder = Encoder(response_format, RATE, sample_rate)
    pieces = [encoder.push(chunk) for chunk in in_chunks(audio)]
    pieces.append(encoder.finish())
    return pieces, encoder.rate


def decode(data: bytes) -> tuple[np.ndarray, int, str]:
    """Samples [S] float32, their rate, and the codec's name, as PyAV decodes a response body."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate, codec = stream.codec_context.sample_rate, stream.codec_context.name
    samples = np.concatenate(frames)
    if samples.dtype == np.int16:  # the FLAC and WAV decoders give 16-bit integers, the lossy ones floats
        return samples.astype(np.float32) / 32768.0, rate, codec
    return samples.astype(np.float32), rate, codec


@pytest.mark.parametrize("response_format", [f for f in RESPONSE_FORMATS if f != "pcm"])
def test_every_format_decodes_to_the_audio_that_went_in(response_format: str) -> None:
    audio = speechlike(2.0)
    pieces, rate = encode(response_format, audio)
    samples, decoded_rate, codec = decode(b"".join(pieces))
    seconds = len(samples) / decoded_rate
    assert 2.0 <= seconds <= 2.0 + PRIMING_SECONDS
    assert {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}[
        response_format
    ] in codec
    if response_format in ("flac", "wav"):  # lossless: exactly the 16-bit samples pcm would send
        assert decoded_rate == RATE
        assert np.array_equal(np.round(samples * 32768).astype("<i2").tobytes(), pcm16(audio))
    assert sum(map(len, pieces[:3])) > 0, "the first chunks gave no bytes: the format is not streamed"


def test_lossy_formats_keep_the_signal() -> None:
    """The decoded lossy audio, aligned past the priming, correlates with what went in."""
    audio = speechlike(2.0)
    for response_format in ("mp3", "aac", "opus"):
        samples, rate, _ = decode(b"".join(encode(response_format, audio)[0]))
        reference = soxr.resample(audio, RATE, rate) if rate != RATE else audio
        lags = range(0, round(PRIMING_SECONDS * rate))
        best = max(
            np.corrcoef(samples[lag : lag + len(reference) // 2], reference[: len(reference) // 2])[0, 1]
            for lag in lags
        )
        assert best > 0.95, response_format


def test_opus_and_pcm_default_to_24_khz_the_others_keep_the_voices_rate() -> None:
    assert output_rate("pcm", RATE) == output_rate("opus", RATE) == 24000
    assert {output_rate(f, RATE) for f in ("mp3", "aac", "flac", "wav")} == {RATE}
    assert output_rate("pcm", RATE, 22050) == 22050 and output_rate("opus", RATE, 48000) == 48000
    for response_format, rate in (("opus", 22050), ("pcm", 44099), ("mp3", 96000)):
        with pytest.raises(ValueError, match=f"sample_rate {rate} is not available for {response_format}"):
            output_rate(response_format, RATE, rate)
    assert set(OPUS_RATES) == {8000, 12000, 16000, 24000, 48000}
    _, rate, _ = decode(b"".join(encode("opus", speechlike(0.5), 48000)[0]))
    assert rate == 48000


def test_pcm_is_headerless_16_bit_and_wav_streams_with_unknown_sizes() -> None:
    audio = speechlike(0.5)
    pcm, rate = encode("pcm", audio, RATE)
    assert rate == RATE and b"".join(pcm) == pcm16(audio)
    wav, _ = encode("wav", audio)
    assert (
        wav[0][:4] == b"RIFF" and wav[0][4:8] == b"\xff\xff\xff\xff" and wav[0][40:44] == b"\xff\xff\xff\xff"
    )
    assert b"".join(wav)[44:] == pcm16(audio)
    assert MEDIA_TYPES == {
        "mp3": "audio/mpeg",
        "opus": "audio/opus",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }


@pytest.mark.parametrize("out_rate", [24000, 48000, 16000, 22050])
def test_the_streamed_resampler_equals_resampling_the_whole_utterance(out_rate: int) -> None:
    """Within 1e-6 (float32 rounding; in practice soxr's stream is bit-identical), whatever the chunks."""
    audio = speechlike(3.0)
    resampler = Resampler(RATE, out_rate)
    streamed = np.concatenate([resampler.push(chunk) for chunk in in_chunks(audio)] + [resampler.finish()])
    whole = soxr.resample(audio, RATE, out_rate, quality="HQ") if out_rate != RATE else audio
    assert streamed.shape == whole.shape == (round(len(audio) * out_rate / RATE),)
    assert np.abs(streamed - whole).max() <= 1e-6


def test_the_resampler_is_band_limited() -> None:
    """A tone above the output's Nyquist frequency is removed, not folded back as an alias."""
    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 10_000 * t)).astype(np.float32)
    resampler = Resampler(RATE, 16000)
    out = np.concatenate([resampler.push(tone[:5000]), resampler.push(tone[5000:]), resampler.finish()])
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 1e-3


def test_an_encoder_closed_early_frees_itself() -> None:
    for response_format in RESPONSE_FORMATS:
        encoder = Encoder(response_format, RATE)
        encoder.push(speechlike(0.1))
        encoder.close()
        encoder.close()
