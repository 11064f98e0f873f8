"""The web page at `/` in a real headless browser (Debian's chromium driven by playwright) against a real
`tts-neuron serve` process: it lists the voices, streams and schedules the audio the server sends, shows the
server's error messages, and Stop cancels the stream on the server. `make browser` installs both."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.test_server import FASTSPEECH, TACOTRON, server

pytestmark = pytest.mark.slow

MAX_CHARS = 2000
TEXT = "Hello from the browser. Every chunk is scheduled right after the one before it."
WAIT_MS = 60_000  # every wait in the page is bounded

# Records every piece the page schedules (when it starts, how long it lasts, its samples), so that the test
# checks what would actually be played.
RECORD_SCHEDULE = """
window.scheduled = [];
const start = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (when, ...rest) {
  const samples = Array.from(this.buffer.getChannelData(0));
  window.scheduled.push({when, duration: this.buffer.duration, samples});
  return start.call(this, when, ...rest);
};
"""


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    args = ("--addon", str(FASTSPEECH), "--addon", str(TACOTRON), "--max-chars", str(MAX_CHARS))
    with server(*args) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: run `make browser`")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: run `make browser`")
    with sync_playwright() as playwright:
        # playwright's own browser download is not reachable here, so it drives the system's chromium
        launched = playwright.chromium.launch(
            executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.add_init_script(RECORD_SCHEDULE)
    page.goto(url)
    page.wait_for_function("document.querySelector('#voice').length > 0")
    yield page
    context.close()


def speak(page: Any, text: str) -> dict[str, Any]:
    page.fill("#text", text)
    page.click("#speak")
    page.wait_for_function("ttsStats.done || ttsStats.error !== null")
    return dict(page.evaluate("ttsStats"))


def plain_pcm(url: str, **body: object) -> httpx.Response:
    """The same request from a plain HTTP client."""
    return httpx.post(
        url + "/v1/audio/speech",
        json={"model": "tts-1", "response_format": "pcm", **body},
        timeout=WAIT_MS / 1000,
    )


def cancelled(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^tts_neuron_cancelled_total\{[^}]*\} (\S+)$", metrics, re.M))


@pytest.mark.parametrize(("voice", "speed"), [("fastspeech-en", 1.25), ("tacotron-en", 1.0)])
def test_the_page_plays_what_the_server_streams(
    page: Any, url: str, tmp_path: Path, voice: str, speed: float
) -> None:
    page.select_option("#voice", voice)
    listed = {v["id"]: v for v in httpx.get(url + "/v1/audio/voices").json()["data"]}
    assert page.is_disabled("#speed") != listed[voice]["takes_speed"]
    if speed != 1.0:
        page.fill("#speed", str(speed))

    stats = speak(page, TEXT)
    assert stats["error"] is None and stats["done"] and stats["chunks"] >= 1
    assert stats["firstAudioMs"] is not None

    want = plain_pcm(url, input=TEXT, voice=voice, speed=speed)
    assert want.status_code == 200
    assert stats["bytes"] == len(want.content)
    scheduled = page.evaluate("window.scheduled")
    played = np.concatenate([np.asarray(piece["samples"], dtype=np.float32) for piece in scheduled])
    np.testing.assert_array_equal(played, np.frombuffer(want.content, dtype="<i2") / np.float32(32768))

    # back to back: each piece starts where the one before ends, unless the page counted an underrun
    gaps = 0
    for before, piece in zip(scheduled, scheduled[1:], strict=False):
        end = before["when"] + before["duration"]
        assert piece["when"] >= end - 1e-9
        gaps += piece["when"] > end + 1e-9
    assert gaps == stats["underruns"]
    assert page.text_content("#status").startswith("Done:")

    page.screenshot(path=str(tmp_path / f"page-{voice}.png"))  # left for a look when this test fails


def test_the_page_shows_the_servers_error(page: Any, url: str) -> None:
    text = "x" * (MAX_CHARS + 1)
    stats = speak(page, text)
    message = plain_pcm(url, input=text, voice=page.input_value("#voice")).json()["error"]["message"]
    assert str(MAX_CHARS) in message
    assert stats["error"] == message and not stats["done"] and stats["chunks"] == 0
    assert page.text_content("#status") == message
    assert "error" in (page.get_attribute("#status", "class") or "")


def test_stop_cancels_the_stream_on_the_server(page: Any, url: str) -> None:
    before = cancelled(url)
    page.fill("#text", (TEXT + " ") * 18)  # minutes of audio: still being made when Stop is clicked
    page.click("#speak")
    page.wait_for_function("ttsStats.chunks >= 1")
    page.click("#stop")
    assert page.text_content("#status") == "Stopped."
    stats = page.evaluate("ttsStats")
    assert not stats["done"] and stats["error"] is None
    deadline = time.monotonic() + WAIT_MS / 1000
    while cancelled(url) == before:
        assert time.monotonic() < deadline, "the server did not cancel the stream"
        time.sleep(0.1)


def test_samples_split_across_reads_decode_whole(page: Any) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 12345, -2], dtype="<i2")
    raw = list(samples.tobytes())
    reads = [raw[:3], raw[3:4], [], raw[4:9], raw[9:]]  # odd-sized reads end inside a sample
    decoded = page.evaluate(
        "(reads) => { const decode = pcmDecoder(); "
        "return reads.flatMap((r) => Array.from(decode(new Uint8Array(r)))); }",
        reads,
    )
    np.testing.assert_array_equal(np.asarray(decoded, dtype=np.float32), samples / np.float32(32768))


def test_chromium_plays_the_default_format_to_its_end(page: Any, url: str) -> None:
    """What OpenAI's clients get when they ask for no format (mp3) plays in Chromium's own <audio>: the
    page's origin fetches it as they do, and the element plays it to the end, as long as the WAV."""
    played = page.evaluate(
        """async (text) => {
          const response = await fetch("/v1/audio/speech", {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({model: "tts-1", voice: "alloy", input: text})});
          const type = response.headers.get("content-type");
          const audio = new Audio(URL.createObjectURL(await response.blob()));
          const ended = new Promise((resolve, reject) => {
            audio.onended = resolve;
            audio.onerror = () => reject(new Error(audio.error.message));
          });
          await audio.play();
          await ended;
          return {type, duration: audio.duration, played: audio.played.end(audio.played.length - 1)};
        }""",
        TEXT,
    )
    wav = httpx.post(
        url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "wav"},
        timeout=WAIT_MS / 1000,
    )
    seconds = (len(wav.content) - 44) / 2 / int(wav.headers["x-sample-rate"])
    assert played["type"] == "audio/mpeg"
    assert seconds - 0.01 <= played["duration"] <= seconds + 0.1  # mp3 adds its encoder's priming
    assert played["played"] == pytest.approx(played["duration"], abs=0.05)
