"""The device engine: every stream gets what it would get alone, in deadline order, paced to its listener.

Batched equals alone is checked per stream for random mixes of texts, voices and arrival times, on the
dynamic stacks and on the fixed-shape stack compiled at batch sizes 1, 2 and 4 (partial batches filled
with dummy rows, which must never reach a real one). Scheduling is checked with scripted streams: a fake
voice whose `stream` calls a network and hands out chunks of a known length, and an injected clock.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.conftest import edit_addon_json, write_tiny_addon
from tts_neuron.backends.executor import FixedShapeExecutor, ShapeError, TensorSpec, pad_length
from tts_neuron.engine import END, Cancelled, Engine, EngineStream, Schedule
from tts_neuron.models.tacotron import AttentionStep
from tts_neuron.runners import DirectRunner, NetworkHandle, TappedRunner, batch_key, run_batch
from tts_neuron.voice import Voice, VoiceSet

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump? She sells sea shells.",
    "Would you, could you, on a boat?",
    "Yes.",
]
TOLERANCE = 1e-5
"""What docs/serving.md claims: batched rows equal the stream alone to float rounding."""
RATE = 100
"""Samples per second of the scripted voice: a chunk of 100 samples is one second of audio."""


class Script:
    """A fake voice: each stream calls `handle` with its text's number, then hands out one second of
    audio, `chunks` times. Records whether a stream's cleanup ran."""

    sample_rate = RATE

    def __init__(self, handle: NetworkHandle, chunks: int = 1) -> None:
        self.handle, self.chunks, self.closed = handle, chunks, 0

    def stream(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        try:
            for _ in range(self.chunks):
                out = self.handle(torch.full((1, 2), float(text)))
                yield np.full(RATE, float(out[0, 0]), dtype=np.float32)
        finally:
            self.closed += 1


class Sink:
    """Collects what an engine stream hands out; `done` is set at its end."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self.done = threading.Event()

    def __call__(self, item: object) -> None:
        self.items.append(item)
        if not isinstance(item, np.ndarray):
            self.done.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(test: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(workers=1)  # one call at a time: what waits while it runs is what batches
    yield engine
    engine.close()


def test_waiting_calls_of_one_network_run_as_one_batch_and_each_stream_gets_its_rows(engine: Engine) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        gate.wait(timeout=10)
        return x * 2

    voice = Script(engine.handle("net", network))
    blocker = Sink()
    engine.submit(voice, "0", blocker, paced=False)  # type: ignore[arg-type]
    wait_until(lambda: calls == [1])  # the engine is inside the blocker's call
    sinks = [Sink() for _ in range(5)]
    for i, sink in enumerate(sinks):
        engine.submit(voice, str(i + 1), sink, paced=False)  # type: ignore[arg-type]
    gate.set()
    for sink in sinks:
        assert sink.done.wait(10)
    assert calls == [1, 5]  # the five that arrived meanwhile ran as one call
    for i, sink in enumerate(sinks):
        assert float(sink.items[0][0]) == 2.0 * (i + 1) and sink.items[1] is END  # type: ignore[index]


def test_with_two_free_workers_one_group_is_split_between_them() -> None:
    """Four calls of one network waiting together, two free workers: two calls of two rows side by side,
    not one call of four while the other worker idles."""
    engine = Engine(workers=2)
    calls: list[int] = []
    both = threading.Barrier(2, timeout=10)  # passes only if two calls run at the same time

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        both.wait()
        return x * 2

    try:
        voice = Script(engine.handle("net", network))
        sinks = [Sink() for _ in range(4)]
        with engine._cond:  # the engine takes arrivals under this lock: all four in one turn
            for i, sink in enumerate(sinks):
                engine.submit(voice, str(i + 1), sink, paced=False)  # type: ignore[arg-type]
        for sink in sinks:
            assert sink.done.wait(10)
        assert calls == [2, 2]
        for i, sink in enumerate(sinks):
            assert float(sink.items[0][0]) == 2.0 * (i + 1) and sink.items[1] is END  # type: ignore[index]
    finally:
        engine.close()


def test_a_partial_batch_is_padded_to_a_compiled_size_and_dummy_rows_stay_out(engine: Engine) -> None:
    """Three calls on an executor compiled at batch 1, 2 and 4 run as one call of 4; each stream gets
    exactly its row, and the dummy row (a copy) is dropped."""
    seen: list[int] = []
    gate = threading.Event()

    def artifact(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        gate.wait(timeout=10)
        return x * 2

    signatures = {(b, 2): (TensorSpec((b, 2), "float32"),) for b in (1, 2, 4)}
    executor = FixedShapeExecutor("net", dict.fromkeys(signatures, artifact), signatures)
    observed: list[tuple[str, int, int]] = []
    engine.observer = lambda *o: observed.append(o)
    voice = Script(engine.handle("net", executor))
    engine.submit(voice, "0", Sink(), paced=False)  # type: ignore[arg-type]
    wait_until(lambda: seen == [1])
    sinks = [Sink() for _ in range(3)]
    for i, sink in enumerate(sinks):
        engine.submit(voice, str(i + 1), sink, paced=False)  # type: ignore[arg-type]
    gate.set()
    for sink in sinks:
        assert sink.done.wait(10)
    assert seen == [1, 4] and observed == [("net", 1, 1), ("net", 3, 4)]
    for i, sink in enumerate(sinks):
        assert float(sink.items[0][0]) == 2.0 * (i + 1)  # type: ignore[index]


def test_the_stream_nearest_its_deadline_runs_first() -> None:
    """With one row a call, a stream about to underrun runs before a new one, and a new one (its first
    audio due) before a stream far ahead of its listener."""
    clock = Clock()
    engine = Engine(
        Schedule(horizon=10.0, first_audio_budget=0.5, margin=0.0), workers=1, max_batch=1, clock=clock
    )
    order: list[float] = []
    gate = threading.Event()

    def network(x: torch.Tensor) -> torch.Tensor:
        gate.wait(timeout=10)
        order.append(float(x[0, 0]))
        return x

    try:
        voice = Script(engine.handle("net", network))
        engine.submit(voice, "0", Sink(), paced=False)  # type: ignore[arg-type]
        wait_until(lambda: engine.streams == 1 and not engine._arrivals)
        time.sleep(0.05)  # the blocker's call holds the engine at the gate
        streams: dict[str, EngineStream] = {}
        for name, value in (("far_ahead", "3"), ("new", "2"), ("near_underrun", "1")):
            streams[name] = engine.submit(voice, value, Sink())  # type: ignore[arg-type]
        # 5 s of audio made, 4.9 s of it played: due in 0.1 s; far ahead: due in 8 s; new: due in 0.5 s
        for name, produced in (("near_underrun", 5.0), ("far_ahead", 12.9)):
            streams[name].first_audio, streams[name].produced = clock.now - 4.9, produced
            streams[name].consumed = produced
        gate.set()
        wait_until(lambda: len(order) == 4)
        assert order == [0.0, 1.0, 2.0, 3.0]
    finally:
        gate.set()
        engine.close()


def test_a_stream_with_no_audio_yet_runs_before_a_larger_batch_far_from_its_deadlines() -> None:
    """A new stream's calls are urgent from its arrival: its first chunk waits on a chain of calls. Three
    playing streams due in 5 s would otherwise run first, as the larger batch."""
    clock = Clock()
    engine = Engine(Schedule(urgent=0.2, margin=0.0), workers=1, clock=clock)
    calls: list[tuple[str, int]] = []
    gate = threading.Event()

    def network(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            gate.wait(timeout=10)
            calls.append((name, x.shape[0]))
            return x

        return run

    try:
        blocker, playing, new = (Script(engine.handle(name, network(name))) for name in ("0", "a", "b"))
        with engine._cond:  # two streams in one turn: their call goes to the worker and holds it
            for _ in range(2):
                engine.submit(blocker, "0", Sink(), paced=False)  # type: ignore[arg-type]
        wait_until(lambda: len(engine._batches) == 1)
        sinks = [Sink() for _ in range(4)]
        with engine._cond:
            for value, sink in zip("123", sinks, strict=False):
                stream = engine.submit(playing, value, sink, paced=False)  # type: ignore[arg-type]
                stream.first_audio, stream.produced = clock.now, 5.0  # due in 5 s
            engine.submit(new, "4", sinks[3], paced=False)  # type: ignore[arg-type]
        time.sleep(0.1)  # every call waits behind the blocker
        gate.set()
        assert all(sink.done.wait(10) for sink in sinks)
        assert calls == [("0", 2), ("b", 1), ("a", 3)]
    finally:
        gate.set()
        engine.close()


def test_with_fill_a_short_batch_waits_for_rows_until_a_deadline_in_it_nears() -> None:
    """fill=4: while other work is in flight, three waiting calls of playing streams wait for a fourth
    and run as one call; a lone call runs short once its stream's deadline is within `urgent`, and a
    stream's first audio never waits."""
    clock = Clock()
    engine = Engine(Schedule(fill=4, urgent=0.2, margin=0.0), workers=2, clock=clock)
    calls: list[int] = []
    started, gate = threading.Event(), threading.Event()

    def slow(x: torch.Tensor) -> torch.Tensor:
        started.set()
        gate.wait(timeout=10)
        return x

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x * 2

    def start(values: list[str], playing: bool = True) -> list[Sink]:
        sinks = [Sink() for _ in values]
        with engine._cond:  # the engine takes arrivals under this lock: set them up before it does
            for value, sink in zip(values, sinks, strict=True):
                stream = engine.submit(voice, value, sink, paced=False)  # type: ignore[arg-type]
                if playing:  # 5 s of audio made and none played: due at clock + 5
                    stream.first_audio, stream.produced = clock.now, 5.0
        return sinks

    try:
        slow_voice = Script(engine.handle("slow", slow))
        with engine._cond:  # two streams in one turn: their call goes to a worker (a lone one runs inline)
            for _ in range(2):
                engine.submit(slow_voice, "0", Sink(), paced=False)  # type: ignore[arg-type]
        assert started.wait(10)  # work in flight from here on
        voice = Script(engine.handle("net", network))
        three = start(["1", "2", "3"])
        time.sleep(0.2)
        assert calls == []  # three rows wait for a fourth
        four = three + start(["4"])
        assert all(sink.done.wait(10) for sink in four) and calls == [4]
        assert [float(sink.items[0][0]) for sink in four] == [2.0, 4.0, 6.0, 8.0]  # type: ignore[index]
        (late,) = start(["5"])
        time.sleep(0.2)
        assert calls == [4]
        clock.now += 4.85  # its deadline is 0.15 s away, within `urgent`
        engine.wake()
        assert late.done.wait(10) and calls == [4, 1]
        (new,) = start(["6"], playing=False)  # a first audio: runs at once, one row
        assert new.done.wait(10) and calls == [4, 1, 1]
    finally:
        gate.set()
        engine.close()


def test_a_stream_beyond_the_horizon_makes_no_network_call_until_its_listener_catches_up() -> None:
    clock = Clock()
    engine = Engine(Schedule(horizon=2.0), clock=clock)
    calls: list[float] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(clock.now)
        return x

    try:
        voice = Script(engine.handle("net", network), chunks=10)
        sink = Sink()
        stream = engine.submit(voice, "1", sink)  # type: ignore[arg-type]
        wait_until(lambda: len(calls) == 3)  # 3 s made: one past the horizon
        time.sleep(0.2)
        assert len(calls) == 3 and len(sink.items) == 3  # nothing taken: paused
        stream.take(sink.items[0])  # the listener takes its first second of audio, at time 1000
        time.sleep(0.2)
        assert len(calls) == 3  # played: 0 s, still 3 s ahead
        clock.now += 1.5  # 1.5 s played: 1.5 s ahead, within the horizon again
        engine.wake()
        wait_until(lambda: len(calls) == 4)
        time.sleep(0.2)
        assert len(calls) == 4  # played 1 s (all it took), 3 s ahead again
    finally:
        engine.close()


def test_a_cancelled_stream_ends_within_one_call_and_runs_its_cleanup(engine: Engine) -> None:
    voice = Script(engine.handle("net", lambda x: x), chunks=1000)
    sink = Sink()
    stream = engine.submit(voice, "1", sink)  # type: ignore[arg-type]
    wait_until(lambda: len(sink.items) >= 2)  # paced: it waits for its listener
    stream.cancel()
    assert sink.done.wait(5)
    assert isinstance(sink.items[-1], Cancelled) and voice.closed == 1
    wait_until(lambda: engine.streams == 0)


def test_a_listener_that_stays_away_gets_its_stream_cancelled() -> None:
    clock = Clock()
    engine = Engine(Schedule(horizon=1.0, idle_timeout=5.0), clock=clock)
    try:
        voice = Script(engine.handle("net", lambda x: x), chunks=10)
        sink = Sink()
        engine.submit(voice, "1", sink)  # type: ignore[arg-type]
        wait_until(lambda: len(sink.items) == 2)
        clock.now += 6.0
        engine.wake()
        assert sink.done.wait(5)
        assert "idle" in str(sink.items[-1])
    finally:
        engine.close()


def test_an_error_reaches_every_stream_of_the_batch_and_the_engine_goes_on(engine: Engine) -> None:
    signatures = {(1, 2): (TensorSpec((1, 2), "float32"),)}
    executor = FixedShapeExecutor("net", {(1, 2): lambda x: x}, signatures)
    handle = engine.handle("net", executor)
    wide = Script(handle)
    wide.handle = engine.handle(
        "net", FixedShapeExecutor("net", {(1, 3): lambda x: x}, {(1, 3): (TensorSpec((1, 3), "float32"),)})
    )
    failed = Sink()
    engine.submit(wide, "1", failed, paced=False)  # type: ignore[arg-type]
    assert failed.done.wait(5) and isinstance(failed.items[-1], ShapeError)
    ok = Sink()
    engine.submit(Script(handle), "1", ok, paced=False)  # type: ignore[arg-type]
    assert ok.done.wait(5) and ok.items[-1] is END


def test_calls_outside_an_engine_stream_run_at_once_in_the_callers_thread(engine: Engine) -> None:
    threads: list[str] = []
    handle = engine.handle("net", lambda x: threads.append(threading.current_thread().name) or x)
    assert torch.equal(handle(torch.ones(1, 2)), torch.ones(1, 2))
    assert threads == [threading.current_thread().name]


def synthesize_concurrently(
    engine: Engine, voices: VoiceSet, jobs: list[tuple[str, str]], seed: int
) -> list[np.ndarray]:
    """Each (voice, text) job as an engine stream, arriving at random times within 50 ms."""
    rng = random.Random(seed)
    sinks = []
    for voice, text in jobs:
        time.sleep(rng.uniform(0, 0.05 / len(jobs)))
        sinks.append(Sink())
        engine.submit(voices[voice], text, sinks[-1], paced=False)
    for sink in sinks:
        assert sink.done.wait(120) and sink.items[-1] is END, sink.items[-1]
    return [np.concatenate([x for x in sink.items if isinstance(x, np.ndarray)]) for sink in sinks]


def alone(voices: VoiceSet, jobs: list[tuple[str, str]]) -> list[np.ndarray]:
    """The same jobs one after another, each run at once in this thread (outside the engine)."""
    return [voices.synthesize(text, voice) for voice, text in jobs]


def assert_each_equals_alone(
    batched: list[np.ndarray], reference: list[np.ndarray], tolerance: float = TOLERANCE
) -> None:
    for got, want in zip(batched, reference, strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max(initial=0) <= tolerance


@pytest.fixture(scope="module")
def module_engine() -> Iterator[Engine]:
    engine = Engine(max_batch=8, workers=1)  # as on one NeuronCore: calls that meet are never split
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def dynamic_voices(
    tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory, module_engine: Engine
) -> VoiceSet:
    """Two duration voices with different weights (the tiny fixture at two seeds) on one engine."""
    other = write_tiny_addon(tmp_path_factory.mktemp("other") / "tiny", seed=1)
    edit_addon_json(other, lambda c: c.update(name="tiny-other"))
    voices = VoiceSet(module_engine)
    voices.add(tiny_addon_dir)
    voices.add(other)
    return voices


@settings(max_examples=6, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["tiny", "tiny-other"]), st.sampled_from(TEXTS)), min_size=2, max_size=8
    ),
    st.integers(0, 2**16),
)
def test_batched_streams_equal_each_stream_alone_on_the_dynamic_stack(
    module_engine: Engine, dynamic_voices: VoiceSet, jobs: list[tuple[str, str]], seed: int
) -> None:
    batched = synthesize_concurrently(module_engine, dynamic_voices, jobs, seed)
    assert_each_equals_alone(batched, alone(dynamic_voices, jobs))


