"""`tts-neuron serve` as a real server process on 127.0.0.1, spoken to by real HTTP clients (httpx, and
OpenAI's own Python client)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

import tts_neuron
from tests.conftest import replace_parameters
from tts_neuron.addon import load_addon
from tts_neuron.blocks.base import Chunk, Features, StreamableBlock
from tts_neuron.errors import SynthesisError
from tts_neuron.server import Engine, create_app
from tts_neuron.server.encoding import pcm16

REPO = Path(__file__).resolve().parent.parent
FASTSPEECH, TACOTRON = REPO / "addons" / "fastspeech-en", REPO / "addons" / "tacotron-en"
TEXT = "Hello there. This is a streamed test of the speech server."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A `tts-neuron serve` process and its base URL, once `/ready` says 200 (or, without `wait_ready`,
    once it listens); interrupted, then killed if it lingers, at the end."""
    port = free_port()
    command = [sys.executable, "-m", "tts_neuron.cli", "serve", "--port", str(port), *args]
    process = subprocess.Popen(
        command, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else "server exited"
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(url + "/ready", timeout=5).status_code
                if status == 200 or not wait_ready:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def server(*args: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> Iterator[str]:
    """A `tts-neuron serve` process's base URL (see `serving`)."""
    with serving(*args, env=env, wait_ready=wait_ready) as (_, url):
        yield url


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with server("--addon", str(FASTSPEECH), "--addon", str(TACOTRON), "--max-chars", "600") as base:
        yield base


def speech(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/audio/speech", json={"model": "tts-1", **body}, timeout=60)


def expected_pcm(addon: Path, text: str, speed: float = 1.0) -> np.ndarray:
    """What the Python API gives for the same request, as the server's 16-bit samples."""
    audio = tts_neuron.load(addon).synthesize(text, speed=speed)
    return np.frombuffer(pcm16(audio), dtype="<i2")


def assert_same_pcm(body: bytes, want: np.ndarray) -> None:
    got = np.frombuffer(body, dtype="<i2")
    assert got.shape == want.shape
    # batched rows equal the stream alone within 1e-5, so a sample may round to the neighbouring step
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_health_readiness_models_voices_and_metrics(url: str) -> None:
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/ready").json()["voices"] == ["fastspeech-en", "tacotron-en"]
    models = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
    assert {"tts-1", "fastspeech-en", "tacotron-en"} <= set(models)
    voices = httpx.get(url + "/v1/audio/voices").json()
    assert [v["id"] for v in voices["data"]] == ["fastspeech-en", "tacotron-en"]
    assert [v["takes_speed"] for v in voices["data"]] == [True, False]
    metrics = httpx.get(url + "/metrics").text
    for name in ("time_to_first_audio_seconds", "batch_size", "streams_running", "underruns_total"):
        assert f"tts_neuron_{name}" in metrics


@pytest.mark.parametrize("addon", [FASTSPEECH, TACOTRON], ids=lambda a: a.name)
def test_streamed_pcm_equals_the_python_api(url: str, addon: Path) -> None:
    response = speech(url, input=TEXT, voice=addon.name, response_format="pcm", sample_rate=22050)
    assert response.status_code == 200 and response.headers["x-sample-rate"] == "22050"
    assert response.headers.get("transfer-encoding") == "chunked"
    assert_same_pcm(response.content, expected_pcm(addon, TEXT))


def test_wav_sse_and_speed(url: str) -> None:
    wav = speech(url, input=TEXT, voice="fastspeech-en", response_format="wav").content
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and wav[36:40] == b"data"
    assert_same_pcm(wav[44:], expected_pcm(FASTSPEECH, TEXT))

    sse = speech(url, input=TEXT, voice="fastspeech-en", stream_format="sse", response_format="wav")
    assert sse.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    done = events[-1]
    assert done["type"] == "speech.audio.done" and set(done["usage"]) == {
        "input_tokens",
        "output_tokens",
        "total_tokens",
    }
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio[:4] == b"RIFF"  # SSE carries the requested format's bytes
    assert_same_pcm(audio[44:], expected_pcm(FASTSPEECH, TEXT))

    fast = speech(
        url, input=TEXT, voice="fastspeech-en", speed=2.0, response_format="pcm", sample_rate=22050
    ).content
    assert_same_pcm(fast, expected_pcm(FASTSPEECH, TEXT, speed=2.0))
    assert len(fast) < 0.7 * len(wav)


def test_the_openai_client_streams_from_either_voice(url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    for voice in ("fastspeech-en", "tacotron-en"):
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice=voice, input="Short and sweet.", response_format="pcm"
        ) as response:
            body = b"".join(response.iter_bytes())
        assert len(body) > 22050  # more than half a second of 16-bit audio
    with pytest.raises(openai.BadRequestError, match="unknown voice 'nobody'; this server has fastspeech-en"):
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")


def error_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"voice": "fastspeech-en"}, 400, "input"),
        ({"input": "Hi.", "voice": "nobody"}, 400, "voice"),
        ({"input": "Hi.", "voice": {"name": "alloy"}}, 400, "voice"),
        ({"input": "Hi.", "voice": 7}, 400, "voice"),
        ({"input": "Hi.", "voice": "fastspeech-en", "model": "whisper-1"}, 400, "model"),
        ({"input": "Hi.", "voice": "fastspeech-en", "response_format": "ogg"}, 400, "response_format"),
        ({"input": "Hi.", "voice": "fastspeech-en", "sample_rate": 44099}, 400, "sample_rate"),
        (
            {"input": "Hi.", "voice": "fastspeech-en", "response_format": "opus", "sample_rate": 22050},
            400,
            "sample_rate",
        ),
        ({"input": "Hi.", "voice": "fastspeech-en", "instructions": 5}, 400, "instructions"),
        ({"input": "Hi.", "voice": "fastspeech-en", "speed": 10}, 400, "speed"),
        ({"input": "Hi.", "voice": "tacotron-en", "speed": 1.5}, 400, "speed"),
        ({"input": "Hi.", "voice": "fastspeech-en", "stream_format": "json"}, 400, "stream_format"),
        ({"input": 42, "voice": "fastspeech-en"}, 400, "input"),
        ({"input": "Hi.", "voice": "fastspeech-en", "colour": "blue"}, 400, "colour"),
        ({"input": "Hi.", "voice": "fastspeech-en", "noise_w": 0.5}, 400, "noise_w"),
        ({"input": "Hi.", "voice": "fastspeech-en", "seed": "7"}, 400, "seed"),
        ({"input": "   ", "voice": "fastspeech-en"}, 400, "input"),
        ({"input": "x" * 601, "voice": "fastspeech-en"}, 413, "input"),
    ],
)
def test_malformed_requests_get_openai_shaped_errors(
    url: str, body: dict[str, object], status: int, param: str
) -> None:
    response = httpx.post(url + "/v1/audio/speech", json={"model": "tts-1", **body}, timeout=30)
    assert error_of(response, status)["param"] == param


