"""The server's engine as an operator meets it, on a real process: admission by measured cost, a client
that leaves, and a shutdown that lets running streams finish."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

import tts_neuron
from tests.test_server import FASTSPEECH, children, metric, server, serving

LONG_TEXT = (
    "This sentence is the first of several. The engine paces it to its listener. "
    "A second request must wait for it. Then the queue is full, and a third is refused."
)
"""About eleven seconds of speech: long enough to hold the engine's one admitted stream."""


def stream_pcm(url: str, text: str, out: dict[str, object], started: threading.Event) -> None:
    """Read a pcm stream to its end, as a player would: note when the first bytes came."""
    body = {"model": "tts-1", "input": text, "voice": "fastspeech-en", "response_format": "pcm"}
    body["sample_rate"] = 22050  # the voice's own: the Python API's samples, one for one
    with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=60) as response:
        out["status"] = response.status_code
        data = bytearray()
        for piece in response.iter_raw():
            data += piece
            started.set()
        out["samples"] = len(data) // 2
    out["ended"] = time.monotonic()
    started.set()


def test_past_the_measured_budget_a_request_waits_and_then_the_queue_refuses() -> None:
    """A budget far below one stream's cost admits one stream at a time: the next waits in the queue
    until the first ends, and one more than the queue holds gets 503 at once."""
    with server("--addon", str(FASTSPEECH), "--budget", "0.001", "--max-queue", "1") as url:
        assert metric(url, 'tts_neuron_voice_cost{voice="fastspeech-en"}') > 0
        assert 0 < metric(url, "tts_neuron_budget") < 0.01
        first, second = {}, {}
        first_started, second_started = threading.Event(), threading.Event()
        readers = [
            threading.Thread(target=stream_pcm, args=(url, LONG_TEXT, first, first_started)),
            threading.Thread(target=stream_pcm, args=(url, "Then me.", second, second_started)),
        ]
        readers[0].start()
        assert first_started.wait(30)
        readers[1].start()
        deadline = time.monotonic() + 10
        while metric(url, "tts_neuron_streams_waiting") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = httpx.post(
            url + "/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "fastspeech-en"}
        )
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "server_busy"
        for reader in readers:
            reader.join(60)
        assert first["status"] == second["status"] == 200 and second["ended"] > first["ended"]  # type: ignore[operator]
        assert metric(url, "tts_neuron_rejected_total") >= 1


def test_a_client_that_leaves_frees_its_share_of_the_budget_at_once() -> None:
    with server("--addon", str(FASTSPEECH), "--budget", "0.001", "--max-queue", "0") as url:
        body = {"model": "tts-1", "input": LONG_TEXT, "voice": "fastspeech-en", "response_format": "pcm"}
        with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=60) as held:
            pieces = held.iter_raw()  # kept: a dropped iterator would close the response
            next(pieces)
            assert httpx.post(url + "/v1/audio/speech", json={**body, "input": "Hi."}).status_code == 503
        deadline = time.monotonic() + 5
        while metric(url, "tts_neuron_streams_running") > 0:
            assert time.monotonic() < deadline, "the stream of a client that left still runs"
            time.sleep(0.05)
        assert httpx.post(url + "/v1/audio/speech", json={**body, "input": "Hi."}).status_code == 200


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_lets_running_streams_finish_then_exits(processes: int) -> None:
    """A stream started before SIGTERM plays to its end (paced, about eleven seconds), no new connection
    is taken meanwhile, and the server exits soon after: threads and, with `--processes`, processes."""
    flags = ["--addon", str(FASTSPEECH), "--drain-timeout", "30", "--processes", str(processes)]
    with serving(*flags) as (process, url):
        spawned = children(process.pid)
        assert len(spawned) >= (processes if processes > 1 else 0)
        alone = len(tts_neuron.load(FASTSPEECH).synthesize(LONG_TEXT))
        out: dict[str, object] = {}
        started = threading.Event()
        reader = threading.Thread(target=stream_pcm, args=(url, LONG_TEXT, out, started))
        reader.start()
        assert started.wait(30)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # refused at once: no new connections once draining
            httpx.get(url + "/health", timeout=2)
        reader.join(60)
        assert out["status"] == 200
        assert out["samples"] == alone  # all of it, not cut at the signal
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained
        assert time.monotonic() - float(out["ended"]) < 10  # type: ignore[arg-type]
        deadline = time.monotonic() + 5  # multiprocessing's resource tracker leaves just after its parent
        while left := [pid for pid in spawned if Path(f"/proc/{pid}").exists()]:
            assert time.monotonic() < deadline, f"processes {left} outlived the server"
            time.sleep(0.1)
