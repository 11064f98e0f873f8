"""The voices of a server and the streams running on them.

Each stream runs pull-based in a thread of its own, inside the batching runner's `stream()`, so the calls
of concurrent streams meet in the runner. Chunks cross to the event loop through a small bounded queue:
a client that stops reading stops its stream's synthesis there (backpressure), one that stays away past
the idle timeout has its stream cancelled, and one that disconnects has it cancelled after the chunk
in progress.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tts_neuron.errors import TTSNeuronError
from tts_neuron.runners import BatchingRunner, DirectRunner, Runner, StreamState
from tts_neuron.server.metrics import Metrics
from tts_neuron.voice import Voice, VoiceSet

WARM_UP_TEXT = "Ready when you are."


class Busy(Exception):
    """Every stream slot is taken and the queue is full, or the wait for a slot timed out."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Limits:
    max_streams: int = 32
    """Streams synthesised at once; more wait in the queue."""
    max_queue: int = 64
    """Requests that may wait for a slot; past that, 503."""
    queue_timeout: float = 10.0
    """Seconds a request may wait for a slot before a 503."""
    idle_timeout: float = 30.0
    """Seconds a stream may wait for its client to read before it is cancelled."""
    max_chars: int = 4096
    """Characters of `input`, as OpenAI's API."""

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queue < 0 or self.queue_timeout < 0 or self.idle_timeout <= 0:
            raise ValueError("max_queue and queue_timeout must be >= 0 and idle_timeout > 0")


_END = object()


@dataclass
class Stream:
    """One request's audio, produced in a thread, consumed on the event loop."""

    voice: Voice
    text: str
    speed: float
    state: StreamState = field(default_factory=StreamState)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(maxsize=4))

    def cancel(self) -> None:
        """Stop synthesising after the chunk in progress."""
        self.cancelled.set()

    def emitted(self, seconds: float) -> None:
        """Tell the scheduler that this much audio went to the client (see `StreamState.urgency`)."""
        self.state.emitted(seconds)

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        """The audio chunks as they are ready; a synthesis error is raised here, in order."""
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, np.ndarray)
            yield item


def describe_voice(voice: Voice) -> dict[str, Any]:
    return {
        "language": voice.addon.language,
        "sample_rate": voice.sample_rate,
        "stack": voice.stack_name,
        "target": voice.target,
        "takes_speed": voice.takes_speed,
    }


class Engine:
    """Loads the voices (allowing only built-in and registered blocks: a request never names a path or
    a block), warms them up, admits streams up to the limit and runs them."""

    def __init__(
        self,
        addons: Sequence[str | Path],
        stack: str | None = None,
        target: str | None = None,
        limits: Limits | None = None,
        batching: bool = True,
        metrics: Metrics | None = None,
        batch_threads: int = 1,
    ) -> None:
        """`batching=False` runs each stream's calls alone (the direct runner); `batch_threads` are the
        torch threads of each network's dispatcher."""
        self.addons, self.stack, self.target = addons, stack, target
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        self.runner: Runner = (
            BatchingRunner(observer=self.metrics.batch, threads=batch_threads) if batching else DirectRunner()
        )
        self.voices = VoiceSet(self.runner, allow_imports=False)
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._slots = asyncio.Semaphore(self.limits.max_streams)
        self._waiting = 0

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def voice_info(self) -> dict[str, dict[str, Any]]:
        """What clients may know of each voice, by name."""
        return {name: describe_voice(voice) for name, voice in sorted(self.voices.voices.items())}

    def load(self) -> bool:
        """Load and warm up every voice, then set `ready`; False, with `load_error` saying why, if a voice
        could not be loaded (run it in a thread: the server stays up to say so on `/ready`)."""
        try:
            for addon in self.addons:
                voice = self.voices.add(addon, self.stack, self.target)
                with self.runner.stream():
                    voice.synthesize(WARM_UP_TEXT)
        except Exception as err:  # noqa: BLE001 - reported on /ready and by the CLI, never a dead thread
            self.load_error = (
                f"{type(err).__name__}: {err}" if not isinstance(err, TTSNeuronError) else str(err)
            )
            return False
        self.ready.set()
        return True

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Hold a stream slot for the block; yields the seconds waited for it. Raises Busy."""
        limits = self.limits
        if self._slots.locked() and self._waiting >= limits.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise Busy(f"all {limits.max_streams} streams are busy and {limits.max_queue} requests wait", 1)
        started = time.monotonic()
        self._waiting += 1
        self.metrics.waiting.set(self._waiting)
        try:
            await asyncio.wait_for(self._slots.acquire(), limits.queue_timeout)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("queue_timeout").inc()
            raise Busy(f"no stream slot came free within {limits.queue_timeout:g} s", 1) from None
        finally:
            self._waiting -= 1
            self.metrics.waiting.set(self._waiting)
        waited = time.monotonic() - started
        self.metrics.queue_time.observe(waited)
        self.metrics.running.inc()
        try:
            yield waited
        finally:
            self.metrics.running.dec()
            self._slots.release()

    def start(self, voice: str, text: str, speed: float) -> Stream:
        """Start synthesising in a thread of its own; the caller must `cancel` it if it stops reading."""
        stream = Stream(self.voices[voice], text, speed)
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._produce, args=(stream, loop), daemon=True, name="stream").start()
        return stream

    def _produce(self, stream: Stream, loop: asyncio.AbstractEventLoop) -> None:
        def put(item: object) -> bool:
            """Hand an item to the event loop, waiting while the client does not read; False if the
            stream was cancelled meanwhile or its client stayed away past the idle timeout."""
            future = asyncio.run_coroutine_threadsafe(stream.queue.put(item), loop)
            deadline = time.monotonic() + self.limits.idle_timeout
            while not stream.cancelled.is_set():
                try:
                    future.result(timeout=0.05)
                    return True
                except concurrent.futures.TimeoutError:
                    if time.monotonic() > deadline:
                        self.metrics.cancelled.labels("idle").inc()
                        stream.cancelled.set()
            future.cancel()
            return False

        with self.runner.stream(stream.state):
            audio: Iterator[np.ndarray] = stream.voice.stream(stream.text, speed=stream.speed)
            try:
                for chunk in audio:
                    if stream.cancelled.is_set() or not put(chunk):
                        return
                put(_END)
            except Exception as err:  # noqa: BLE001 - every failure reaches its own client, never the process
                put(err)
            finally:
                close = getattr(audio, "close", None)
                if close:
                    close()