@pytest.fixture(scope="module")
def compiled_voices(
    tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory, module_engine: Engine
) -> VoiceSet:
    """The tiny voice's fixed-shape stack compiled (CPU target) at batch sizes 1, 2 and 4."""
    from tts_neuron_build.compiler import compile_addon

    root = Path(shutil.copytree(tiny_addon_dir, tmp_path_factory.mktemp("batched") / "tiny"))

    def batch_sizes(config: dict[str, Any]) -> None:
        for network in config["networks"].values():
            network["batch_sizes"] = [1, 2, 4]

    edit_addon_json(root, batch_sizes)
    compile_addon(root, "cpu", progress=False)
    voices = VoiceSet(module_engine)
    voices.add(root, stack="neuron", target="cpu")
    return voices


@settings(max_examples=5, deadline=None)
@given(st.lists(st.sampled_from(TEXTS), min_size=3, max_size=7), st.integers(0, 2**16))
def test_batched_streams_equal_each_stream_alone_at_compiled_batch_sizes(
    module_engine: Engine, compiled_voices: VoiceSet, texts: list[str], seed: int
) -> None:
    observed: list[tuple[str, int, int]] = []
    module_engine.observer = lambda *o: observed.append(o)
    jobs = [("tiny", text) for text in texts]
    try:
        batched = synthesize_concurrently(module_engine, compiled_voices, jobs, seed)
    finally:
        module_engine.observer = None
    assert all(size in (1, 2, 4) and rows <= size for _, rows, size in observed)
    assert_each_equals_alone(batched, alone(compiled_voices, jobs))


