"""The Wyoming server, spoken to by the `wyoming` package's own client over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from tests.test_server import FASTSPEECH, TACOTRON, expected_pcm, free_port, server

TIMEOUT = 60


@pytest.fixture(scope="module")
def wyoming_port() -> Iterator[int]:
    port = free_port()
    with server("--addon", str(FASTSPEECH), "--addon", str(TACOTRON), "--wyoming", f"tcp://127.0.0.1:{port}"):
        yield port


async def exchange(port: int, events: list, until: set[str]) -> list:  # type: ignore[type-arg]
    """Send the events, then read events until one of the types in `until` arrives."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event.event())
        received = []
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
            assert event is not None, "the server closed the connection"
            received.append(event)
            if event.type in until:
                return received


def audio_of(events: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


def test_describe_lists_the_voices_and_streaming(wyoming_port: int) -> None:
    (event,) = asyncio.run(exchange(wyoming_port, [Describe()], {"info"}))
    (program,) = Info.from_event(event).tts
    assert program.supports_synthesize_streaming
    assert [voice.name for voice in program.voices] == ["fastspeech-en", "tacotron-en"]


@pytest.mark.parametrize("addon", [FASTSPEECH, TACOTRON], ids=lambda a: a.name)
def test_synthesize_gives_start_chunks_stop_with_the_python_apis_audio(wyoming_port: int, addon) -> None:  # type: ignore[no-untyped-def]
    text = "Wyoming speaks this sentence."
    events = asyncio.run(
        exchange(wyoming_port, [Synthesize(text, SynthesizeVoice(addon.name))], {"audio-stop"})
    )
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (22050, 2, 1)
    got = np.frombuffer(audio_of(events), dtype="<i2").astype(int)
    want = expected_pcm(addon, text).astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_streamed_text_is_spoken_sentence_by_sentence(wyoming_port: int) -> None:
    """Text arrives in pieces that split words; each sentence is spoken once it is complete, before the
    stop, and the audio is that of speaking the sentences one by one."""
    pieces = ["The first sent", "ence is here. The sec", "ond one follows", " it. And a last"]
    events = [SynthesizeStart(SynthesizeVoice("fastspeech-en")), *(SynthesizeChunk(p) for p in pieces)]

    async def run() -> tuple[list, list]:  # type: ignore[type-arg]
        async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
            for event in events:
                await client.write_event(event.event())
            before_stop = []
            while len([e for e in before_stop if AudioStop.is_type(e.type)]) < 2:
                before_stop.append(await asyncio.wait_for(client.read_event(), TIMEOUT))
            await client.write_event(SynthesizeStop().event())
            after = []
            while not after or not SynthesizeStopped.is_type(after[-1].type):
                after.append(await asyncio.wait_for(client.read_event(), TIMEOUT))
            return before_stop, after

    before_stop, after = asyncio.run(run())
    sentences = ["The first sentence is here.", "The second one follows it.", "And a last"]
    spoken = [
        audio_of(before_stop[: [i for i, e in enumerate(before_stop) if AudioStop.is_type(e.type)][0] + 1])
    ]
    assert len(audio_of(before_stop)) > len(spoken[0]) > 0
    want = [expected_pcm(FASTSPEECH, s).astype(int) for s in sentences]
    got = np.frombuffer(audio_of(before_stop) + audio_of(after), dtype="<i2").astype(int)
    joined = np.concatenate(want)
    assert got.shape == joined.shape and np.abs(got - joined).max() <= 1
    assert [e.type for e in after][-2:] == ["audio-stop", "synthesize-stopped"]


@pytest.mark.parametrize(
    ("events", "code"),
    [
        ([Synthesize("Hello.", SynthesizeVoice("alloy"))], "voice_not_found"),
        ([Synthesize("🙂🙂🙂", SynthesizeVoice("fastspeech-en"))], "TextError"),
        ([Synthesize("word " * 1000, SynthesizeVoice("fastspeech-en"))], "input_too_long"),
    ],
)
def test_bad_input_is_an_error_event_and_the_connection_goes_on(
    wyoming_port: int, events: list, code: str
) -> None:  # type: ignore[type-arg]
    received = asyncio.run(exchange(wyoming_port, [*events, Describe()], {"info"}))
    errors = [Error.from_event(e) for e in received if Error.is_type(e.type)]
    assert [e.code for e in errors] == [code] and errors[0].text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_server_with_wyoming_exits_on_sigterm_and_sigint(sig: signal.Signals) -> None:
    """As a container or Home Assistant add-on stops it: a client connected to the Wyoming port, and one
    receiving speech over HTTP, do not keep the process alive past its drain timeout."""
    port, wyoming = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "tts_neuron.cli",
        "serve",
        "--addon",
        str(FASTSPEECH),
        "--port",
        str(port),
    ]
    command += ["--wyoming", f"tcp://127.0.0.1:{wyoming}", "--drain-timeout", "3"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        connected = socket.create_connection(("127.0.0.1", wyoming))
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/audio/speech",
            json={"model": "tts-1", "voice": "fastspeech-en", "input": "A long text. " * 200},
            timeout=30,
        ) as speaking:
            next(speaking.iter_raw())
            stopped = time.monotonic()
            process.send_signal(sig)
            process.wait(timeout=3 + 5)
        assert time.monotonic() - stopped < 3 + 5
        connected.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def ready(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url + "/ready", timeout=5).status_code == 200
    return False
