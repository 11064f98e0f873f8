"""The voices of a server, the device engine that runs their streams, and admission by measured cost.

Every stream runs in one `tts_neuron.engine.Engine` (deadline first, paced, batched); this module loads
the voices on it, measures what each costs per second of audio on this host, and admits a request only
while the streams running fit the engine's budget: past it, a request waits in a bounded queue, then gets
503 with Retry-After, instead of dragging every running stream into underrun.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tts_neuron.engine import Engine as DeviceEngine
from tts_neuron.engine import Schedule
from tts_neuron.errors import StackError, TTSNeuronError
from tts_neuron.server.captions import CaptionedStream, CaptionedVoice
from tts_neuron.server.metrics import Metrics
from tts_neuron.timestamps import check_timed
from tts_neuron.voice import Voice, VoiceSet

WARM_UP_TEXT = "Ready when you are."
COST_TEXT = (
    "The quick brown fox jumps over the lazy dog. How vexingly quick daft zebras jump! "
    "Would you, could you, on a boat?"
)
"""Spoken alone at warm-up to measure what a voice costs per second of audio (about 6 s of speech)."""
COST_RUNS = 3
"""Timed runs of COST_TEXT; their median is the voice's cost."""


class Busy(Exception):
    """Every stream slot is taken and the queue is full, or the wait for a slot timed out."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Limits:
    max_streams: int = 256
    """Streams synthesised at once, whatever the budget; more wait in the queue."""
    budget: float = 1.0
    """The share of the engine's worker time that the admitted streams may need, each counted at its
    voice's cost measured alone at warm-up (worker seconds per second of audio); batching makes many
    streams cost less than the sum of their costs alone, so a budget above 1 counts on it."""
    max_queue: int = 64
    """Requests that may wait for a slot; past that, 503."""
    queue_timeout: float = 10.0
    """Seconds a request may wait for a slot before a 503."""
    idle_timeout: float = 30.0
    """Seconds a stream may wait for its client to read before it is cancelled."""
    max_chars: int = 4096
    """Characters of `input`, as OpenAI's API."""
    drain_timeout: float = 30.0
    """Seconds a shutdown (SIGTERM) lets running streams finish before they are cut."""

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.budget <= 0 or self.drain_timeout < 0:
            raise ValueError("budget must be > 0 and drain_timeout >= 0")
        if self.max_queue < 0 or self.queue_timeout < 0 or self.idle_timeout <= 0:
            raise ValueError("max_queue and queue_timeout must be >= 0 and idle_timeout > 0")


@dataclass(frozen=True)
class SpeechCall:
    """One request as a backend starts it (this engine, or a Ray replica's), from HTTP or Wyoming."""

    voice: str
    text: str
    speed: float = 1.0
    timestamps: bool = False
    """The words come with the chunks (a voice whose `voice_info` says it has them)."""
    settings: dict[str, float | int] = field(default_factory=dict)
    """The call's own voice settings (Piper's names, a seed): SettingError for one the voice does not
    take."""


class Stream(Protocol):
    """One request's audio as the server reads it (the device engine's AsyncStream, or Ray's)."""

    def chunks(self) -> AsyncIterator[np.ndarray]: ...

    def cancel(self) -> None: ...


class TimedStream(Stream, Protocol):
    """A stream started with `timestamps`: also the words known so far, in Kokoro's shape."""

    def taken(self) -> list[dict[str, Any]]: ...


def describe_voice(voice: Voice) -> dict[str, Any]:
    """What clients may know of a voice; a multi-speaker voice lists its speakers (each also served as
    `VOICE:SPEAKER`), and such a view names its speaker."""
    about: dict[str, Any] = {
        "language": voice.addon.language,
        "sample_rate": voice.sample_rate,
        "stack": voice.stack_name,
        "target": voice.target,
        "takes_speed": voice.takes_speed,
        "timestamps": _timed(voice),
    }
    if voice.addon.license:
        about["license"] = voice.addon.license
    if voice.addon.settings:  # Piper's length_scale, noise_scale and noise_w, per request
        about["settings"] = {
            name: {"default": spec.default, "min": spec.min, "max": spec.max}
            for name, spec in voice.addon.settings.items()
        }
    if "speaker" in voice.bound:
        about["speaker"] = voice.bound["speaker"]
    elif voice.addon.speakers:
        about["speakers"] = dict(voice.addon.speakers)
        if voice.blends_speakers:
            about["blends_speakers"] = True  # `VOICE:A+B` is served too
    return about


def _timed(voice: Voice) -> bool:
    """Whether the voice can give word timestamps."""
    try:
        check_timed(voice)
    except StackError:
        return False
    return True


