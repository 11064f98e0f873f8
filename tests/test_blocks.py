"""The abstractions and built-in blocks, each on its own, with streamed output checked against offline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_neuron.audio import AudioConfig, GriffinLim, spectral_convergence
from tts_neuron.blocks.acoustic import Decoder, Upsampler, durations_to_frames, upsample
from tts_neuron.blocks.base import (
    CONTINUES,
    QUEUED_FRAMES,
    Chunk,
    Features,
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    StreamablePipeline,
    StreamableStack,
    construct,
)
from tts_neuron.blocks.buffer import FrameBuffer
from tts_neuron.blocks.fixed import PaddedGriffinLim
from tts_neuron.blocks.vocoder import GriffinLimVocoder
from tts_neuron.blocks.windows import CONTINUING_GROWTH, DYNAMIC_MULTIPLE, windows
from tts_neuron.errors import StackError
from tts_neuron.models.fastspeech import MelDecoder
from tts_neuron.models.tacotron import Postnet


def split(data: torch.Tensor, sizes: list[int]) -> Iterator[Chunk]:
    """Cut `data` into chunks of the given sizes (cycled), the last one final."""
    start, i = 0, 0
    while True:
        stop = min(start + sizes[i % len(sizes)], len(data))
        yield Chunk(data[start:stop], start, stop == len(data))
        if stop == len(data):
            return
        start, i = stop, i + 1


def joined(chunks: Iterator[Chunk]) -> tuple[torch.Tensor, list[Chunk]]:
    got = list(chunks)
    assert got, "a stream yields at least its final chunk"
    assert [c.final for c in got] == [False] * (len(got) - 1) + [True]
    for before, after in zip(got, got[1:], strict=False):
        assert after.start == before.end, "chunks are contiguous"
    assert got[0].start == 0
    return torch.cat([c.data for c in got]), got


def log_durations(frames: list[int]) -> torch.Tensor:
    return torch.log1p(torch.tensor([frames], dtype=torch.float32))  # [1, N]


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.integers(0, 12), min_size=1, max_size=25),
    first=st.integers(1, 20),
    size=st.integers(1, 40),
)
def test_upsampler_frames_do_not_depend_on_chunk_sizes(frames: list[int], first: int, size: int) -> None:
    encodings = torch.randn(1, len(frames), 3)
    features = {"encodings": encodings, "log_durations": log_durations(frames)}
    out, chunks = joined(Upsampler(chunk_frames=size, first_chunk_frames=first).stream(None, features))
    expected = torch.repeat_interleave(encodings[0], torch.tensor(frames), dim=0)
    assert torch.equal(out, expected)
    assert all(c.data.shape[0] <= (first if i == 0 else size) for i, c in enumerate(chunks))


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.integers(0, 9), min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_upsample_any_partition_equals_whole(frames: list[int], cuts: list[int]) -> None:
    encodings = torch.randn(len(frames), 2)
    ends = torch.cumsum(torch.tensor(frames), 0)
    total = int(ends[-1])
    bounds = sorted({0, total, *(c % (total + 1) for c in cuts)})
    pieces = [upsample(encodings, ends, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
    whole = torch.repeat_interleave(encodings, torch.tensor(frames), dim=0)
    assert torch.equal(torch.cat(pieces) if pieces else whole[:0], whole)


def test_durations_to_frames_rounds_scales_and_clamps() -> None:
    logd = log_durations([0, 1, 4, 250])[0]
    assert durations_to_frames(logd, 1.0, 100).tolist() == [0, 1, 4, 100]
    assert durations_to_frames(logd, 2.0, 1000).tolist() == [0, 2, 8, 500]
    assert durations_to_frames(torch.tensor([-3.0]), 1.0, 10).tolist() == [0]


def test_upsampler_zero_frames_still_ends_the_utterance() -> None:
    features = {"encodings": torch.randn(1, 2, 3), "log_durations": log_durations([0, 0])}
    (chunk,) = Upsampler().stream(None, features)
    assert chunk.final and chunk.data.shape == (0, 3)


@pytest.mark.parametrize("length_scale", [0.0, 11.0])
def test_upsampler_refuses_bad_length_scale(length_scale: float) -> None:
    with pytest.raises(ValueError, match="length_scale"):
        Upsampler(length_scale=length_scale)


def make_decoder(layers: int = 3, kernel_size: int = 5) -> Decoder:
    torch.manual_seed(1)
    net = MelDecoder(in_channels=4, channels=8, layers=layers, kernel_size=kernel_size, n_mels=5).eval()
    return Decoder("decoder", net, net.receptive_radius)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 90), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5))
def test_decoder_streamed_equals_offline(length: int, sizes: list[int]) -> None:
    decoder = make_decoder()
    frames = torch.randn(length, 4)
    out, _ = joined(decoder.stream(split(frames, sizes), {}))
    assert out.shape == (length, 5)
    with torch.inference_mode():
        offline = decoder.network(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(out, offline, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 300),
    continuing=st.booleans(),
    arrivals=st.integers(1, 40),
    queued=st.integers(0, 200),
)
def test_windows_of_a_continuing_sentence_start_full_and_grow_past_it(
    length: int, continuing: bool, arrivals: int, queued: int
) -> None:
    """A text's first sentence: cores of 4, doubling up to 16. A continuing one (audio of the call plays
    before it): 16, or half the frames its listener has queued (down to a multiple of DYNAMIC_MULTIPLE) if
    more, up to CONTINUING_GROWTH times 16,
    then doubling up to that. The output is the same either way."""
    net = make_decoder().network
    decoder = Decoder("decoder", net, net.receptive_radius, first_chunk_frames=4, chunk_frames=16)
    frames = torch.randn(length, 4)
    features = {CONTINUES: torch.tensor(continuing), QUEUED_FRAMES: torch.tensor(queued)}
    out, chunks = joined(decoder.stream(split(frames, [arrivals]), features))
    largest = 16 * CONTINUING_GROWTH
    queued_core = queued // 2 // DYNAMIC_MULTIPLE * DYNAMIC_MULTIPLE  # rounded down: a few lengths
    size, largest = (min(largest, max(16, queued_core)), largest) if continuing else (4, 16)
    for chunk in chunks[:-1]:
        assert len(chunk.data) == size
        size = min(2 * size, largest)
    assert len(chunks[-1].data) <= size
    with torch.inference_mode():
        offline = net(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(out, offline, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 200),
    halo=st.integers(0, 12),
    multiple=st.integers(1, 24),
    arrivals=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    core=st.sampled_from([None, 8, 32]),
)
def test_windows_rounded_to_a_multiple_take_more_context_and_keep_their_cores(
    length: int, halo: int, multiple: int, arrivals: list[int], core: int | None
) -> None:
    """Every window's length is a multiple where the utterance has the frames before it (else it starts at
    the utterance's first frame, and if it is the last, its `end_pad` would make it one), its context is
    at least the halo each side where the utterance allows, its frames are the utterance's, and the
    cores tile the utterance."""
    frames = torch.arange(length).unsqueeze(1).float()  # [T, 1]: each frame its own index
    done = 0
    for window in windows(split(frames, arrivals), halo, core, core and core // 4, multiple):
        n = window.hi - window.lo
        assert n % multiple == 0 or window.lo == 0
        assert (n + window.end_pad) % multiple == 0 if window.final else window.end_pad == 0
        assert window.end_pad < multiple and (window.end_pad == 0 or window.lo == 0)
        assert n - multiple < window.hi - max(0, window.start - halo)  # rounded up, never further
        assert window.start - window.lo >= min(halo, window.start)
        assert window.hi - window.stop == min(halo, length - window.stop)
        assert torch.equal(window.frames[:, 0], torch.arange(window.lo, window.hi).float())
        assert window.start == done
        done = window.stop
    assert done == length


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 120), multiple=st.integers(1, 40), arrivals=st.integers(1, 30))
def test_a_decoder_with_windows_rounded_to_any_multiple_equals_offline(
    length: int, multiple: int, arrivals: int
) -> None:
    decoder = make_decoder()
    frames = torch.randn(length, 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tts_neuron.blocks.acoustic.DYNAMIC_MULTIPLE", multiple)
        out, _ = joined(decoder.stream(split(frames, [arrivals]), {}))
    with torch.inference_mode():
        offline = decoder.network(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(out, offline, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 150),
    arrivals=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    postnet=st.booleans(),
    sizes=st.sampled_from([(None, None), (4, 16), (1, 1), (16, 128)]),
    kernel_size=st.sampled_from([3, 5]),
)
def test_a_carried_network_is_fed_each_frame_once_and_equals_offline(
    length: int, arrivals: list[int], postnet: bool, sizes: tuple[int | None, int | None], kernel_size: int
) -> None:
    """The mel decoder and the postnet (which adds its input) in their carried forms: every frame goes in
    once, the frames past the end go in masked, and the output equals the network on the whole
    utterance."""
    torch.manual_seed(length)
    if postnet:
        net: torch.nn.Module = Postnet(n_mels=5, channels=8, layers=3, kernel_size=kernel_size).eval()
        frames = torch.randn(length, 5)
    else:
        net = MelDecoder(in_channels=4, channels=8, layers=3, kernel_size=kernel_size, n_mels=5).eval()
        frames = torch.randn(length, 4)
    carried = net.carried_form()
    fed: list[int] = []

    def counting(x: torch.Tensor, mask: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fed.append(int(mask.sum()))
        assert not mask[0, int(mask.sum()) :].any(), "only the frames past the end are masked"
        return carried(x, mask, *state)

    decoder = Decoder("decoder", carried, net.receptive_radius, 1, *sizes)
    assert decoder.carried is carried and carried.delay == net.receptive_radius
    decoder.network = counting
    out, _ = joined(decoder.stream(split(frames, arrivals), {}))
    with torch.inference_mode():
        offline = net(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(out, offline, rtol=1e-5, atol=1e-5)
    assert sum(fed) == length


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 80), arrivals=st.integers(1, 90))
def test_an_utterance_in_one_window_runs_the_plain_form_and_longer_ones_the_carried(
    length: int, arrivals: int
) -> None:
    """With its plain form beside the carried one (`whole`), a decoder runs an utterance that fits one
    window through the plain form, which needs no masked frames to finish it, and any other through the
    carried form; the output equals the network on the whole utterance either way."""
    net = make_decoder().network
    calls: list[str] = []

    def counted(form: str, network: Any) -> Any:
        def run(*inputs: torch.Tensor) -> Any:
            calls.append(form)
            return network(*inputs)

        return run

    carried = net.carried_form()
    decoder = Decoder("decoder", carried, net.receptive_radius, 1, 16, 64, whole=counted("whole", net))
    decoder.network = counted("carried", carried)
    frames = torch.randn(length, 4)
    out, _ = joined(decoder.stream(split(frames, [arrivals]), {}))
    with torch.inference_mode():
        offline = net(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(out, offline, rtol=1e-5, atol=1e-5)
    if length <= 16:  # the first core holds it: the first window is the last, however the frames arrive
        assert calls == ["whole"]
    else:
        assert "whole" not in calls and calls


@pytest.mark.parametrize("delay", [-1, 2.5, "3", True])
def test_a_carried_form_with_a_bad_delay_is_refused(delay: object) -> None:
    carried = make_decoder().network.carried_form()
    carried.delay = delay
    with pytest.raises(ValueError, match="carried form with delay"):
        Decoder("decoder", carried, 6)


def test_decoder_radius_comes_from_the_network() -> None:
    assert make_decoder(layers=3, kernel_size=5).radius == 6


def test_decoder_streams_before_the_utterance_ends() -> None:
    decoder = make_decoder()
    pulled: list[int] = []

    def upstream() -> Iterator[Chunk]:
        for chunk in split(torch.randn(100, 4), [10]):
            pulled.append(chunk.end)
            yield chunk

    first = next(decoder.stream(upstream(), {}))
    assert first.start == 0 and not first.final
    assert pulled[-1] < 100, "the first mel chunk came before the whole utterance was upsampled"
    assert first.end == pulled[-1] - decoder.radius


def test_frame_buffer_refuses_gaps_and_dropped_frames() -> None:
    buffer = FrameBuffer()
    buffer.append(Chunk(torch.zeros(5, 2), 0, False))
    with pytest.raises(ValueError, match="contiguous"):
        buffer.append(Chunk(torch.zeros(5, 2), 7, False))
    buffer.drop_before(3)
    with pytest.raises(IndexError):
        buffer.window(2, 4)
    assert buffer.window(3, 5).shape == (2, 2)


class Record(SequenceBlock):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __call__(self, features: Features) -> Features:
        self.log.append(self.name)
        return {**features, self.name: torch.tensor(len(self.log))}


class Count(StreamableBlock):
    """Emits `n` one-frame chunks, or adds 1 to each upstream chunk."""

    def __init__(self, n: int = 3) -> None:
        self.n = n

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        if upstream is None:
            return (Chunk(torch.full((1,), float(i)), i, i == self.n - 1) for i in range(self.n))
        return (Chunk(c.data + 1, c.start, c.final) for c in upstream)


def test_container_runs_children_in_order_and_keeps_features() -> None:
    log: list[str] = []
    out = SequenceBlockContainer([Record("a", log), Record("b", log)])({"x": torch.zeros(1)})
    assert log == ["a", "b"] and set(out) == {"x", "a", "b"} and int(out["b"]) == 2


def test_stack_pipes_blocks_in_order() -> None:
    out, _ = joined(StreamableStack([Count(4), Count(), Count()]).stream(None, {}))
    assert out.tolist() == [2.0, 3.0, 4.0, 5.0]


def test_pipeline_runs_its_sequence_block_only_when_pulled() -> None:
    log: list[str] = []
    stream = StreamablePipeline(Record("enc", log), Count(2)).stream(None, {})
    assert log == []
    next(stream)
    assert log == ["enc"]


def test_a_nested_stack_stands_where_one_block_stands() -> None:
    nested = StreamableStack([Count(3), StreamableStack([Count(), Count()])])
    assert joined(nested.stream(None, {}))[0].tolist() == [2.0, 3.0, 4.0]


def test_griffin_lim_block_streams_contiguous_audio_close_to_offline() -> None:
    cfg = AudioConfig()
    torch.manual_seed(0)
    # a smooth, speech-like log-mel: a few formant-like bumps drifting over 200 frames
    t = torch.linspace(0, 1, 200)[:, None]
    bands = torch.arange(cfg.n_mels)[None, :].float()
    mel = (
        -6
        + 4 * torch.exp(-((bands - 10 - 8 * torch.sin(6 * t)) ** 2) / 20)
        + 3 * torch.exp(-((bands - 35) ** 2) / 40)
    )
    block = GriffinLimVocoder(
        cfg, torch.device("cpu"), window_frames=48, context_frames=16, crossfade_frames=4
    )
    streamed, _ = joined(block.stream(split(mel, [17, 40]), {}))
    assert streamed.shape == (200 * cfg.hop_length,)
    offline = GriffinLim(cfg)(mel)
    assert spectral_convergence(offline, streamed, cfg) < 0.35


def test_padded_griffin_lim_equals_the_plain_block_where_no_window_is_padded() -> None:
    """PaddedGriffinLim only differs where a window lacks context (the utterance's edges), and there it
    pads with silence: every window with full context gives the plain block's samples exactly."""
    cfg = AudioConfig()
    hop, window, context, fade = cfg.hop_length, 64, 16, 4
    mel = torch.randn(400, cfg.n_mels) - 6  # windows start at 0, 64, ..., 384
    kwargs = {"n_iter": 4, "window_frames": window, "context_frames": context, "crossfade_frames": fade}
    plain = GriffinLimVocoder(cfg, torch.device("cpu"), **kwargs)
    padded = PaddedGriffinLim(cfg, torch.device("cpu"), **kwargs)
    a, _ = joined(plain.stream(split(mel, [30, 100]), {}))
    b, _ = joined(padded.stream(split(mel, [30, 100]), {}))
    assert a.shape == b.shape == (400 * hop,)
    # The first window lacks its left context (and fades into the second), the last its right context.
    interior = slice((window + fade) * hop, 384 * hop)
    assert torch.equal(a[interior], b[interior])
    assert not torch.equal(a[: window * hop], b[: window * hop])


class Typed(StreamableBlock):
    """A block whose constructor annotations the stack's values are checked against."""

    def __init__(
        self, gain: float = 1.0, steps: int = 1, label: str | None = None, sizes: list[int] | None = None
    ) -> None:
        self.gain, self.steps, self.label, self.sizes = gain, steps, label, sizes

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        yield from upstream or ()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gain": "loud"}, r"stack\[0\]: Typed: parameter 'gain' expects float, got str \"loud\""),
        ({"steps": 2.5}, r"parameter 'steps' expects int, got float 2.5"),
        ({"steps": True}, r"parameter 'steps' expects int, got bool true"),
        ({"label": 3}, r"parameter 'label' expects str \| None, got int 3"),
        ({"sizes": [1, "2"]}, r"parameter 'sizes' expects list\[int\] \| None"),
    ],
)
def test_stack_values_are_checked_against_annotations(params: dict, message: str) -> None:
    with pytest.raises(StackError, match=message):
        construct(Typed, params, "stack[0]")


def test_values_that_fit_their_annotations_build() -> None:
    block = construct(Typed, {"gain": 2, "steps": 3, "label": None, "sizes": [1, 2]}, "stack[0]")
    assert (block.gain, block.steps, block.label, block.sizes) == (2, 3, None, [1, 2])
    with pytest.raises(StackError, match="Upsampler: parameter 'chunk_frames' expects int"):
        construct(Upsampler, {"chunk_frames": "64"}, "stack[0]")