def test_streams_that_start_together_share_every_call_on_the_compiled_stack(
    module_engine: Engine, compiled_voices: VoiceSet
) -> None:
    """Three identical streams of one sentence admitted in one turn move in step: every call runs three
    rows at compiled batch size 4, with one dummy row. (Later sentences come from the frontend thread one
    stream after another, so streams of several sentences drift apart by a sentence's phonemisation.)"""
    observed: list[tuple[str, int, int]] = []
    module_engine.observer = lambda *o: observed.append(o)
    try:
        sinks = [Sink() for _ in range(3)]
        with module_engine._cond:  # the engine takes arrivals under this lock: all three in one turn
            for sink in sinks:
                module_engine.submit(compiled_voices["tiny"], TEXTS[0], sink, paced=False)
        for sink in sinks:
            assert sink.done.wait(60) and sink.items[-1] is END
    finally:
        module_engine.observer = None
    calls = [(rows, size) for _, rows, size in observed]
    assert calls and all(call == (3, 4) for call in calls), observed
    batched = [np.concatenate([x for x in s.items if isinstance(x, np.ndarray)]) for s in sinks]
    assert_each_equals_alone(batched, alone(compiled_voices, [("tiny", TEXTS[0])] * 3))


def test_the_direct_runner_is_the_default_and_calls_in_the_callers_thread(tiny_addon_dir: Path) -> None:
    voice: Voice = tts_neuron.load(tiny_addon_dir)
    threads: set[str] = set()
    decoder = voice.stack.stack[0].children()[1].children()[1]
    assert isinstance(decoder.network.runner, DirectRunner)
    network = decoder.network.network
    network.register_forward_hook(lambda *_: threads.add(threading.current_thread().name))
    voice.synthesize(TEXTS[0])
    assert threads == {threading.current_thread().name}