class Engine:
    """Loads the voices on one device engine (allowing only built-in and registered blocks: a request
    never names a path or a block), warms them up and measures their cost, then admits and runs streams."""

    def __init__(
        self,
        addons: Sequence[str | Path],
        stack: str | None = None,
        target: str | None = None,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
        schedule: Schedule | None = None,
        workers: int | None = None,
        threads: int = 1,
    ) -> None:
        """`schedule`, `workers` and `threads` go to the device engine (its deadlines and pacing; its
        worker threads, by default one per core, and their torch threads)."""
        self.addons, self.stack, self.target = addons, stack, target
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        idle = Schedule(idle_timeout=self.limits.idle_timeout)
        self.device = DeviceEngine(schedule or idle, workers, threads, observer=self.metrics.batch)
        self.workers_given = workers is not None
        self.voices = VoiceSet(self.device, allow_imports=False)
        self.costs: dict[str, float] = {}
        """Engine seconds per second of audio of each voice, alone, measured at warm-up."""
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._admission = asyncio.Condition()
        self._used = 0.0
        self._running = 0
        self._waiting = 0

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def voice_info(self) -> dict[str, dict[str, Any]]:
        """What clients may know of each voice, by name."""
        return {name: describe_voice(voice) for name, voice in sorted(self.voices.voices.items())}

    def load(self) -> bool:
        """Load, warm up and measure every voice, then set `ready`; False, with `load_error` saying why, if
        a voice could not be loaded (run it in a thread: the server stays up to say so on `/ready`)."""
        try:
            for addon in self.addons:
                voice = self.voices.add(addon, self.stack, self.target)
                if voice.target == "neuron" and not self.workers_given:
                    self.device.workers = 1  # a NeuronCore runs one call at a time; more would queue there
                cost = self.measure(voice)
                for name, served in self.voices.voices.items():  # the voice and its speakers' views
                    if served.stack is voice.stack:
                        self.costs[name] = cost
                        self.metrics.voice_cost.labels(name).set(cost)
        except Exception as err:  # noqa: BLE001 - reported on /ready and by the CLI, never a dead thread
            self.load_error = (
                f"{type(err).__name__}: {err}" if not isinstance(err, TTSNeuronError) else str(err)
            )
            return False
        self.metrics.budget.set(self.budget)
        # Python's full collections walk every object: ~300,000 after loading (torch, the server, the
        # voices), a pause of every stream of over 100 ms each time (benchmarks/gc_pause.py). Frozen, they
        # are not walked again.
        gc.collect()
        gc.freeze()
        self.ready.set()
        return True

    def measure(self, voice: Voice) -> float:
        """Warm the voice up on the engine, then time it alone: engine seconds per second of audio, the
        median of `COST_RUNS` runs: the admission it sets holds for the server's life, so one run slowed
        by whatever else the host did at that moment must not set it."""
        for _ in self.device.iterate(WARM_UP_TEXT, voice, paced=False):
            pass
        costs = []
        for _ in range(COST_RUNS):
            started = time.perf_counter()
            samples = sum(len(chunk) for chunk in self.device.iterate(COST_TEXT, voice, paced=False))
            costs.append((time.perf_counter() - started) / (samples / voice.sample_rate))
        return statistics.median(costs)

    @property
    def budget(self) -> float:
        """Worker seconds per second that the admitted streams may need."""
        return self.limits.budget * self.device.workers

    def capacity(self) -> int:
        """Streams of the costliest voice that the budget admits at once (what Ray's replicas take)."""
        return min(self.limits.max_streams, max(1, int(self.budget / max(self.costs.values()))))

    def _fits(self, cost: float) -> bool:
        return self._running < self.limits.max_streams and (
            self._running == 0 or self._used + cost <= self.budget
        )

    @asynccontextmanager
    async def admit(self, voice: str) -> AsyncIterator[float]:
        """Hold a share of the budget for a stream of `voice` for the block; yields the seconds waited for
        it. Raises Busy when the queue is full or the wait times out."""
        limits, cost = self.limits, self.costs.get(voice, max(self.costs.values(), default=1.0))
        started = time.monotonic()
        async with self._admission:
            if not self._fits(cost):
                if self._waiting >= limits.max_queue:
                    self.metrics.rejected.labels("queue_full").inc()
                    raise Busy(f"the engine is at its budget and {limits.max_queue} requests wait", 1)
                self._waiting += 1
                self.metrics.waiting.set(self._waiting)
                try:
                    await asyncio.wait_for(
                        self._admission.wait_for(lambda: self._fits(cost)), limits.queue_timeout
                    )
                except asyncio.TimeoutError:
                    self.metrics.rejected.labels("queue_timeout").inc()
                    raise Busy(
                        f"no room in the engine's budget came free within {limits.queue_timeout:g} s", 1
                    ) from None
                finally:
                    self._waiting -= 1
                    self.metrics.waiting.set(self._waiting)
            self._used += cost
            self._running += 1
        waited = time.monotonic() - started
        self.metrics.queue_time.observe(waited)
        self.metrics.running.inc()
        self.metrics.budget_used.set(self._used)
        try:
            yield waited
        finally:
            self.metrics.running.dec()
            async with self._admission:
                self._used -= cost
                self._running -= 1
                self.metrics.budget_used.set(self._used)
                self._admission.notify_all()

    def start(self, call: SpeechCall) -> Stream:
        """Start a stream on the device engine; the caller must `cancel` it if it stops reading. With
        `call.timestamps`, the stream also gives its words."""
        voice = self.voices[call.voice]
        speaker = voice.with_settings(**call.settings) if call.settings else voice
        if not call.timestamps:
            return self.device.open(call.text, speaker, call.speed)
        captioned = CaptionedVoice(speaker)
        return CaptionedStream(self.device.open(call.text, captioned, call.speed), captioned)

    async def drain(self) -> None:
        """Wait for the running streams to end, up to the drain timeout (a shutdown's first step)."""
        deadline = time.monotonic() + self.limits.drain_timeout
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Stop the device engine: streams still running are cut."""
        self.device.close()