def test_bodies_that_are_not_requests(url: str) -> None:
    post = url + "/v1/audio/speech"
    error_of(httpx.post(post, content=b"{not json", timeout=10), 400)
    error_of(httpx.post(post, content=b"[1, 2]", timeout=10), 400)
    error_of(httpx.post(post, content=b"[" * 100_000, timeout=10), 413)
    error_of(httpx.get(post, timeout=10), 405)
    error_of(httpx.get(url + "/v1/nothing", timeout=10), 404)


def test_text_that_cannot_be_spoken_is_a_400_before_any_audio(url: str) -> None:
    error = error_of(speech(url, input="🙂🙂🙂", voice="fastspeech-en"), 400)
    assert error["param"] == "input"


@contextlib.contextmanager
def slow_reader(base: str, text: str) -> Iterator[socket.socket]:
    """A client that starts a speech request, reads its first bytes and then stops reading, with a small
    receive buffer, so that the server's stream is held by backpressure (4,000 characters are minutes
    of audio, more than the socket buffers between the two hold)."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"model": "tts-1", "input": text, "voice": "fastspeech-en"}).encode()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    client.connect((host, int(port)))
    head = f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    client.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        assert client.recv(64).startswith(b"HTTP/1.1 200")
        yield client
    finally:
        client.close()


def test_past_the_stream_limit_and_queue_a_request_gets_503_with_retry_after() -> None:
    with server("--addon", str(FASTSPEECH), "--max-streams", "1", "--max-queue", "0") as base:
        with slow_reader(base, " ".join([TEXT] * 68)):  # the only slot is taken
            busy = speech(base, input="Hi.", voice="fastspeech-en")
            assert error_of(busy, 503)["code"] == "server_busy" and busy.headers["retry-after"] == "1"
        # the client went away mid-stream: its slot is freed and the next request is served
        deadline = time.monotonic() + 10
        while (response := speech(base, input="Hi.", voice="fastspeech-en")).status_code == 503:
            assert time.monotonic() < deadline, "the disconnected stream kept its slot"
            time.sleep(0.1)
        assert response.status_code == 200 and len(response.content) > 0
        metrics = httpx.get(base + "/metrics").text
        assert 'tts_neuron_cancelled_total{reason="error_or_disconnect"} 1.0' in metrics
        assert 'tts_neuron_rejected_total{reason="queue_full"} 1.0' in metrics


def test_the_api_key_guards_all_but_health_readiness_and_the_page() -> None:
    with server("--addon", str(FASTSPEECH), env={"TTS_NEURON_API_KEY": "s3cret"}) as base:
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/ready").status_code == 200
        assert httpx.get(base + "/").status_code == 200  # the page is static; its requests need the key
        for path in ("/v1/models", "/v1/audio/voices", "/metrics"):
            response = httpx.get(base + path)
            assert error_of(response, 401)["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(base + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert httpx.get(base + "/v1/models", headers=right).status_code == 200
        response = httpx.post(
            base + "/v1/audio/speech",
            json={"model": "tts-1", "input": "Hi.", "voice": "fastspeech-en"},
            headers=right,
            timeout=30,
        )
        assert response.status_code == 200 and len(response.content) > 0


def test_readiness_waits_for_the_voices_and_a_bad_addon_is_refused_at_start(tmp_path: Path) -> None:
    with server("--addon", str(FASTSPEECH), wait_ready=False) as base:
        statuses = []
        deadline = time.monotonic() + 120
        while (status := httpx.get(base + "/ready").status_code) != 200:
            statuses.append(status)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert set(statuses) <= {503}
    result = subprocess.run(
        [sys.executable, "-m", "tts_neuron.cli", "serve", "--addon", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("tts-neuron: error: ") and "addon.json" in result.stderr


def test_processes_share_the_port_and_their_metrics_and_a_voice_that_fails_stops_them(tmp_path: Path) -> None:
    """`serve --processes 2`: `/ready` says 200 once both processes have loaded their voices; concurrent
    requests, whichever process answers, get the Python API's audio; `/metrics` sums the processes (their
    budgets, 1.5 workers' worth each); a process that dies is replaced and its budget leaves the sum; and a
    voice that no process can load stops the server with one line and a non-zero exit, not a supervisor
    restarting forever."""
    want = expected_pcm(FASTSPEECH, TEXT)
    flags = ["--addon", str(FASTSPEECH), "--processes", "2", "--workers", "1", "--budget", "1.5"]
    with serving(*flags, wait_ready=False) as (process, base), ThreadPoolExecutor(6) as pool:
        deadline = time.monotonic() + 120
        while (answer := httpx.get(base + "/ready", timeout=30)).status_code != 200:
            assert answer.json()["status"].startswith("loading"), answer.text
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric(base, "tts_neuron_budget") == 3.0  # ready means both processes are
        responses = list(
            pool.map(
                lambda _: speech(
                    base, input=TEXT, voice="fastspeech-en", response_format="pcm", sample_rate=22050
                ),
                range(6),
            )
        )
        for response in responses:
            assert response.status_code == 200
            assert_same_pcm(response.content, want)
        for _ in range(4):  # each scrape may reach either process; all say the same sums
            assert metric(base, 'tts_neuron_requests_total{status="200"}') == 6

        spawned = set(children(process.pid))
        killed = next(pid for pid in spawned if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(killed, signal.SIGKILL)  # a server process dies; the supervisor starts another
        deadline = time.monotonic() + 120
        while not (started := set(children(process.pid)) - spawned):
            assert time.monotonic() < deadline, "the dead process was not replaced"
            time.sleep(0.2)
        (replacement,) = started
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{replacement}/environ").read_bytes().split(b"\0")
            if item
        )
        ready = Path(environ[b"PROMETHEUS_MULTIPROC_DIR"].decode(), f"ready-{replacement}")
        while not ready.exists():
            assert time.monotonic() < deadline, "the new process did not load its voices"
            time.sleep(0.2)
        for _ in range(4):
            assert metric(base, "tts_neuron_budget") == 3.0  # the dead process's budget no longer counts
        assert metric(base, 'tts_neuron_requests_total{status="200"}') == 6  # counters keep the dead's part

    broken = tmp_path / "broken"
    shutil.copytree(FASTSPEECH, broken)
    replace_parameters(broken, "vocoder", b"not a safetensors file")  # its manifest passes; loading fails
    command = [
        sys.executable,
        "-m",
        "tts_neuron.cli",
        "serve",
        "--port",
        str(free_port()),
        "--processes",
        "2",
    ]
    result = subprocess.run([*command, "--addon", str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        f"tts-neuron: error: the voices did not load: {broken}/networks/vocoder.safetensors: corrupt or not a"
        " safetensors file: Error while deserializing header: header too large"
    ]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc/*/stat, which every Linux kernel has)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process may end while this reads
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def metric(url: str, name: str) -> float:
    """The first sample of the server's /metrics of that name (with its labels, if given)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


