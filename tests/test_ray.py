"""The Ray Serve application on a real local Ray instance: two engine replicas placed by a logical
`neuron_cores` resource (these 2 cores declare two), an ingress speaking the same HTTP API.

About a minute: Ray starts (about 10 s), the replicas load and warm up, one is killed and replaced."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.test_server import FASTSPEECH, TEXT, expected_pcm, free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

import tts_neuron  # noqa: E402
from tts_neuron.engine import Schedule  # noqa: E402
from tts_neuron.server.app import SpeechOptions  # noqa: E402
from tts_neuron.server.ray_app import app_builder, build  # noqa: E402

MAX_SPEECH_SECONDS = 200.0  # above the long stream below (about 180 s), under the refused one (215 s)
SCHEDULE = Schedule(horizon=1.5, fill=2, idle_timeout=20.0)  # not the defaults: they must reach the replicas


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Serve kills a proxy not ready within 5 s; on 2 cores beside the other test worker it can take longer.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    ray.init(num_cpus=2, resources={"neuron_cores": 2}, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = SpeechOptions({"narrator": "fastspeech-en"}, None, MAX_SPEECH_SECONDS)
        app = build(
            [str(FASTSPEECH)], replicas=2, neuron_cores=1, engine_cpus=0.5, options=options,
            schedule=SCHEDULE, workers=1,
        )  # fmt: skip
        serve.run(app, name="tts")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/ready", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the Ray application did not become ready"
            time.sleep(0.5)
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


def engine_replicas() -> list[str]:
    """The names of the engine's replica actors (in Serve's namespace)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in named if a["namespace"] == "serve" and "TtsEngine" in a["name"]]


def test_two_replicas_take_the_two_declared_neuron_cores(url: str) -> None:
    assert len(engine_replicas()) == 2
    assert ray.available_resources().get("neuron_cores", 0) == 0  # each replica holds one


def test_the_replicas_engines_take_the_schedule_and_threads_they_were_given(url: str) -> None:
    handle = serve.get_deployment_handle("TtsEngine", app_name="tts")
    for _ in range(8):  # calls spread over the two replicas
        settings = handle.settings.remote().result(timeout_s=30)
        assert settings["schedule"] == dataclasses.asdict(SCHEDULE)
        assert (settings["workers"], settings["threads"]) == (1, 1)


def test_a_serve_configs_limits_and_schedule_mappings_become_their_settings() -> None:
    with pytest.raises(ValueError, match="args.schedule.*horizn"):
        app_builder({"addons": [str(FASTSPEECH)], "schedule": {"horizn": 1.0}, "capacity": 4})
    with pytest.raises(ValueError, match="horizon > 0"):
        app_builder({"addons": [str(FASTSPEECH)], "schedule": {"horizon": -1}, "capacity": 4})


def test_streamed_audio_equals_the_single_process_servers(url: str) -> None:
    response = httpx.post(
        url + "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": TEXT,
            "voice": "fastspeech-en",
            "response_format": "pcm",
            "sample_rate": 22050,
        },
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["x-sample-rate"] == "22050"
    got = np.frombuffer(response.content, dtype="<i2").astype(int)
    want = expected_pcm(FASTSPEECH, TEXT).astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_an_unknown_voice_gets_the_plain_servers_400(url: str) -> None:
    response = httpx.post(
        url + "/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "nobody"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(
        "unknown voice 'nobody'; this server has fastspeech-en and the aliases"
    )
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "voice",
        "voice_not_found",
    )


def test_the_ingress_takes_the_servers_voice_aliases_speech_limit_and_call_settings(url: str) -> None:
    def speech(**body: object) -> httpx.Response:
        body = {"model": "tts-1", "response_format": "pcm", "sample_rate": 22050, **body}
        return httpx.post(url + "/v1/audio/speech", json=body, timeout=60)

    assert speech(input=TEXT, voice="narrator").content == speech(input=TEXT, voice="fastspeech-en").content
    refused = speech(input="This sentence is spoken again and again. " * 99, voice="narrator")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "speech_too_long"
    # a call's settings cross to the replica (this voice draws no noise: a seed changes nothing)
    seeded = speech(input=TEXT, voice="fastspeech-en", seed=7)
    assert seeded.status_code == 200 and seeded.content == speech(input=TEXT, voice="narrator").content
    refused = speech(input=TEXT, voice="fastspeech-en", noise_w=0.5)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "noise_w"


def test_captioned_speech_through_ray_gives_the_python_apis_words(url: str) -> None:
    body = {"model": "tts-1", "input": TEXT, "voice": "fastspeech-en", "response_format": "pcm"}
    response = httpx.post(url + "/dev/captioned_speech", json=body, timeout=60)
    assert response.status_code == 200
    words = [w for line in response.text.splitlines() for w in json.loads(line)["timestamps"]]
    want = [w for _, given in tts_neuron.load(FASTSPEECH).timed_stream(TEXT) for w in given]
    assert [(w["word"], w["start_time"], w["end_time"]) for w in words] == [
        (w.word, w.start, w.end) for w in want
    ]


@pytest.mark.slow
def test_a_replica_killed_mid_stream_gives_its_client_an_error_and_ray_replaces_it(url: str) -> None:
    """A long SSE stream is running; replicas are killed one at a time until the one serving it dies:
    its client gets an `error` event within seconds (never a hang), and once Ray has replaced the dead
    replicas, requests succeed again."""
    body = {
        "model": "tts-1",
        "input": " ".join([TEXT] * 60),
        "voice": "fastspeech-en",
        "stream_format": "sse",
    }
    events: list[dict[str, object]] = []
    killed = 0
    with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        events.append(json.loads(next(line for line in lines if line.startswith("data: "))[6:]))
        for name in engine_replicas():
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            killed += 1
            started = time.monotonic()
            for line in lines:  # the stream either errors now or goes on (another replica serves it)
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if events[-1]["type"] == "error" or time.monotonic() - started > 5:
                    break
            if events[-1]["type"] == "error":
                assert time.monotonic() - started < 10
                break
    assert events[-1]["type"] == "error", "the killed replica's client got no error"
    deadline = time.monotonic() + 120
    while True:
        response = httpx.post(url + "/v1/audio/speech", json={**body, "input": "Back again."}, timeout=60)
        if response.status_code == 200 and '"speech.audio.done"' in response.text:
            break
        assert time.monotonic() < deadline, f"no replica served again after {killed} were killed"
        time.sleep(1)
    audio = b"".join(
        base64.b64decode(json.loads(line[6:])["audio"])
        for line in response.text.splitlines()
        if line.startswith("data: ") and '"speech.audio.delta"' in line
    )
    assert len(audio) > 0