class Sharing(TappedRunner):
    """A direct runner that says whether other streams' calls may join (as an engine with other streams in
    it does) and records each call's token length."""

    def __init__(self) -> None:
        super().__init__(lambda handle, inputs: self.lengths.append((handle.name, inputs[0].shape[1])))
        self.lengths: list[tuple[str, int]] = []
        self.sharing = False

    def shares(self) -> bool:
        return self.sharing


@pytest.mark.parametrize("voice_dir", ["tiny", "tacotron-en"])
def test_dynamic_stacks_pad_token_runs_only_when_other_streams_may_join(
    voice_dir: str, tiny_addon_dir: Path
) -> None:
    """A lone stream's encoder (and attention step) runs at the sentence's own length; with other streams
    to batch with, at the networks' token bucket; the audio is the same to float rounding."""
    runner = Sharing()
    shipped = Path(__file__).resolve().parent.parent / "addons"
    voice = tts_neuron.load(tiny_addon_dir if voice_dir == "tiny" else shipped / voice_dir, runner=runner)
    networks = voice.addon.networks.values()
    token_networks = {spec.name for spec in networks if spec.role in ("encoder", "decoder")}
    buckets = next(spec.buckets for spec in networks if spec.role == "encoder")
    text = "Hello there."
    n = len(next(iter(voice.frontend.sentences(text))).tokens)
    assert n not in buckets

    def token_lengths(sharing: bool) -> tuple[set[int], np.ndarray]:
        runner.sharing, runner.lengths = sharing, []
        audio = voice.synthesize(text, seed=3)
        return {length for name, length in runner.lengths if name in token_networks}, audio

    alone_lengths, alone_audio = token_lengths(False)
    shared_lengths, shared_audio = token_lengths(True)
    assert n in alone_lengths and min(b for b in buckets if b >= n) in shared_lengths
    assert n not in shared_lengths
    np.testing.assert_allclose(shared_audio, alone_audio, rtol=0, atol=1e-5)


