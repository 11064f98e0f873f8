"""Scale-out on Ray Serve: the same HTTP API in a CPU ingress, streaming from engine replicas that each
hold the voices and a device engine (one replica per NeuronCore on inf2).

    tts-neuron serve --ray --addon addons/fastspeech-en --replicas 2
    serve run serve_config.yaml          # the same application from Ray's own CLI

Engine replicas load and warm up their voices (and compiled buckets) in `__init__`, before Ray reports
them healthy. Each takes at most `max_streams` streams (`max_ongoing_requests`, the engine's stream
capacity, not Ray's default of 5); past that, Ray queues `max_queue` requests and then refuses, which the
ingress answers with 503 and `Retry-After`. On the `neuron` target a replica asks for `neuron_cores`, and
Ray sets `NEURON_RT_VISIBLE_CORES` for it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, cast

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from tts_neuron.engine import Schedule
from tts_neuron.server.app import SpeechOptions, create_app
from tts_neuron.server.engine import Busy, Engine, Limits, SpeechCall, TimedStream
from tts_neuron.server.metrics import Metrics


@serve.deployment(health_check_period_s=5, health_check_timeout_s=30)
class TtsEngine:
    """The voices of one replica, warmed up before it reports healthy. `schedule`, `workers` and `threads`
    are its device engine's, as `tts-neuron serve` gives them to its own."""

    def __init__(
        self, addons: list[str], stack: str | None, target: str | None, limits: Limits,
        schedule: Schedule | None = None, workers: int | None = None, threads: int = 1,
    ) -> None:  # fmt: skip
        self.engine = Engine(
            addons, stack, target, limits, schedule=schedule, workers=workers, threads=threads
        )
        if not self.engine.load():
            raise RuntimeError(f"the voices did not load: {self.engine.load_error}")

    def voice_info(self) -> dict[str, dict[str, Any]]:
        return self.engine.voice_info()

    def settings(self) -> dict[str, Any]:
        """What this replica's device engine runs with: its schedule, worker threads and torch threads."""
        device = self.engine.device
        return {"schedule": asdict(device.schedule), "workers": device.workers, "threads": device.threads}

    async def stream(
        self, call: SpeechCall
    ) -> AsyncIterator[np.ndarray | tuple[np.ndarray, list[dict[str, Any]]]]:
        """The chunks, or with `call.timestamps` each chunk with the words known by then."""
        async with self.engine.admit(call.voice):
            stream = self.engine.start(call)
            try:
                async for chunk in stream.chunks():  # taken as it leaves the replica: close to the client
                    yield (chunk, cast(TimedStream, stream).taken()) if call.timestamps else chunk
            finally:
                stream.cancel()

    def check_health(self) -> None:
        if not self.engine.is_ready():
            raise RuntimeError("not ready")


class RemoteStream:
    """A stream on an engine replica, read through Ray (with `timestamps`, its words come with its
    chunks and wait here for `taken`)."""

    def __init__(self, response: Any, timestamps: bool) -> None:
        self.response, self.timestamps = response, timestamps
        self.words: list[dict[str, Any]] = []

    def cancel(self) -> None:
        self.response.cancel()

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        try:
            async for item in self.response:
                if self.timestamps:
                    item, words = item
                    self.words += words
                yield item
        except BackPressureError:
            raise Busy("every engine replica is at its stream capacity and Ray's queue is full", 1) from None

    def taken(self) -> list[dict[str, Any]]:
        words, self.words = self.words, []
        return words


