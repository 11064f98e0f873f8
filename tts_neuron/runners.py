"""The call boundary between blocks and networks.

Blocks get their networks from the build context as handles and call them with one stream's inputs at
batch 1, pull-based, knowing nothing of other streams. A runner decides how each call runs:

- `DirectRunner` calls the network at once, in the caller's thread (the CLI and the Python API).
- `BatchingRunner` collects the concurrent calls of one network at one input signature from different
  streams and runs them as one call. On fixed-shape targets the batch is a compiled batch size: the rows
  it lacks are dummy rows (copies of a real one, so a network never sees a row it was not trained on),
  and each stream gets back only its own rows. Rows are independent in every network, so a stream's
  output does not depend on what it was batched with.

The rows of a batch are the slots of continuous batching: an attention voice's stream takes a row of the
decoder step each step, and when it ends, the next call waiting takes that row at the next step.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from tts_neuron.backends.executor import FixedShapeExecutor, TensorSpec

Outputs = Any
"""What a network returns: a tensor, or a tuple of tensors, each with the batch on dim 0."""


class NetworkHandle:
    """One network as a block sees it: call it with one stream's inputs, get that stream's outputs."""

    def __init__(self, name: str, network: Callable[..., Outputs], runner: Runner) -> None:
        self.name, self.network, self.runner = name, network, runner
        self.batch_sizes: list[int] | None = (
            network.batch_sizes if isinstance(network, FixedShapeExecutor) else None
        )
        """The batch sizes the network can run at; None for a dynamic network, which runs at any."""

    @property
    def compiled(self) -> bool:
        return self.batch_sizes is not None

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        return self.runner.run(self, inputs)

    def __repr__(self) -> str:
        return f"NetworkHandle({self.name!r}, {type(self.network).__name__})"


class Runner:
    """Runs the calls of the handles it made."""

    def handle(self, name: str, network: Callable[..., Outputs]) -> NetworkHandle:
        return NetworkHandle(name, network, self)

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        raise NotImplementedError

    @contextmanager
    def stream(self, state: StreamState | None = None) -> Iterator[StreamState]:
        """Run one stream's calls in this block, in the stream's own thread: the calls made there carry
        its state, which a scheduling runner uses to order them."""
        state = state or StreamState()
        token = _STREAM.set(state)
        try:
            yield state
        finally:
            _STREAM.reset(token)


class DirectRunner(Runner):
    """Each call runs at once in the caller's thread: today's behaviour, one stream at a time."""

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        with torch.inference_mode():
            return handle.network(*inputs)


Tap = Callable[[NetworkHandle, tuple[torch.Tensor, ...]], None]


class TappedRunner(DirectRunner):
    """A direct runner that shows every call to `tap` before it runs (before any shape check): for
    tests and benchmarks that count padding or record the shapes networks are called at."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        self.tap(handle, inputs)
        return super().run(handle, inputs)


@dataclass
class StreamState:
    """What the scheduler knows of one stream: when it started and how much audio it has made."""

    started: float = field(default_factory=time.monotonic)
    first_audio: float | None = None
    audio_seconds: float = 0.0

    def emitted(self, seconds: float) -> None:
        """Record audio handed to the client, which starts playing it when the first chunk arrives."""
        if self.first_audio is None:
            self.first_audio = time.monotonic()
        self.audio_seconds += seconds

    def urgency(self, now: float) -> tuple[int, float]:
        """Smaller is more urgent: streams with no audio yet (the longest waiting first), then those with
        the least audio ahead of their playback."""
        if self.first_audio is None:
            return (0, self.started - now)
        return (1, self.audio_seconds - (now - self.first_audio))


_STREAM: contextvars.ContextVar[StreamState | None] = contextvars.ContextVar("stream", default=None)


@dataclass
class _Call:
    inputs: tuple[torch.Tensor, ...]
    signature: tuple[TensorSpec, ...]
    stream: StreamState | None
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: Outputs = None
    error: BaseException | None = None

    def urgency(self, now: float) -> tuple[int, float]:
        return self.stream.urgency(now) if self.stream else (0, self.arrived - now)


BatchObserver = Callable[[str, int, int], None]
"""Told (network, real rows, rows run) after every batched call: for metrics."""