class FailsAfterFirstChunk(StreamableBlock):
    """Passes its first chunk on, then fails: a voice that breaks after its audio has started."""

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        assert upstream is not None
        yield next(upstream)
        raise SynthesisError("the test block failed after its first chunk")


@contextlib.contextmanager
def in_process_server(engine: Engine) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, for voices a test builds itself."""
    port = free_port()
    config = uvicorn.Config(create_app(engine, load=False), host="127.0.0.1", port=port, log_level="critical")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


def test_an_error_after_audio_has_started_ends_the_stream_visibly(tiny_addon_dir: Path) -> None:
    engine = Engine([])
    stack = [*load_addon(tiny_addon_dir).stacks["cpu"], {"type": "tests.test_server:FailsAfterFirstChunk"}]
    engine.voices.voices["broken"] = tts_neuron.load(tiny_addon_dir, stack=stack, runner=engine.device)
    engine.ready.set()
    with in_process_server(engine) as base:
        body = {"model": "tts-1", "input": TEXT, "voice": "broken"}
        sse = httpx.post(base + "/v1/audio/speech", json={**body, "stream_format": "sse"}, timeout=30)
        assert sse.status_code == 200
        events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "speech.audio.delta" and events[-1]["type"] == "error"
        assert "failed after its first chunk" in events[-1]["error"]["message"]
        with pytest.raises(httpx.RemoteProtocolError):  # the chunked body is cut short, not completed
            httpx.post(base + "/v1/audio/speech", json=body, timeout=30)
        metrics = httpx.get(base + "/metrics").text
        assert 'tts_neuron_cancelled_total{reason="error_or_disconnect"} 2.0' in metrics