class RayBackend:
    """What the HTTP app needs of an engine, over a handle on the engine deployment. Admission is the
    replicas' own (and Ray's queue in front of them), so the ingress admits everything."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.metrics = limits, Metrics()
        self.engine: DeploymentHandle | None = None
        self.handle: DeploymentHandle | None = None
        """The engine deployment, and the same for streamed calls."""
        self.attached = threading.Event()
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._voices: dict[str, dict[str, Any]] = {}

    def attach(self, handle: DeploymentHandle) -> None:
        self.engine = handle
        self.handle = handle.options(stream=True)
        self.attached.set()

    def load(self) -> bool:
        """Ask an engine replica for its voices (from a thread: it waits for the ingress to be given its
        handle, which may come after the app has started, and for a replica to be up)."""
        try:
            if not self.attached.wait(timeout=600):
                raise TimeoutError("the ingress was never given its engine")
            assert self.engine is not None
            self._voices = self.engine.voice_info.remote().result(timeout_s=600)
        except Exception as err:  # noqa: BLE001 - reported on /ready
            self.load_error = f"{type(err).__name__}: {err}"
            return False
        self.ready.set()
        return True

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def voice_info(self) -> dict[str, dict[str, Any]]:
        return self._voices

    @asynccontextmanager
    async def admit(self, voice: str) -> AsyncIterator[float]:
        yield 0.0

    async def drain(self) -> None:
        """The replicas drain their own streams when Serve stops them."""

    def close(self) -> None:
        """The ingress holds no engine of its own."""

    def start(self, call: SpeechCall) -> RemoteStream:
        assert self.handle is not None
        return RemoteStream(self.handle.stream.remote(call), call.timestamps)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class TtsIngress:
    """The HTTP API of `tts-neuron serve`, built in the replica over a handle on the engines."""

    def __init__(
        self, engine: DeploymentHandle, limits: Limits, api_key: str | None, options: SpeechOptions
    ) -> None:
        self.backend, self.api_key, self.options = RayBackend(limits), api_key, options
        self.backend.attach(engine)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.backend, self.api_key, options=self.options)  # type: ignore[arg-type]


def build(
    addons: list[str],
    replicas: int = 1,
    stack: str | None = None,
    target: str | None = None,
    limits: Limits | None = None,
    neuron_cores: int = 0,
    engine_cpus: float = 1.0,
    api_key: str | None = None,
    capacity: int | None = None,
    options: SpeechOptions | None = None,
    schedule: Schedule | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> Any:
    """The application: a CPU ingress in front of `replicas` engine replicas (autoscaled between one and
    `replicas` by ongoing streams). `neuron_cores` per replica (default: 1 on the neuron target, none
    elsewhere) is a Ray resource, so placement follows it. `capacity`: streams a replica takes (Ray's
    `max_ongoing_requests`); by default measured here, by loading the voices once as a replica does (on a
    cluster whose replicas run on other hardware than the driver, give it). `schedule`, `workers` and
    `threads` go to every replica's device engine (and to the probe)."""
    limits = limits or Limits()
    if capacity is None:
        probe = Engine(addons, stack, target, limits, schedule=schedule, workers=workers, threads=threads)
        try:
            if not probe.load():
                raise RuntimeError(f"the voices did not load: {probe.load_error}")
            capacity = probe.capacity()
        finally:
            probe.close()
    cores = neuron_cores or (1 if target == "neuron" else 0)
    resources = {"num_cpus": engine_cpus, **({"resources": {"neuron_cores": cores}} if cores else {})}
    engine = TtsEngine.options(  # type: ignore[attr-defined]
        autoscaling_config={
            "min_replicas": 1,
            "initial_replicas": replicas,
            "max_replicas": replicas,
            "target_ongoing_requests": max(1, int(0.7 * capacity)),
        },
        ray_actor_options=resources,
        max_ongoing_requests=capacity,
        max_queued_requests=limits.max_queue,
    ).bind(addons, stack, target, limits, schedule, workers, threads)
    return TtsIngress.bind(engine, limits, api_key, options or SpeechOptions())  # type: ignore[attr-defined]


def app_builder(args: dict[str, Any]) -> Any:
    """For `serve run serve_config.yaml`: the config's `args` are `build`'s arguments, with `limits` and
    `schedule` as mappings of their fields (`schedule: {horizon: 1.5}`)."""
    args = dict(args)
    for key, settings in (("limits", Limits), ("schedule", Schedule)):
        if isinstance(args.get(key), dict):
            try:
                args[key] = settings(**args[key])
            except TypeError as err:
                raise ValueError(f"serve config args.{key}: {err}") from None
    return build(**args)


def serve_on_ray(
    addons: list[str],
    replicas: int,
    host: str,
    port: int,
    stack: str | None,
    target: str | None,
    limits: Limits,
    api_key: str | None,
    options: SpeechOptions | None = None,
    schedule: Schedule | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> None:
    """Start a local Ray instance and Serve on host:port, run the application, and block until
    interrupted (on a cluster, use `serve run` or a RayService instead)."""
    import signal
    import sys
    import time

    import ray

    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    # after ray.init, whose own SIGTERM handler exits with status 15 before Serve and Ray are shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve.start(http_options={"host": host, "port": port})
    app = build(
        addons, replicas, stack, target, limits, api_key=api_key, options=options, schedule=schedule,
        workers=workers, threads=threads,
    )  # fmt: skip
    serve.run(app, name="tts", blocking=False)
    try:
        while True:
            time.sleep(1)
    finally:
        serve.shutdown()
        ray.shutdown()
