"""One engine per device: it owns every network call of every stream, orders them by playback deadline and
runs the calls of many streams as one batched call.

A stream is a greenlet that runs the voice's pull pipeline as it is: blocks stay generators at batch 1 and
keep a stream's state in their frames. When a block calls a network, its `NetworkHandle` hands the call to
the engine and the stream's greenlet pauses there; all streams run on the engine's one OS thread, so they
never contend for the GIL or for cores. Each turn of the engine's loop (schedule, execute, update):

1. takes in new streams and ends cancelled ones;
2. resumes every runnable stream, earliest deadline first, until each pauses at its next network call or
   hands out an audio chunk;
3. runs the waiting calls of the stream with the earliest deadline, together with every other waiting call
   of that network at the same input signature, as one call (rows padded to a compiled batch size on
   fixed-shape networks, with copies of a real row), and gives each stream its own rows.

Deadlines. A stream with no audio yet must make its first chunk by `arrival + first_audio_budget`; a
playing one must make its next chunk before the audio it has made so far has played:
`first_audio + produced - margin`. A free worker takes the urgent batch with the earliest deadline (a
deadline in it within `urgent`, or a stream in it that has made no audio yet), else the largest.
Pacing: a stream more than `horizon` seconds of audio ahead of its listener is not resumed until it
falls back within it; "played" is what the listener has taken and the time since its first chunk,
whichever is less, so a client that stops reading stops its stream too.

The frontend (text normalisation and espeak-ng) runs in a worker thread, a sentence ahead of need: a
stream that needs its next sentence before it is ready pauses on it like on a network call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import torch
from greenlet import GreenletExit, greenlet

from tts_neuron.backends.executor import TensorSpec
from tts_neuron.errors import TTSNeuronError
from tts_neuron.runners import NetworkHandle, Outputs, Runner, batch_key, run_batch

T = TypeVar("T")
_LOG = logging.getLogger("tts_neuron.engine")

Clock = Callable[[], float]

BatchObserver = Callable[[str, int, int], None]
"""Told (network, real rows, rows run) after every network call the engine runs: for metrics."""

GIL_SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it (Python's default is 0.005). A worker
takes the GIL back after each torch operator, and the engine's thread needs it to hand out the next
call: at 5 ms, each can wait that long behind the other or the HTTP side, and streams underrun with a
core idle (docs/serving.md, *Threads*)."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container or `taskset` narrows), not the
    host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Speaker(Protocol):
    """What the engine runs: a voice (or a wrapper of one, such as the server's captioned voice)."""

    @property
    def sample_rate(self) -> int: ...

    def stream(self, text: str, *, speed: float = 1.0) -> Iterator[np.ndarray]: ...


@dataclass(frozen=True)
class Schedule:
    """The engine's scheduling settings, in seconds of audio or of wall time."""

    horizon: float = 2.0
    """A stream this far ahead of its listener is paused until it falls back within it."""
    first_audio_budget: float = 0.4
    """A new stream's deadline for its first chunk, after its arrival."""
    margin: float = 0.25
    """A playing stream's deadline is this long before its audio runs out."""
    idle_timeout: float = 30.0
    """A stream whose listener takes nothing for this long, while it waits for them, is cancelled."""
    tick: float = 0.25
    """Paced streams wake on a common grid of this period: the streams due in one tick run together, so
    their calls meet at the same networks and batch, instead of trickling in one by one."""
    urgent: float = 0.2
    """A call whose stream's deadline is this close runs first; otherwise the largest batch does."""
    cushion: float = 0.5
    """Seconds of audio a new stream holds back before its first chunk leaves, while other streams run
    and its first-audio deadline has not come: a first chunk of 0.2 s followed by a wait for the engine
    would play and then stall."""
    fill: int = 1
    """Rows worth a call: a smaller batch of playing streams waits for more streams' calls while none of
    its deadlines is within `urgent` and other work is in flight that can bring them. One on a CPU, where
    a row costs about the same alone as in a batch; an accelerator's batch size there, where a call costs
    the same at any fill."""

    def __post_init__(self) -> None:
        if self.horizon <= 0 or self.idle_timeout <= 0 or self.tick <= 0:
            raise ValueError("need horizon > 0, idle_timeout > 0 and tick > 0")
        if self.fill < 1:
            raise ValueError(f"fill must be at least 1 row, got {self.fill}")
        if min(self.first_audio_budget, self.margin, self.urgent, self.cushion) < 0:
            raise ValueError("first_audio_budget, margin, urgent and cushion must be >= 0")


@dataclass(eq=False)
class _Call:
    """A network call a stream waits on."""

    handle: NetworkHandle
    inputs: tuple[torch.Tensor, ...]
    key: tuple[int, tuple[TensorSpec, ...]]
    running: bool = False
    """True once its batch went to a worker."""


@dataclass(eq=False)
class _Batch:
    """Calls of several streams running as one on a worker."""

    handle: NetworkHandle
    streams: list[EngineStream]
    outputs: Future[tuple[list[Outputs], int]]


@dataclass(eq=False)
class _Failed:
    """What a stream gets back instead of its rows when its batched call failed."""

    error: BaseException


class Cancelled(TTSNeuronError):
    """A stream was stopped before its end: by its listener, for idling, or by a shutdown."""


_YIELD = object()
"""What a stream's greenlet hands the engine after each audio chunk, so it is scheduled again."""


class _Task(greenlet):  # type: ignore[misc]
    """The greenlet of one stream."""

    stream: EngineStream


@dataclass(eq=False)
class EngineStream:
    """One stream in the engine: its place in the schedule, and the way its chunks leave."""

    voice: Speaker
    text: str
    speed: float
    sink: Callable[[object], object]
    """Receives each float32 chunk, then an exception or `END`; called on the engine's thread."""
    sample_rate: int
    arrived: float
    engine: Engine
    paced: bool = True
    """False for a reader that does not play in real time: the stream is never paused for being ahead."""
    first_audio: float | None = None
    """When the listener took the first chunk."""
    produced: float = 0.0
    """Seconds of audio handed out."""
    consumed: float = 0.0
    """Seconds of audio the listener has taken."""
    last_taken: float = 0.0
    waiting: _Call | Future[Any] | None = None
    resume_with: object = None
    held: list[object] | None = field(default_factory=list)
    """Items held back until the first chunk may leave (None once it has)."""
    cancelled: str | None = None
    """Why the stream was cancelled (None while it is not)."""
    done: bool = False
    task: _Task | None = field(default=None, repr=False)

    def take(self, item: object) -> np.ndarray | None:
        """What the reader does with each item its sink received: a chunk is returned and counted as
        played from now on, `END` gives None, an error is raised."""
        if item is END:
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, np.ndarray)
        now = self.engine.clock()
        if self.first_audio is None:
            self.first_audio = now
        self.consumed += len(item) / self.sample_rate
        self.last_taken = now
        self.engine.wake()
        return item

    def hold(self, item: object) -> None:
        """Hand an item out, or hold it back while the stream builds its first cushion."""
        if self.held is None:
            self.deliver(item)
            return
        self.held.append(item)
        alone = self.engine.streams == 1
        if alone or not isinstance(item, np.ndarray) or self.produced >= self.engine.schedule.cushion:
            self.release()

    def release(self) -> None:
        """Let the held items go, and every item after them."""
        held, self.held = self.held or [], None
        for item in held:
            self.deliver(item)

    def deliver(self, item: object) -> None:
        """Hand an item to the listener; a listener that cannot take it any more cancels the stream."""
        try:
            self.sink(item)
        except Exception:  # noqa: BLE001 - a closed event loop, a dead consumer: the engine goes on
            self.cancel("listener gone")

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the stream at its next pause (within one network call); safe from any thread."""
        if self.cancelled is None:
            self.cancelled = reason
        self.engine.wake()

    def ahead(self, now: float) -> float:
        """Seconds of audio made and not yet played (none for a stream that is not paced)."""
        if not self.paced:
            return 0.0
        played = 0.0 if self.first_audio is None else min(now - self.first_audio, self.consumed)
        return self.produced - played

    def deadline(self, schedule: Schedule) -> float:
        if self.first_audio is None:
            return self.arrived + schedule.first_audio_budget
        return self.first_audio + self.produced - schedule.margin

    def urgent(self, now: float, schedule: Schedule) -> bool:
        """Whether its calls run before larger batches: it has made no audio yet (a listener waits on its
        first chunk, and the chain of calls before it is long), or its deadline is within `urgent`."""
        return self.produced == 0 or self.deadline(schedule) - now <= schedule.urgent

    def runnable(self, now: float, schedule: Schedule) -> bool:
        """Waits on nothing and, as of the last tick, is within the horizon of its listener."""
        return self.waiting is None and self.ahead(now - now % schedule.tick) <= schedule.horizon

    def wakes_at(self, schedule: Schedule) -> float | None:
        """The tick at which a paced stream is back within the horizon (None: when its listener takes a
        chunk)."""
        if self.first_audio is None:
            return None
        back = self.first_audio + self.produced - schedule.horizon
        return back - back % schedule.tick + schedule.tick


END = object()
"""The last item a stream's sink receives when the stream ended normally."""