class Gain(tts_neuron.StreamableBlock):
    """The guide's third-party block (docs/writing-blocks.md), as a plug-in writes it."""

    def __init__(self, gain: float = 0.5) -> None:
        self.gain = gain

    def stream(self, upstream: Any, features: Any) -> Iterator[Any]:
        for chunk in upstream:
            yield type(chunk)(chunk.data * self.gain, chunk.start, chunk.final)


def test_a_third_party_block_from_the_guide_runs_under_the_engine(
    tiny_addon_dir: Path, engine: Engine
) -> None:
    stack = [
        *tts_neuron.load(tiny_addon_dir).addon.stacks["cpu"],
        {"type": "tests.test_engine:Gain", "gain": 0.5},
    ]
    voice = tts_neuron.load(tiny_addon_dir, stack=stack, runner=engine)
    streamed = np.concatenate(list(engine.iterate(TEXTS[0], voice, paced=False)))
    plain = tts_neuron.load(tiny_addon_dir).synthesize(TEXTS[0])
    assert np.abs(streamed - 0.5 * plain).max() <= TOLERANCE


ATTENTION_TOLERANCE = 2e-4
"""The attention voice's batched steps differ from batch 1 by float rounding (the LSTM's matrix products
run in other kernels at batch > 1), and its autoregressive loop carries that rounding forward: we
measured at most 7e-5 over whole sentences of the shipped voice."""


