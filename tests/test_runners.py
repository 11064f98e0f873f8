"""The call boundary: the batching runner gives every stream what it would get alone.

Batched equals alone is checked per stream for random mixes of texts, voices and arrival times, on the
dynamic stacks (exact batch sizes) and on the fixed-shape stack compiled at batch sizes 1, 2 and 4
(partial batches filled with dummy rows, which must never reach a real one).
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.conftest import edit_addon_json
from tts_neuron.backends.executor import FixedShapeExecutor, ShapeError, TensorSpec
from tts_neuron.runners import BatchingRunner, DirectRunner, StreamState
from tts_neuron.voice import Voice, VoiceSet
from tts_neuron_build.compiler import compile_addon

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump? She sells sea shells.",
    "Would you, could you, on a boat?",
    "Yes.",
]
TOLERANCE = 1e-5
"""What docs/serving.md claims: batched rows equal the stream alone to float rounding."""


class Rows(torch.nn.Module):
    """Row i of the output depends on row i of the input only; records the batch sizes it ran at."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 5))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.batches.append(x.shape[0])
        return x @ self.weight, x.sum(dim=-1)


def concurrently(calls: list, delays: list[float]) -> list:  # type: ignore[type-arg]
    """Run each call in its own thread after its delay; their results, in order."""
    results: list = [None] * len(calls)  # type: ignore[type-arg]

    def run(i: int) -> None:
        time.sleep(delays[i])
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_concurrent_calls_are_batched_and_each_caller_gets_its_own_rows() -> None:
    network = Rows()
    runner = BatchingRunner(max_batch=8, max_wait=0.2)
    handle = runner.handle("rows", network)
    assert handle(torch.ones(1, 4, 3))[0].shape == (1, 4, 5) and network.batches == [1]  # alone: inline
    inputs = [torch.randn(1, 4, 3) for _ in range(8)]

    def call(x: torch.Tensor):  # type: ignore[no-untyped-def]
        with runner.stream():
            return handle(x)

    ready = threading.Barrier(8)

    def synchronised(x: torch.Tensor):  # type: ignore[no-untyped-def]
        ready.wait()
        return call(x)

    results = concurrently([lambda x=x: synchronised(x) for x in inputs], [0.0] * 8)
    assert max(network.batches) > 1  # the calls met
    for x, (product, total) in zip(inputs, results, strict=True):
        with torch.inference_mode():
            alone = (x @ network.weight, x.sum(dim=-1))
        assert product.shape == (1, 4, 5) and total.shape == (1, 4)
        torch.testing.assert_close(product, alone[0], rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(total, alone[1], rtol=0, atol=TOLERANCE)


def test_a_partial_batch_is_padded_to_a_compiled_size_and_dummy_rows_stay_out() -> None:
    """Three calls on an executor compiled at batch 1, 2 and 4 run as one call of 4; each caller gets
    exactly its row, and the dummy row (a copy) is dropped."""
    seen: list[int] = []

    def artifact(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x * 2 + torch.arange(x.shape[0], dtype=x.dtype).view(-1, 1, 1) * 0  # rows independent

    signatures = {(b, 6): (TensorSpec((b, 6, 2), "float32"),) for b in (1, 2, 4)}
    executor = FixedShapeExecutor("net", dict.fromkeys(signatures, artifact), signatures)
    observed: list[tuple[str, int, int]] = []
    runner = BatchingRunner(max_batch=16, max_wait=0.5, observer=lambda *o: observed.append(o))
    handle = runner.handle("net", executor)
    assert handle.batch_sizes == [1, 2, 4]
    inputs = [torch.full((1, 6, 2), float(i + 1)) for i in range(3)]
    barrier = threading.Barrier(3)

    def call(x: torch.Tensor) -> torch.Tensor:
        with runner.stream():
            barrier.wait()
            return handle(x)

    results = concurrently([lambda x=x: call(x) for x in inputs], [0.0] * 3)
    assert seen == [4] and observed == [("net", 3, 4)]
    for x, y in zip(inputs, results, strict=True):
        assert y.shape == (1, 6, 2) and torch.equal(y, x * 2)


def test_the_most_urgent_stream_is_served_first() -> None:
    """With one row a call, the dispatcher serves a stream with no audio yet before streams that have
    audio, and among those the one with the least audio ahead of its playback."""
    order: list[float] = []
    gate = threading.Event()

    def network(x: torch.Tensor) -> torch.Tensor:
        gate.wait(timeout=10)
        order.append(float(x[0, 0]))
        return x

    runner = BatchingRunner(max_batch=1, max_wait=0.0, workers=1)
    handle = runner.handle("net", network)
    now = time.monotonic()
    blocker = StreamState()
    far_ahead = StreamState(first_audio=now, audio_seconds=5.0)
    just_ahead = StreamState(first_audio=now, audio_seconds=0.5)
    no_audio = StreamState()

    def call(state: StreamState, value: float) -> None:
        with runner.stream(state):
            handle(torch.full((1, 1), value))

    main = runner.stream()  # this thread counts as a stream too, so even the first call is queued
    main.__enter__()
    first = threading.Thread(target=call, args=(blocker, 0.0))
    first.start()
    time.sleep(0.2)  # the blocker's call is running and holds the dispatcher at the gate
    threads = [
        threading.Thread(target=call, args=a) for a in ((far_ahead, 3.0), (just_ahead, 2.0), (no_audio, 1.0))
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all three wait
    gate.set()
    for thread in [first, *threads]:
        thread.join(timeout=10)
    main.__exit__(None, None, None)
    assert order == [0.0, 1.0, 2.0, 3.0]


def test_an_error_reaches_every_caller_of_the_batch_and_the_runner_goes_on() -> None:
    signatures = {(1, 4): (TensorSpec((1, 4), "float32"),)}
    executor = FixedShapeExecutor("net", {(1, 4): lambda x: x}, signatures)
    runner = BatchingRunner()
    handle = runner.handle("net", executor)
    with pytest.raises(ShapeError, match="no compiled artifact"):
        handle(torch.zeros(1, 5))
    assert torch.equal(handle(torch.ones(1, 4)), torch.ones(1, 4))
    with pytest.raises(ValueError, match="at batch 1"):
        handle(torch.zeros(2, 4))


def synthesize_concurrently(voices: VoiceSet, runner: BatchingRunner, jobs: list[tuple[str, str]], seed: int):  # type: ignore[no-untyped-def]
    """Each (voice, text) job in its own stream thread, arriving at random times within 50 ms."""
    rng = random.Random(seed)

    def job(voice: str, text: str):  # type: ignore[no-untyped-def]
        with runner.stream():
            return voices.synthesize(text, voice)

    return concurrently([lambda v=v, t=t: job(v, t) for v, t in jobs], [rng.uniform(0, 0.05) for _ in jobs])


@pytest.fixture(scope="module")
def dynamic_voices(
    tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[VoiceSet, BatchingRunner]:
    """Two duration voices with different weights (the tiny fixture at two seeds) on one runner."""
    from tests.conftest import write_tiny_addon

    other = write_tiny_addon(tmp_path_factory.mktemp("other") / "tiny", seed=1)
    edit_addon_json(other, lambda c: c.update(name="tiny-other"))
    runner = BatchingRunner(max_batch=8, max_wait=0.01)
    voices = VoiceSet(runner)
    voices.add(tiny_addon_dir)
    voices.add(other)
    return voices, runner


def alone(voices: VoiceSet, jobs: list[tuple[str, str]]) -> list[np.ndarray]:
    """The same jobs one after another, each with the direct runner's behaviour (nothing to batch with)."""
    return [voices.synthesize(text, voice) for voice, text in jobs]


def assert_each_equals_alone(batched: list[np.ndarray], reference: list[np.ndarray]) -> None:
    for got, want in zip(batched, reference, strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max(initial=0) <= TOLERANCE


@settings(max_examples=6, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["tiny", "tiny-other"]), st.sampled_from(TEXTS)), min_size=2, max_size=8
    ),
    st.integers(0, 2**16),
)
def test_batched_streams_equal_each_stream_alone_on_the_dynamic_stack(
    dynamic_voices: tuple[VoiceSet, BatchingRunner], jobs: list[tuple[str, str]], seed: int
) -> None:
    voices, runner = dynamic_voices
    batches: list[int] = []
    runner.observer = lambda name, rows, size: batches.append(rows)
    batched = synthesize_concurrently(voices, runner, jobs, seed)
    runner.observer = None
    assert_each_equals_alone(batched, alone(voices, jobs))


@pytest.fixture(scope="module")
def batched_compiled(
    tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[VoiceSet, BatchingRunner, list]:  # type: ignore[type-arg]
    """The tiny voice's fixed-shape stack compiled (CPU target) at batch sizes 1, 2 and 4."""
    root = Path(shutil.copytree(tiny_addon_dir, tmp_path_factory.mktemp("batched") / "tiny"))

    def batch_sizes(config: dict) -> None:  # type: ignore[type-arg]
        for network in config["networks"].values():
            network["batch_sizes"] = [1, 2, 4]

    edit_addon_json(root, batch_sizes)
    compile_addon(root, "cpu", progress=False)
    observed: list = []  # type: ignore[type-arg]
    runner = BatchingRunner(max_batch=8, max_wait=0.01, observer=lambda *o: observed.append(o))
    voices = VoiceSet(runner)
    voices.add(root, stack="neuron", target="cpu")
    return voices, runner, observed


@settings(max_examples=5, deadline=None)
@given(st.lists(st.sampled_from(TEXTS), min_size=3, max_size=7), st.integers(0, 2**16))
def test_batched_streams_equal_each_stream_alone_at_compiled_batch_sizes(
    batched_compiled: tuple[VoiceSet, BatchingRunner, list],
    texts: list[str],
    seed: int,  # type: ignore[type-arg]
) -> None:
    voices, runner, observed = batched_compiled
    jobs = [("tiny", text) for text in texts]
    observed.clear()
    batched = synthesize_concurrently(voices, runner, jobs, seed)
    assert all(size in (1, 2, 4) and rows <= size for _, rows, size in observed)
    assert_each_equals_alone(batched, alone(voices, jobs))


def test_batching_happens_and_pads_on_the_compiled_stack(
    batched_compiled: tuple[VoiceSet, BatchingRunner, list],  # type: ignore[type-arg]
) -> None:
    """Three identical streams started together share their calls: with a long straggler wait, every
    batch waits for all three, and three rows run at compiled batch size 4 with one dummy row."""
    voices, runner, observed = batched_compiled
    observed.clear()
    barrier = threading.Barrier(3)

    def job() -> np.ndarray:
        with runner.stream():
            barrier.wait()
            return voices.synthesize(TEXTS[2], "tiny")

    runner.max_wait = 2.0
    try:
        batched = concurrently([job] * 3, [0.0] * 3)
    finally:
        runner.max_wait = 0.01
    assert observed and all((rows, size) == (3, 4) for _, rows, size in observed)
    assert_each_equals_alone(batched, alone(voices, [("tiny", TEXTS[2])] * 3))


def test_the_direct_runner_is_the_default_and_calls_in_the_callers_thread(tiny_addon_dir: Path) -> None:
    voice: Voice = tts_neuron.load(tiny_addon_dir)
    threads: set[str] = set()
    decoder = voice.stack.stack[0].children()[1].children()[1]
    assert isinstance(decoder.network.runner, DirectRunner)
    network = decoder.network.network
    network.register_forward_hook(lambda *_: threads.add(threading.current_thread().name))
    voice.synthesize(TEXTS[0])
    assert threads == {threading.current_thread().name}


ATTENTION_TOLERANCE = 2e-4
"""The attention voice's batched steps differ from batch 1 by float rounding (the LSTM's matrix products
run in other kernels at batch > 1), and its autoregressive loop carries that rounding forward: we
measured at most 7e-5 over whole sentences of the shipped voice."""


def test_the_attention_voice_batched_equals_alone_to_rounding() -> None:
    """The shipped attention voice, five streams of two texts at once: the decoder steps of streams of
    one text (one memory length) batch with each other."""
    runner = BatchingRunner(max_batch=8, max_wait=0.01)
    steps: list[int] = []
    runner.observer = lambda name, rows, size: steps.append(rows) if name == "decoder_step" else None
    voices = VoiceSet(runner)
    voices.add(Path(__file__).resolve().parent.parent / "addons" / "tacotron-en")
    jobs = [("tacotron-en", text) for text in [TEXTS[0], TEXTS[3], TEXTS[0], TEXTS[3], TEXTS[0]]]
    batched = synthesize_concurrently(voices, runner, jobs, seed=0)
    assert max(steps) > 1
    for got, want in zip(batched, alone(voices, jobs), strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= ATTENTION_TOLERANCE