class AsyncStream:
    """A stream read on an asyncio event loop: chunks cross from the engine's thread through the loop."""

    def __init__(self, engine: Engine, text: str, voice: Speaker, speed: float, paced: bool) -> None:
        loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self.stream = engine.submit(
            voice, text, lambda item: loop.call_soon_threadsafe(self._items.put_nowait, item), speed, paced
        )

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        """The float32 chunks as they are ready, each counted as played once taken; errors in order."""
        while (chunk := self.stream.take(await self._items.get())) is not None:
            yield chunk

    def cancel(self) -> None:
        """Stop the stream within one network call and free what it holds."""
        self.stream.cancel()


class Engine(Runner):
    """Runs every stream of a device on one thread, deadline first, batched per network and shape.

    Voices are built on the engine (`tts_neuron.load(..., runner=engine)`), then `engine.stream(text,
    voice)` gives the audio as an async iterator (`iterate` gives a plain one). Calls made outside an
    engine stream (a warm-up, `voice.synthesize` from another thread) run at once in the caller's thread.
    """

    def __init__(
        self,
        schedule: Schedule | None = None,
        workers: int | None = None,
        threads: int = 1,
        max_batch: int = 32,
        observer: BatchObserver | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`workers`: threads that run batched calls side by side (default: one per core; one for a
        device that runs one call at a time, as a NeuronCore does), each with `threads` torch intra-op
        threads. torch keeps that setting per process, so an engine owns it: one engine per process. It
        sets the process's GIL switch interval too (`GIL_SWITCH_INTERVAL`).

        With one worker, calls of a network that declares its length axes (the attention step) meet across
        lengths, padded to the longest (`batch_key`): every call waits for the one device, so fewer calls
        is the gain. With several, the calls at each length take a worker each, side by side, and padding
        them into one group would only add work (docs/serving.md, *Batching shapes*)."""
        if max_batch < 1 or threads < 1 or (workers is not None and workers < 1):
            raise ValueError("max_batch, threads and workers must be at least 1")
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.schedule = schedule or Schedule()
        self.workers, self.threads = workers or usable_cores(), threads
        self.max_batch, self.observer, self.clock = max_batch, observer, clock
        self._batches: list[_Batch] = []
        self._pool = ThreadPoolExecutor(self.workers, "engine worker", self._start_worker)
        self._cond = threading.Condition()
        self._arrivals: list[EngineStream] = []
        self._streams: list[EngineStream] = []
        self._stopping = False
        self._frontend = ThreadPoolExecutor(1, thread_name_prefix="frontend")
        self._hub: greenlet | None = None
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()

    # -- what blocks and voices call -------------------------------------------------------------------

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        task = greenlet.getcurrent()
        if not isinstance(task, _Task) or task.stream.engine is not self:
            with torch.inference_mode():  # outside a stream of this engine: at once, in the caller's thread
                return handle.network(*inputs)
        if inputs and inputs[0].shape[:1] != (1,):
            raise ValueError(f"{handle.name}: a stream calls its networks at batch 1")
        if self.streams == 1 and task.stream.cancelled is None:  # alone: no batch to form, no one to wait
            return self._run_alone(handle, inputs)
        key = (id(handle), batch_key(handle, inputs, across_lengths=self.workers == 1))
        return self._pause(_Call(handle, inputs, key))

    def _run_alone(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        """A lone stream's call, in its own greenlet on the engine's thread: no turn of the loop and no
        thread hand-off per call, which held back the first audio of a lone attention stream by its dozens
        of decoder steps (docs/serving.md, *One stream's first audio over HTTP*). Pacing still applies at
        each chunk; an arrival waits for this call, and joins from the next."""
        (outputs,), size = run_batch(handle, [inputs])
        if self.observer:
            self.observer(handle.name, 1, size)
        return outputs

    def shares(self) -> bool:
        return self.streams > 1

    def paces(self) -> bool:
        return True

    def ahead(self, items: Iterable[T]) -> Iterator[T]:
        """Items of `items` (a frontend's sentences): the first at once, each next one computed in the
        frontend thread while the stream works on the one before."""
        source = iter(items)
        first = next(source, END)
        if first is END:
            return
        yield cast(T, first)
        if not isinstance(greenlet.getcurrent(), _Task):
            yield from source
            return
        following = self._frontend.submit(next, source, END)
        while True:
            value = following.result() if following.done() else self._pause(following)
            if value is END:
                return
            following = self._frontend.submit(next, source, END)
            yield cast(T, value)

    def _pause(self, waiting: _Call | Future[Any]) -> Any:
        """Pause the calling stream until what it waits on is ready; its result (or raise its error)."""
        assert self._hub is not None
        result = self._hub.switch(waiting)
        if isinstance(result, _Failed):
            raise result.error
        return result

    # -- what consumers call ---------------------------------------------------------------------------

    def submit(
        self,
        voice: Speaker,
        text: str,
        sink: Callable[[object], object],
        speed: float = 1.0,
        paced: bool = True,
    ) -> EngineStream:
        """Start a stream; its chunks go to `sink` on the engine's thread (then `END` or an exception), and
        its reader reports what it takes with `EngineStream.take`."""
        if self._stopping:
            raise Cancelled("the engine is shut down")
        now = self.clock()
        stream = EngineStream(voice, text, speed, sink, voice.sample_rate, now, self, paced, last_taken=now)
        with self._cond:
            self._arrivals.append(stream)
            self._cond.notify()
        return stream

    def open(self, text: str, voice: Speaker, speed: float = 1.0, paced: bool = True) -> AsyncStream:
        """Start a stream read on the running event loop (the server's, or a Python caller's)."""
        return AsyncStream(self, text, voice, speed, paced)

    async def stream(self, text: str, voice: Speaker, speed: float = 1.0) -> AsyncIterator[np.ndarray]:
        """The audio of `text` as float32 chunks, paced to the reader: `async for chunk in
        engine.stream(text, voice)`."""
        stream = self.open(text, voice, speed)
        try:
            async for chunk in stream.chunks():
                yield chunk
        finally:
            stream.cancel()

    def iterate(
        self, text: str, voice: Speaker, speed: float = 1.0, paced: bool = True
    ) -> Iterator[np.ndarray]:
        """As `stream`, for a caller in a thread of its own; `paced=False` for a reader that does not play
        in real time (writing a file, measuring)."""
        items: queue.SimpleQueue[object] = queue.SimpleQueue()
        stream = self.submit(voice, text, items.put, speed, paced)
        try:
            while (chunk := stream.take(items.get())) is not None:
                yield chunk
        finally:
            stream.cancel()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    @property
    def streams(self) -> int:
        """Streams in the engine now."""
        return len(self._streams) + len(self._arrivals)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every stream and stop the engine's thread (and the frontend's)."""
        self._stopping = True
        self.wake()
        self._thread.join(timeout)
        self._frontend.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the loop --------------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        torch.set_num_threads(self.threads)

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        self._hub = greenlet.getcurrent()
        with torch.inference_mode():
            while not self._stopping:
                try:
                    self._turn()
                except Exception:  # a bug in the engine must not stop every stream for good
                    _LOG.exception("engine turn failed")
            for stream in self._streams + self._arrivals:
                stream.cancel("shutdown")
            self._admit()
            self._end_cancelled()

    def _turn(self) -> None:
        """One turn: admit, take finished batches, resume the runnable streams deadline first, and give
        every free worker the most urgent batch."""
        self._admit()
        self._end_cancelled()
        self._collect()
        now, schedule = self.clock(), self.schedule
        runnable = []
        for stream in self._streams:
            if stream.held and now >= stream.deadline(schedule):
                stream.release()  # due: no more cushion to wait for
            if isinstance(stream.waiting, Future) and stream.waiting.done():
                stream.waiting, stream.resume_with = None, stream.waiting
            if stream.runnable(now, schedule):
                runnable.append(stream)
            elif stream.waiting is None and now - stream.last_taken > schedule.idle_timeout:
                stream.cancel("idle")
        for stream in sorted(runnable, key=lambda s: s.deadline(schedule)):
            if stream.cancelled is not None:
                continue
            self._resume(stream)
        self._streams = [s for s in self._streams if not s.done]
        self._dispatch()
        now = self.clock()
        if not any(s.runnable(now, schedule) for s in self._streams):
            self._sleep()

    def _admit(self) -> None:
        with self._cond:
            for stream in self._arrivals:
                stream.task = _Task(self._body)
                stream.task.stream = stream
            self._streams += self._arrivals
            self._arrivals = []

    def _sleep(self) -> None:
        """Wait for an arrival, a listener, a frontend result or a paced stream's turn."""
        wakes = [w for s in self._streams if s.waiting is None and (w := s.wakes_at(self.schedule))]
        wakes += [s.deadline(self.schedule) for s in self._streams if s.held]
        if len(self._batches) < self.workers:  # calls wait with a worker free: held back for `fill`
            wakes += [  # until a deadline among them is within `urgent`
                s.deadline(self.schedule) - self.schedule.urgent
                for s in self._streams
                if isinstance(s.waiting, _Call) and not s.waiting.running
            ]
        timeout = max(0.0, min(wakes) - self.clock()) if wakes else None
        timeout = min(timeout, self.schedule.idle_timeout) if timeout is not None else 1.0
        with self._cond:
            if not self._arrivals and not self._stopping and not any(b.outputs.done() for b in self._batches):
                self._cond.wait(timeout)

    def _resume(self, stream: EngineStream) -> None:
        """Run a stream until it pauses at a call, hands out a chunk, or ends."""
        assert stream.task is not None
        value, stream.resume_with = stream.resume_with, None
        if isinstance(value, Future):
            error = value.exception()
            value = _Failed(error) if error is not None else value.result()
        paused = stream.task.switch(value) if stream.task else stream.task.switch()
        if paused is _YIELD:
            return
        if isinstance(paused, (_Call, Future)):
            stream.waiting = paused
            if isinstance(paused, Future):
                paused.add_done_callback(lambda _: self.wake())
            return
        stream.done = True  # the greenlet returned

    def _body(self) -> None:
        """A stream's greenlet: pull the voice's chunks and hand each one out."""
        stream = greenlet.getcurrent().stream
        try:
            for chunk in stream.voice.stream(stream.text, speed=stream.speed):
                stream.produced += len(chunk) / stream.sample_rate
                stream.hold(chunk)
                self._hub.switch(_YIELD)  # type: ignore[union-attr]
            stream.hold(END)
        except GreenletExit:
            raise
        except Exception as err:  # noqa: BLE001 - every failure reaches its own listener, never the engine
            stream.hold(err)

    def _end_cancelled(self) -> None:
        for stream in self._streams:
            if stream.cancelled is not None and not stream.done:
                assert stream.task is not None
                stream.task.throw(GreenletExit)  # runs the blocks' cleanup in the stream's frames
                stream.done = True
                stream.deliver(Cancelled(f"the stream was cancelled ({stream.cancelled})"))
        self._streams = [s for s in self._streams if not s.done]

    def _dispatch(self) -> None:
        """While a worker is free, give it one batch: the waiting calls of one network at one input
        signature, earliest deadlines first, up to the batch limit. Which batch: of the urgent ones
        (`EngineStream.urgent`), the one of the earliest deadline; otherwise the one with the most rows,
        which is where the engine gains most and lets streams that lag join the ones ahead. While work
        in flight may bring more calls, a batch short of `fill` rows waits for them, unless a stream in it
        awaits its first audio. A batch takes no more than its share of the free workers (those the other
        groups leave it) and no fewer than `fill` rows, so on a CPU (fill 1) a worker never idles while
        another runs rows it could have taken: a row costs about the same alone as in a batch
        (docs/serving.md, *Batching shapes*); with one worker, as on a NeuronCore, nothing is split."""
        schedule, now = self.schedule, self.clock()
        groups: dict[tuple[int, tuple[TensorSpec, ...]], list[EngineStream]] = {}
        for stream in sorted(self._streams, key=lambda s: s.deadline(schedule)):
            if isinstance(stream.waiting, _Call) and not stream.waiting.running:
                groups.setdefault(stream.waiting.key, []).append(stream)
        while groups and len(self._batches) < self.workers:
            limited = {key: group[: self._limit(group)] for key, group in groups.items()}
            urgent = [key for key, group in limited.items() if any(s.urgent(now, schedule) for s in group)]
            if urgent:
                key = min(urgent, key=lambda key: limited[key][0].deadline(schedule))
            else:
                ready = [k for k in limited if self._full(limited[k])] if self._in_flight() else list(limited)
                if not ready:
                    return  # every batch is short of `fill`: wait for rows, at most until `urgent`
                key = max(ready, key=lambda k: (len(limited[k]), -limited[k][0].deadline(schedule)))
            free = self.workers - len(self._batches)
            share = max(1, free - (len(groups) - 1))  # workers this group may have: the others get one each
            rows = max(math.ceil(len(groups[key]) / share), schedule.fill)
            group = limited[key][:rows]
            rest = groups.pop(key)[len(group) :]
            if rest:
                groups[key] = rest
            calls = [cast(_Call, stream.waiting) for stream in group]
            for call in calls:
                call.running = True
            inputs = [call.inputs for call in calls]
            outputs = self._pool.submit(run_batch, calls[0].handle, inputs)
            outputs.add_done_callback(lambda _: self.wake())
            self._batches.append(_Batch(calls[0].handle, group, outputs))

    def _full(self, group: list[EngineStream]) -> bool:
        """Whether a batch need not wait for rows: it has `fill` (or its network's limit), or a stream in
        it awaits its first audio."""
        fill = min(self.schedule.fill, self._limit(group))
        return len(group) >= fill or any(stream.first_audio is None for stream in group)

    def _in_flight(self) -> bool:
        """Whether a running batch, or a stream not waiting on a call, may still bring calls."""
        return bool(self._batches) or any(not isinstance(s.waiting, _Call) for s in self._streams)

    def _limit(self, group: list[EngineStream]) -> int:
        """The most rows one call of this group's network may take."""
        sizes = cast(_Call, group[0].waiting).handle.batch_sizes
        return min(self.max_batch, sizes[-1]) if sizes else self.max_batch

    def _collect(self) -> None:
        """Give the streams of every finished batch their rows (or its error)."""
        for batch in [b for b in self._batches if b.outputs.done()]:
            self._batches.remove(batch)
            error = batch.outputs.exception()
            rows, size = (
                batch.outputs.result() if error is None else ([_Failed(error)] * len(batch.streams), 0)
            )
            for stream, row in zip(batch.streams, rows, strict=True):
                stream.waiting, stream.resume_with = None, row
            if self.observer and error is None:
                self.observer(batch.handle.name, len(batch.streams), size)


__all__ = ["END", "AsyncStream", "Cancelled", "Engine", "EngineStream", "Schedule"]