def test_the_attention_voice_batched_equals_alone_to_rounding(engine: Engine) -> None:
    """The shipped attention voice, five streams of two texts at once: the decoder steps of streams of
    both texts (two memory lengths, two token buckets) batch with each other, the shorter memory padded
    to the longer (the step's `length_axes`)."""
    steps: list[int] = []
    engine.observer = lambda name, rows, size: steps.append(rows) if name == "decoder_step" else None
    voices = VoiceSet(engine)
    voices.add(Path(__file__).resolve().parent.parent / "addons" / "tacotron-en")
    jobs = [("tacotron-en", text) for text in [TEXTS[0], TEXTS[3], TEXTS[0], TEXTS[3], TEXTS[0]]]
    batched = synthesize_concurrently(engine, voices, jobs, seed=0)
    assert max(steps) > 3  # rows of both texts in one call
    assert_each_equals_alone(batched, alone(voices, jobs), ATTENTION_TOLERANCE)


STEP_BUCKETS = [8, 16, 40]


def step_call(step: AttentionStep, tokens: int, length: int) -> tuple[torch.Tensor, ...]:
    """One stream's step inputs for a memory of `tokens`, zero-padded to `length` (its bucket) and masked
    there, with attention weights so far on its own tokens only (as its decoder leaves them)."""
    memory, keys = torch.randn(1, tokens, step.sizes[-1]), torch.randn(1, tokens, step.query.out_features)
    weights = torch.softmax(torch.randn(1, tokens), dim=1)
    alignment = torch.stack([weights, weights + torch.rand(1, tokens)], dim=1)  # [1, 2, tokens]
    return (
        pad_length(memory, length),
        pad_length(keys, length),
        pad_length(torch.ones(1, tokens), length),
        pad_length(alignment, length, dim=2),
        torch.randn(1, step.state_size),
        torch.randn(1, step.n_mels),
        torch.bernoulli(torch.full((1, 2, step.prenet_channels), 0.5)) * 2,
    )


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(1, STEP_BUCKETS[-1]), min_size=1, max_size=6), st.booleans(), st.integers(0, 2**16)
)
def test_attention_steps_of_different_lengths_run_as_one_call_and_each_row_equals_it_alone(
    tokens: list[int], compiled: bool, seed: int
) -> None:
    """`run_batch` pads the calls of a network that declares its length axes (the attention step's
    memory, keys, mask and alignment) to the longest among them and cuts each row's outputs back: every
    row equals its call run alone. On a fixed-shape network each call is at its bucket and the batch runs
    at the largest of them, which was compiled (any other signature is refused)."""
    torch.manual_seed(seed)
    step = AttentionStep(
        n_mels=6, memory_channels=12, attention_dim=8, reduction=2, prenet_channels=8, attention_rnn=16,
        decoder_rnn=16, location_filters=4, location_kernel=5,
    ).eval()  # fmt: skip
    network: Any = step
    if compiled:
        shapes = [(batch, bucket) for batch in (1, 2, 4, 8) for bucket in STEP_BUCKETS]
        signatures = {
            (batch, bucket): tuple(
                TensorSpec.of(x.expand(batch, *x.shape[1:])) for x in step.example_inputs(bucket)
            )
            for batch, bucket in shapes
        }
        network = FixedShapeExecutor("step", dict.fromkeys(shapes, step), signatures)
    lengths = [next(b for b in STEP_BUCKETS if b >= n) if compiled else n for n in tokens]
    calls = [step_call(step, n, length) for n, length in zip(tokens, lengths, strict=True)]
    handle = NetworkHandle("step", network, DirectRunner(), AttentionStep.length_axes)
    assert len({batch_key(handle, call, across_lengths=True) for call in calls}) == 1
    exact = {batch_key(handle, call, across_lengths=False) for call in calls}  # an engine of several workers
    assert len(exact) == len(set(lengths))
    rows, size = run_batch(handle, calls)
    assert size == (next(b for b in (1, 2, 4, 8) if b >= len(calls)) if compiled else len(calls))
    with torch.inference_mode():
        for call, row in zip(calls, rows, strict=True):
            for got, want in zip(row, step(*call), strict=True):
                assert got.shape == want.shape
                torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE)
