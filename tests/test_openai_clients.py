"""What clients written for OpenAI's speech API get from a real `tts-neuron serve` process: OpenAI's own
Python SDK with its documented default call, every format decoded by PyAV as a player would, 24 kHz pcm,
OpenAI's voice names, the discovery endpoints Open WebUI reads, and the per-request speech limit.
The exact requests other clients send (docs/serving.md#clients) are reproduced with httpx."""

from __future__ import annotations

import base64
import functools
import io
import json
import time
import wave
from collections.abc import Iterator

import av
import httpx
import numpy as np
import pytest
import soxr

import tts_neuron
from tests.test_server import FASTSPEECH, TACOTRON, error_of, server
from tts_neuron.server.encoding import pcm16
from tts_neuron.server.voices import OPENAI_VOICES

openai = pytest.importorskip("openai")

TEXT = "Hello there. This is a streamed test of the speech server."
LONG_TEXT = (
    "The committee met on a grey morning to decide whether the old bridge should be repaired. "
    "Engineers explained that the steel had corroded faster than anyone expected."
)
MAX_SPEECH_SECONDS = 12
PRIMING_SECONDS = 0.1
"""What mp3 and AAC add at the start and pad at the end (tests/test_encoding.py)."""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    args = ["--addon", str(FASTSPEECH), "--addon", str(TACOTRON), "--voice-alias", "ballad=tacotron-en"]
    with server(*args, "--max-speech-seconds", str(MAX_SPEECH_SECONDS)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> object:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def speech(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/audio/speech", json={"model": "tts-1", **body}, timeout=60)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Samples [S] float32 and their rate, as PyAV decodes a body."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(frames)
    return (samples / 32768.0 if samples.dtype == np.int16 else samples).astype(np.float32), rate


@functools.cache
def voice_audio(text: str) -> np.ndarray:
    """The Python API's audio of the same text, at the voice's rate."""
    return tts_neuron.load(FASTSPEECH).synthesize(text)


def same_pcm(body: bytes, want: np.ndarray) -> bool:
    """Equal 16-bit samples, within the one step by which a batched row may round differently."""
    got = np.frombuffer(body, dtype="<i2").astype(int)
    return got.shape == want.shape and np.abs(got - want.astype(int)).max() <= 1


def test_the_sdks_default_call_gives_mp3_of_the_wavs_duration(client: object, url: str) -> None:
    """`speech.create(model, voice="alloy", input)`, no format: OpenAI's default is mp3, saved as .mp3."""
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)  # type: ignore[attr-defined]
    assert response.response.headers["content-type"] == "audio/mpeg"
    assert response.content[:3] == b"ID3" or response.content[0] == 0xFF  # an mp3 stream, no Xing frame
    mp3, rate = decode(response.content)
    wav, wav_rate = decode(speech(url, input=TEXT, voice="alloy", response_format="wav").content)
    assert rate == wav_rate == 22050
    assert 0 <= len(mp3) / rate - len(wav) / wav_rate <= PRIMING_SECONDS


@pytest.mark.parametrize(
    ("response_format", "media_type", "rate"),
    [
        ("mp3", "audio/mpeg", 22050),
        ("opus", "audio/opus", 24000),
        ("aac", "audio/aac", 22050),
        ("flac", "audio/flac", 22050),
        ("wav", "audio/wav", 22050),
    ],
)
def test_every_format_decodes(client: object, response_format: str, media_type: str, rate: int) -> None:
    with client.audio.speech.with_streaming_response.create(  # type: ignore[attr-defined]
        model="tts-1", voice="fastspeech-en", input=TEXT, response_format=response_format
    ) as response:
        assert response.headers["content-type"] == media_type
        assert response.headers["x-sample-rate"] == str(rate)
        body = response.read()
    samples, decoded_rate = decode(body)
    seconds = len(voice_audio(TEXT)) / 22050
    assert seconds - 0.001 <= len(samples) / decoded_rate <= seconds + PRIMING_SECONDS  # 1 ms: rounding
    assert np.abs(samples).max() > 0.05  # speech, not silence


def test_pcm_is_24_khz_the_whole_utterance_resampled(url: str) -> None:
    response = speech(url, input=TEXT, voice="fastspeech-en", response_format="pcm")
    assert response.headers["content-type"] == "audio/pcm"
    assert (response.headers["x-sample-rate"], response.headers["x-bit-depth"]) == ("24000", "16")
    want = soxr.resample(voice_audio(TEXT), 22050, 24000, quality="HQ")
    assert same_pcm(response.content, np.frombuffer(pcm16(want), dtype="<i2"))


def test_flac_equals_pcm_sample_for_sample(url: str) -> None:
    for rate in (22050, 24000):
        body = {"input": "Short and sweet.", "voice": "fastspeech-en", "sample_rate": rate}
        flac, flac_rate = decode(speech(url, response_format="flac", **body).content)
        pcm = speech(url, response_format="pcm", **body).content
        assert flac_rate == rate
        assert np.round(flac * 32768).astype("<i2").tobytes() == pcm


def test_streamed_mp3_arrives_before_synthesis_ends(client: object) -> None:
    """The first mp3 bytes leave with the first audio chunk: long before the last, and well within the
    time the whole text takes to say."""
    arrivals = []
    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(  # type: ignore[attr-defined]
        model="tts-1", voice="alloy", input=LONG_TEXT
    ) as response:
        for piece in response.iter_bytes(1024):
            arrivals.append((time.monotonic() - started, len(piece)))
    first, last = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) > 10 and first < 0.5 * last