class BatchingRunner(Runner):
    """Batches the concurrent calls of every network across streams, with dispatcher threads per network.

    A stream runs inside `runner.stream()` in its own thread, so the runner knows how many streams may
    still join a batch. A lone stream's calls run in its own thread, as the direct runner's do. A
    dispatcher runs a batch as soon as it is full, or as soon as every running stream has a call waiting,
    and otherwise waits at most `max_wait` seconds for stragglers.
    """

    def __init__(
        self,
        max_batch: int = 16,
        max_wait: float = 0.002,
        observer: BatchObserver | None = None,
        threads: int = 1,
        workers: int | None = None,
    ) -> None:
        """`workers`: dispatcher threads per network (default: one per core), so that calls which do not
        batch (other shapes) still run side by side, as they would without the runner. `threads`: torch
        intra-op threads of each dispatcher (torch keeps that setting per thread)."""
        workers = workers or os.cpu_count() or 1
        if max_batch < 1 or max_wait < 0 or threads < 1 or workers < 1:
            raise ValueError("need max_batch >= 1, max_wait >= 0, threads >= 1 and workers >= 1")
        self.max_batch, self.max_wait, self.observer = max_batch, max_wait, observer
        self.threads, self.workers = threads, workers
        self._batchers: dict[int, _Batcher] = {}
        self._streams = 0
        self._lock = threading.Lock()

    def handle(self, name: str, network: Callable[..., Outputs]) -> NetworkHandle:
        handle = super().handle(name, network)
        self._batchers[id(handle)] = _Batcher(handle, self)
        return handle

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        if inputs and inputs[0].shape[:1] != (1,):
            raise ValueError(f"{handle.name}: a stream calls its networks at batch 1")
        batcher = self._batchers[id(handle)]
        if self._streams <= 1 and not batcher.pending:  # a lone stream: nothing to batch with, no handoff
            with torch.inference_mode():
                outputs = handle.network(*inputs)
            if self.observer:
                self.observer(handle.name, 1, 1)
            return outputs
        return batcher.submit(inputs, _STREAM.get())

    @contextmanager
    def stream(self, state: StreamState | None = None) -> Iterator[StreamState]:
        with self._lock:
            self._streams += 1
        try:
            with super().stream(state) as running:
                yield running
        finally:
            with self._lock:
                self._streams -= 1

    @property
    def streams(self) -> int:
        """Streams running now (at least one: a call from outside a stream counts as one)."""
        return max(1, self._streams)


class _Batcher:
    """The queue and dispatcher threads of one network; each dispatcher takes the next batch."""

    def __init__(self, handle: NetworkHandle, runner: BatchingRunner) -> None:
        self.handle, self.runner = handle, runner
        sizes = handle.batch_sizes
        self.limit = min(runner.max_batch, sizes[-1]) if sizes else runner.max_batch
        self.pending: list[_Call] = []
        self.cond = threading.Condition()
        for worker in range(runner.workers):
            threading.Thread(target=self._serve, name=f"batch {handle.name} {worker}", daemon=True).start()

    def submit(self, inputs: tuple[torch.Tensor, ...], stream: StreamState | None) -> Outputs:
        call = _Call(inputs, tuple(TensorSpec.of(x) for x in inputs), stream)
        with self.cond:
            self.pending.append(call)
            self.cond.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _serve(self) -> None:
        torch.set_num_threads(self.runner.threads)
        while True:
            self._run(self._next_batch())

    def _next_batch(self) -> list[_Call]:
        """The most urgent waiting call and the others at its signature, most urgent first."""
        with self.cond:
            while True:
                while not self.pending:
                    self.cond.wait()
                now = time.monotonic()
                first = min(self.pending, key=lambda c: c.urgency(now))
                group = [c for c in self.pending if c.signature == first.signature]
                waited = now - min(c.arrived for c in group)
                full = len(group) >= min(self.limit, self.runner.streams)
                if full or waited >= self.runner.max_wait:
                    break
                self.cond.wait(self.runner.max_wait - waited)
            group.sort(key=lambda c: c.urgency(now))
            chosen = group[: self.limit]
            taken = {id(c) for c in chosen}
            self.pending = [c for c in self.pending if id(c) not in taken]
            return chosen

    def _run(self, calls: list[_Call]) -> None:
        rows = len(calls)
        sizes = self.handle.batch_sizes
        size = rows if sizes is None else next(b for b in sizes if b >= rows)
        try:
            # inputs: n tensors [1, ...] per call -> n tensors [size, ...], dummy rows repeat the last call's
            padded = [*calls, *[calls[-1]] * (size - rows)]
            inputs = [torch.cat([c.inputs[i] for c in padded]) for i in range(len(calls[0].inputs))]
            with torch.inference_mode():
                outputs = self.handle.network(*inputs)
            for row, call in enumerate(calls):
                call.result = _rows(outputs, row)
        except Exception as err:  # noqa: BLE001 - every caller of the batch gets the error in its own thread
            for call in calls:
                call.error = err
        finally:
            for call in calls:
                call.done.set()
        if self.runner.observer:
            self.runner.observer(self.handle.name, rows, size)


def _rows(outputs: Outputs, row: int) -> Outputs:
    """Row `row` of every output, keeping the batch axis: [B, ...] -> [1, ...]."""
    if isinstance(outputs, tuple):
        return tuple(x[row : row + 1] for x in outputs)
    return outputs[row : row + 1]


def handles(block: Any) -> Sequence[NetworkHandle]:
    """The network handles a block holds directly (not those of its children)."""
    return [value for value in vars(block).values() if isinstance(value, NetworkHandle)]


__all__ = ["BatchingRunner", "DirectRunner", "NetworkHandle", "Runner", "StreamState", "TappedRunner"]