def test_sse_carries_the_requested_format_with_openais_events(url: str) -> None:
    response = speech(url, input=TEXT, voice="ash", stream_format="sse")  # no format: mp3, as OpenAI
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"} and len(events) > 2
    assert events[-1]["type"] == "speech.audio.done"
    assert set(events[-1]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    mp3 = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, rate = decode(mp3)
    seconds = len(voice_audio(TEXT)) / 22050
    assert rate == 22050 and seconds <= len(samples) / rate <= seconds + PRIMING_SECONDS


def test_openai_voice_names_aliases_and_voice_objects(url: str) -> None:
    fastspeech = speech(url, input="Hi.", voice="fastspeech-en", response_format="pcm").content
    tacotron = speech(url, input="Hi.", voice="tacotron-en", response_format="pcm").content
    for name in OPENAI_VOICES:
        body = speech(url, input="Hi.", voice=name, response_format="pcm").content
        assert body == (tacotron if name == "ballad" else fastspeech), (
            name
        )  # --voice-alias ballad=tacotron-en
    assert speech(url, input="Hi.", voice={"id": "tacotron-en"}, response_format="pcm").content == tacotron
    assert speech(url, input="Hi.", voice={"id": "coral"}, response_format="pcm").content == fastspeech
    error = error_of(speech(url, input="Hi.", voice="nobody"), 400)
    assert error["code"] == "voice_not_found" and "fastspeech-en, tacotron-en" in str(error["message"])


def test_instructions_are_accepted_and_ignored(url: str) -> None:
    plain = speech(url, input="Hi.", voice="alloy", response_format="pcm").content
    for instructions in ("Speak like a pirate.", None):
        body = speech(url, input="Hi.", voice="alloy", response_format="pcm", instructions=instructions)
        assert body.status_code == 200 and body.content == plain


def test_discovery_in_the_shapes_open_webui_reads(url: str) -> None:
    voices = httpx.get(url + "/v1/audio/voices").json()["voices"]
    assert [v["id"] for v in voices[:2]] == ["fastspeech-en", "tacotron-en"]
    assert all(set(v) >= {"id", "name"} for v in voices)
    aliases = {v["id"]: v["alias_of"] for v in voices[2:]}
    assert set(aliases) == set(OPENAI_VOICES) and aliases["ballad"] == "tacotron-en"
    assert aliases["alloy"] == "fastspeech-en"
    models = httpx.get(url + "/v1/audio/models").json()["models"]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= {m["id"] for m in models}


def test_speech_past_the_limit_is_refused_up_front(url: str) -> None:
    """An input whose letters alone pass the limit is a 400 before any audio, as is one that only a slow
    speed takes past it."""
    error = error_of(speech(url, input=LONG_TEXT * 2, voice="alloy"), 400)
    assert error["code"] == "speech_too_long" and "the limit is 0.2 minutes" in str(error["message"])
    error = error_of(speech(url, input=LONG_TEXT, voice="alloy", speed=0.5), 400)
    assert error["code"] == "speech_too_long"


@pytest.mark.slow
def test_speech_past_the_limit_is_cut_where_it_passes(url: str) -> None:
    """One the estimate cannot see (spaced digits, each a word) is cut where it passes, visibly (about
    ten seconds: the stream is paced to its listener)."""
    response = speech(url, input="7 " * 40, voice="alloy", response_format="pcm", stream_format="sse")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and "passed the limit" in events[-1]["error"]["message"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert 0 < len(pcm) / 2 / 24000 <= MAX_SPEECH_SECONDS


def test_the_openapi_schema_describes_the_speech_endpoint(url: str) -> None:
    """`/openapi.json` (and the `/docs` page over it) say what the endpoint takes, as FastAPI peers do."""
    jsonschema = pytest.importorskip("jsonschema")
    document = httpx.get(url + "/openapi.json").json()
    operation = document["paths"]["/v1/audio/speech"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    for body in (
        {"model": "tts-1", "voice": "alloy", "input": "Hi."},
        {
            "model": "tts-1",
            "voice": {"id": "ash"},
            "input": "Hi.",
            "response_format": "opus",
            "sample_rate": 48000,
        },
        {
            "model": "gpt-4o-mini-tts",
            "voice": "ash",
            "input": "Hi.",
            "instructions": None,
            "stream_format": "sse",
        },
    ):
        jsonschema.validate(body, schema)
        assert speech(url, **body).status_code == 200
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "ogg"}, schema
        )
    assert {"audio/mpeg", "audio/pcm", "text/event-stream"} <= set(operation["responses"]["200"]["content"])
    assert httpx.get(url + "/docs").status_code == 200


CLIENT_REQUESTS = {
    "open-webui": ({"model": "tts-1", "voice": "alloy"}, "audio/mpeg"),
    "librechat": ({"model": "tts-1", "voice": "alloy"}, "audio/mpeg"),
    "sillytavern": ({"model": "tts-1", "voice": "alloy", "response_format": "mp3", "speed": 1}, "audio/mpeg"),
    "ha-openai-tts": (
        {
            "model": "tts-1",
            "voice": "shimmer",
            "response_format": "mp3",
            "speed": 1.0,
            "instructions": "Calm.",
        },
        "audio/mpeg",
    ),
    "pipecat": ({"model": "gpt-4o-mini-tts", "voice": "alloy", "response_format": "pcm"}, "audio/pcm"),
    "agents-sdk": (
        {"model": "gpt-4o-mini-tts", "voice": "ash", "response_format": "pcm", "instructions": None},
        "audio/pcm",
    ),
    "livekit": (
        {"model": "gpt-4o-mini-tts", "voice": "ash", "response_format": "mp3", "stream_format": "sse"},
        "text/event-stream",
    ),
    "wyoming-openai": ({"model": "tts-1", "voice": "alloy", "response_format": "wav"}, "audio/wav"),
}
"""What each client sends (docs/serving.md#clients), with the input left out, and the type it must get."""


@pytest.mark.parametrize("client_name", list(CLIENT_REQUESTS))
def test_each_clients_exact_request(url: str, client_name: str) -> None:
    body, media_type = CLIENT_REQUESTS[client_name]
    with httpx.stream("POST", url + "/v1/audio/speech", json={"input": TEXT, **body}, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
        pieces = list(response.iter_raw())
    data = b"".join(pieces)
    seconds = len(voice_audio(TEXT)) / 22050
    if media_type == "audio/pcm":  # played at 24 kHz whatever the headers say
        assert len(data) / 2 / 24000 == pytest.approx(seconds, abs=0.001)
        return
    if media_type == "text/event-stream":  # LiveKit decodes the deltas by the requested format
        events = [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]
        data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    if client_name == "wyoming-openai":  # it reads the rate from the first chunk with Python's wave module
        with wave.open(io.BytesIO(pieces[0])) as first:
            assert (first.getframerate(), first.getnchannels(), first.getsampwidth()) == (22050, 1, 2)
    samples, rate = decode(data)
    assert seconds - 0.001 <= len(samples) / rate <= seconds + PRIMING_SECONDS


def captioned(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/dev/captioned_speech", json={"model": "tts-1", **body}, timeout=60)


def test_captioned_speech_streams_audio_with_word_timestamps(url: str) -> None:
    """Kokoro-FastAPI's convention: JSON objects, one a line, each with base64 audio of the requested
    format and the timestamps of the words it starts; the words are the Python API's."""
    response = captioned(url, input=TEXT, voice="alloy", response_format="pcm", sample_rate=22050)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) > 1 and {line["audio_format"] for line in lines} == {"audio/pcm"}
    pcm = b"".join(base64.b64decode(line["audio"]) for line in lines)
    assert same_pcm(pcm, np.frombuffer(pcm16(voice_audio(TEXT)), dtype="<i2"))
    words = [w for line in lines for w in line["timestamps"]]
    want = [w for _, sentence in tts_neuron.load(FASTSPEECH).timed_stream(TEXT) for w in sentence]
    assert [(w["word"], w["start_time"], w["end_time"]) for w in words] == [
        (w.word, w.start, w.end) for w in want
    ]
    assert words[-1]["end_time"] <= len(pcm) / 2 / 22050 + 1e-9

    whole = captioned(url, input=TEXT, voice="alloy", stream=False)  # one object, mp3 by default
    (line,) = [json.loads(text) for text in whole.text.splitlines()]
    assert line["audio_format"] == "audio/mpeg" and line["timestamps"] == words
    samples, rate = decode(base64.b64decode(line["audio"]))
    assert len(samples) / rate >= words[-1]["end_time"]


def test_captioned_speech_of_the_attention_voice_follows_its_alignment(url: str) -> None:
    text = "Hello there. Where does the old road go?"
    response = captioned(url, input=text, voice="tacotron-en", response_format="pcm", sample_rate=22050)
    assert response.status_code == 200
    words = [w for line in response.text.splitlines() for w in json.loads(line)["timestamps"]]
    want = [w for _, given in tts_neuron.load(TACOTRON).timed_stream(text) for w in given]
    assert [(w["word"], w["start_time"], w["end_time"]) for w in words] == [
        (w.word, w.start, w.end) for w in want
    ]
    assert [w["word"] for w in words] == ["Hello", "there", "Where", "does", "the", "old", "road", "go"]
