"""The CPU forms of networks equal the networks: channels-last convolutions (they share their parameters and
leave the original network as it was) and the VITS flow's and text encoder's time-major forms."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tts_neuron.blocks.acoustic import Decoder
from tts_neuron.blocks.base import Chunk
from tts_neuron.blocks.vocoder import Vocoder
from tts_neuron.blocks.windows import Window
from tts_neuron.models import ChannelsLastConv1d, channels_last
from tts_neuron.models.protocols import cpu_form
from tts_neuron.models.vits import EncoderCpuForm, FlowCpuForm, VitsEncoder, VitsFlow, VitsGenerator


@settings(max_examples=40, deadline=None)
@given(
    transposed=st.booleans(),
    channels=st.sampled_from([(1, 1), (4, 8), (8, 4), (6, 6)]),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    grouped=st.booleans(),
    length=st.integers(1, 40),
    batch=st.integers(1, 3),
    layout=st.sampled_from(["plain", "channels_last", "sliced"]),
)
def test_a_channels_last_convolution_equals_the_plain_one(
    transposed: bool, channels: tuple[int, int], kernel: int, stride: int, dilation: int, grouped: bool,
    length: int, batch: int, layout: str,
) -> None:  # fmt: skip
    cin, cout = channels
    groups = 2 if grouped and cin % 2 == 0 and cout % 2 == 0 else 1
    padding = dilation * (kernel - 1) // 2
    if transposed:
        padding = min(padding, (kernel - 1) * dilation)
        output_padding = stride - 1 if stride > dilation else 0
        conv: nn.Module = nn.ConvTranspose1d(
            cin, cout, kernel, stride, padding, output_padding, groups, dilation=dilation
        )
    else:
        if length + 2 * padding < dilation * (kernel - 1) + 1:
            length = dilation * (kernel - 1) + 1
        conv = nn.Conv1d(cin, cout, kernel, stride, padding, dilation, groups)
    x = torch.randn(batch, cin, length + 3)
    if layout == "channels_last":  # [B, C, T] viewed from [B, T, C] memory, as a channels-last layer makes
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    x = x[..., 3:] if layout == "sliced" else x[..., :length]
    with torch.no_grad():
        torch.testing.assert_close(ChannelsLastConv1d(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_channels_last_copies_containers_shares_parameters_and_leaves_the_original() -> None:
    inner = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose1d(4, 2, 4, 2, padding=1))
    network = nn.Sequential(nn.Identity(), inner)
    twin = channels_last(network)
    assert isinstance(network[1][0], nn.Conv1d) and isinstance(network[1][2], nn.ConvTranspose1d)
    assert isinstance(twin[1][0], ChannelsLastConv1d) and isinstance(twin[1][2], ChannelsLastConv1d)
    assert twin[0] is network[0] and twin[1][1] is network[1][1]  # nothing to change: the same module
    assert {p.data_ptr() for p in twin.parameters()} == {p.data_ptr() for p in network.parameters()}
    assert twin[1][0].weight is network[1][0].weight
    x = torch.randn(2, 4, 9)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), network(x), atol=1e-6, rtol=1e-5)
    no_convolution = nn.Sequential(nn.Linear(3, 3))
    assert channels_last(no_convolution) is no_convolution


def test_refuses_padding_it_cannot_keep() -> None:
    try:
        ChannelsLastConv1d(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"))
    except ValueError as err:
        assert "zero padding" in str(err)
    else:
        raise AssertionError("no error")


def test_the_vits_generator_runs_channels_last_on_cpu_and_gives_the_same_audio() -> None:
    """Both HiFi-GAN residual kinds, every tensor random: the CPU form is the same function."""
    torch.manual_seed(0)
    for kind, kernels, dilations in (("2", [3, 5], [[1, 2], [2, 6]]), ("1", [3, 7], [[1, 3], [1, 3]])):
        generator = VitsGenerator(
            inter_channels=16, resblock=kind, resblock_kernel_sizes=kernels,
            resblock_dilation_sizes=dilations, upsample_rates=[4, 4], upsample_initial_channel=32,
            upsample_kernel_sizes=[8, 8],
        )  # fmt: skip
        fast = cpu_form(generator)
        assert any(isinstance(m, ChannelsLastConv1d) for m in fast.modules())
        assert not any(isinstance(m, ChannelsLastConv1d) for m in generator.modules())
        z, mask = torch.randn(2, 13, 16), torch.ones(2, 13)
        with torch.no_grad():
            torch.testing.assert_close(fast(z, mask), generator(z, mask), atol=1e-5, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 40),
    multiple=st.integers(2, 24),
    first=st.sampled_from([4, 64]),
    carried=st.booleans(),
)
def test_the_generator_cpu_form_pads_a_whole_utterance_window_and_streams_the_same_audio(
    length: int, multiple: int, first: int, carried: bool
) -> None:
    """A last window that starts with the utterance cannot take context to round its length; the CPU form
    masks every layer, so the Vocoder pads it past the end instead, and streamed audio equals the network
    on the whole utterance. So does a Vocoder of the carried form, which runs such a window through the
    CPU form (`whole`)."""
    torch.manual_seed(length)
    generator = VitsGenerator(
        inter_channels=8, resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [2, 6]],
        upsample_rates=[4, 4], upsample_initial_channel=16, upsample_kernel_sizes=[8, 8],
    )  # fmt: skip
    fast, radius, hop = cpu_form(generator), generator.receptive_radius, generator.hop
    vocoder = (
        Vocoder("vocoder", fast.carried_form(), radius, hop, first, 64, whole=fast)
        if carried
        else Vocoder("vocoder", fast, radius, hop, first, 64)
    )
    assert vocoder.pads_end and not Vocoder("plain", generator, 1, generator.hop).pads_end
    z = torch.randn(length, 8)
    padded = []
    place = vocoder.place

    def placed(window: Window) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, mask, offset = place(window)
        padded.append(x.shape[1] - len(window.frames))  # frames past the utterance's end
        return x, mask, offset

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tts_neuron.blocks.acoustic.DYNAMIC_MULTIPLE", multiple)
        patch.setattr(vocoder, "place", placed)
        audio = torch.cat([chunk.data for chunk in vocoder.stream(iter([Chunk(z, 0, True)]), {})])
    with torch.no_grad():
        whole = generator(z[None], torch.ones(1, length))[0]
    torch.testing.assert_close(audio, whole, atol=1e-5, rtol=1e-4)
    if first >= length and length % multiple:
        assert padded == [-length % multiple]  # one window, the whole utterance, padded


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["1", "2"]),
    speakers=st.sampled_from([1, 3]),
    length=st.integers(1, 60),
    arrivals=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    sizes=st.sampled_from([(8, 128), (1, 1), (None, None), (5, 16)]),
    seed=st.integers(0, 2**16),
)
def test_the_carried_vits_generator_is_fed_each_frame_once_and_equals_the_generator(
    kind: str, speakers: int, length: int, arrivals: list[int], sizes: tuple[int | None, int | None],
    seed: int,
) -> None:  # fmt: skip
    """HiFi-GAN's carried form in a `Vocoder` (the Piper stacks' generator block), both residual kinds,
    transposed convolutions whose kernels span two and three input frames, every tensor random: each
    frame goes in once, and the streamed audio is as near the generator in float64 as the generator in
    float32 is, whatever the chunks and windows."""
    torch.manual_seed(seed)
    generator = small_generator(kind, speakers)
    before = copy.deepcopy(generator.state_dict())
    speaker = torch.tensor([seed % speakers]) if speakers > 1 else None
    conditions = ("speaker",) if speaker is not None else ()
    carried = cpu_form(generator).carried_form()
    block = Vocoder(
        "vocoder", carried, generator.receptive_radius, generator.hop, *sizes, conditions=conditions
    )
    z = torch.randn(length, 8)
    streamed, fed = streamed_counting(block, z, arrivals, speaker)
    with torch.inference_mode():
        exact = copy.deepcopy(generator).double()(z[None].double(), torch.ones(1, length).double(), speaker)
        plain = generator(z[None], torch.ones(1, length), speaker)[0]
    plain_error = (plain.double() - exact[0]).abs().max().item()
    assert streamed.shape == plain.shape and sum(fed) == length
    assert (streamed.double() - exact[0]).abs().max().item() <= 10 * plain_error + 1e-5
    assert_untouched(generator, before)


def small_generator(kind: str, speakers: int = 1) -> VitsGenerator:
    """A perturbed HiFi-GAN of either residual kind whose transposed kernels span two and three frames."""
    generator = VitsGenerator(
        n_speakers=speakers, gin_channels=6 if speakers > 1 else 0, inter_channels=8, resblock=kind,
        resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [2, 1]], upsample_rates=[4, 2, 2],
        upsample_initial_channel=16, upsample_kernel_sizes=[8, 4, 6],
    ).eval()  # fmt: skip
    perturbed(generator)
    return generator


def small_flow(speakers: int) -> VitsFlow:
    """A perturbed flow of 8 channels (12 hidden)."""
    flow = VitsFlow(n_speakers=speakers, gin_channels=6 if speakers > 1 else 0, inter_channels=8,
                    hidden_channels=12).eval()  # fmt: skip
    perturbed(flow)
    return flow


@pytest.mark.parametrize(
    ("make", "conditions"),
    [
        (lambda: cpu_form(small_generator("1")).carried_form(), ()),
        (lambda: cpu_form(small_generator("2")).carried_form(), ()),
        (lambda: small_flow(1).carried_form(), ()),
        (lambda: small_flow(3).carried_form(), (torch.tensor([2]),)),
    ],
    ids=["generator-1", "generator-2", "flow", "flow-3-speakers"],
)
def test_carried_calls_of_streams_at_different_points_batch_as_alone(
    make: Callable[[], nn.Module], conditions: tuple[torch.Tensor, ...]
) -> None:
    """One batched call of the carried HiFi-GAN or flow whose rows are an utterance's first call, a middle
    one, a last one (frames past the end masked) and a whole short utterance gives each row what its call
    alone gives, audio and state: the masks of one row never reach another's, and a first call alone
    (which computes from the utterance's start only) equals the same row among others (the engine
    batches such calls across streams)."""
    torch.manual_seed(0)
    carried = make()
    n = carried.delay + 16
    with torch.inference_mode():
        start = carried.initial_state(torch.float32, torch.device("cpu"))
        _, *later = carried(torch.randn(1, n, 8), torch.ones(1, n), *conditions, *start)
        rows = [  # (frames, mask, state)
            (torch.randn(1, n, 8), torch.ones(1, n), start),
            (torch.randn(1, n, 8), torch.ones(1, n), tuple(later)),
            (torch.randn(1, n, 8), (torch.arange(n) < 5).float()[None], tuple(later)),
            (torch.randn(1, n, 8), (torch.arange(n) < 3).float()[None], start),
        ]
        alone = [carried(x * mask[..., None], mask, *conditions, *state) for x, mask, state in rows]
        batched = carried(
            torch.cat([x * mask[..., None] for x, mask, _ in rows]),
            torch.cat([mask for _, mask, _ in rows]),
            *(condition.expand(len(rows)) for condition in conditions),
            *(torch.cat(parts) for parts in zip(*(state for _, _, state in rows), strict=True)),
        )
    for i, outputs in enumerate(alone):
        for one, many in zip(outputs, batched, strict=True):
            torch.testing.assert_close(many[i : i + 1], one, atol=1e-5, rtol=1e-5)


def streamed_counting(
    block: Decoder, z: torch.Tensor, arrivals: list[int], speaker: torch.Tensor | None
) -> tuple[torch.Tensor, list[int]]:
    """z [T, C] streamed through `block` in chunks of the arrival sizes in turn: its output, and the
    unmasked frames of each call of its network (a carried form is fed each frame once)."""
    network, fed = block.network, []

    def counting(x: torch.Tensor, mask: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fed.append(int(mask.sum()))
        return network(x, mask, *rest)

    block.network = counting
    ends = [0]
    while ends[-1] < len(z):
        ends.append(min(len(z), ends[-1] + arrivals[len(ends) % len(arrivals)]))
    chunks = [Chunk(z[a:b], a, b == len(z)) for a, b in zip(ends, ends[1:], strict=False)]
    features = {} if speaker is None else {"speaker": speaker}
    with torch.inference_mode():
        return torch.cat([chunk.data for chunk in block.stream(iter(chunks), features)]), fed


def perturbed(network: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter random (a fresh flow is the identity; zeros hide wrong mappings); the state after."""
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    return {name: p.clone() for name, p in network.state_dict().items()}


def assert_untouched(network: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """A CPU form left the network's own parameters as they were."""
    for name, parameter in network.state_dict().items():
        assert torch.equal(parameter, before[name]), name


@settings(max_examples=25, deadline=None)
@given(
    speakers=st.sampled_from([1, 3]),
    channels=st.sampled_from([(4, 4), (16, 12), (10, 24)]),
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_the_vits_flow_cpu_form_equals_the_flow(
    speakers: int, channels: tuple[int, int], lengths: list[int], seed: int
) -> None:
    """Every tensor random (a fresh flow is the identity), one or more speakers, rows of different
    lengths padded in one batch: the time-major form with its folded gate is the same function, as near
    the flow in float64 as the flow in float32 is (random flows amplify rounding: both err by up to
    5e-4 on outputs of about 15; a wrong weight errs by about 1), and the flow's parameters are untouched."""
    torch.manual_seed(seed)
    inter, hidden = channels
    flow = VitsFlow(n_speakers=speakers, gin_channels=6 if speakers > 1 else 0, inter_channels=inter,
                    hidden_channels=hidden).eval()  # fmt: skip
    before = perturbed(flow)
    fast = cpu_form(flow)
    assert isinstance(fast, FlowCpuForm)
    z = torch.randn(len(lengths), max(lengths), inter)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).float()  # [B, T]
    speaker = torch.randint(0, speakers, (len(lengths),)) if speakers > 1 else None
    with torch.inference_mode():
        exact = copy.deepcopy(flow).double()(z.double(), mask.double(), speaker)
        plain_error = (flow(z, mask, speaker).double() - exact).abs().max().item()
        fast_error = (fast(z, mask, speaker).double() - exact).abs().max().item()
    assert fast_error <= 10 * plain_error + 1e-5, (fast_error, plain_error)
    assert_untouched(flow, before)


@settings(max_examples=25, deadline=None)
@given(
    speakers=st.sampled_from([1, 3]),
    length=st.integers(1, 90),
    arrivals=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    sizes=st.sampled_from([(24, 128), (1, 1), (None, None), (5, 16)]),
    seed=st.integers(0, 2**16),
)
def test_the_carried_vits_flow_is_fed_each_frame_once_and_equals_the_flow(
    speakers: int, length: int, arrivals: list[int], sizes: tuple[int | None, int | None], seed: int
) -> None:
    """The flow's carried form in a `Decoder` (the Piper stacks' flow block), every tensor random: each
    frame goes in once, and the streamed output is as near the flow in float64 as the flow in float32
    is (the CPU form's bound, above), whatever the chunks and windows."""
    torch.manual_seed(seed)
    flow = small_flow(speakers)
    speaker = torch.tensor([seed % speakers]) if speakers > 1 else None
    conditions = ("speaker",) if speaker is not None else ()
    block = Decoder("flow", flow.carried_form(), flow.receptive_radius, 1, *sizes, conditions=conditions)
    z = torch.randn(length, 8)
    streamed, fed = streamed_counting(block, z, arrivals, speaker)
    with torch.inference_mode():
        exact = copy.deepcopy(flow).double()(z[None].double(), torch.ones(1, length).double(), speaker)[0]
        plain_error = (flow(z[None], torch.ones(1, length), speaker)[0].double() - exact).abs().max().item()
    assert streamed.shape == z.shape and sum(fed) == length
    assert (streamed.double() - exact).abs().max().item() <= 10 * plain_error + 1e-5


@settings(max_examples=25, deadline=None)
@given(
    speakers=st.sampled_from([1, 3]),
    shape=st.sampled_from([(8, 16, 2, 3), (12, 20, 3, 1), (6, 10, 1, 5)]),
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_the_vits_encoder_cpu_form_equals_the_encoder(
    speakers: int, shape: tuple[int, int, int, int], lengths: list[int], seed: int
) -> None:
    """Every tensor random, one or more speakers, heads and kernels of several sizes, rows of different
    lengths padded in one batch: the time-major text encoder gives the same prior and log-durations, as
    near the encoder in float64 as the encoder in float32 is, and the encoder's parameters are untouched."""
    torch.manual_seed(seed)
    hidden, filters, heads, kernel = shape
    encoder = VitsEncoder(
        n_vocab=20, n_speakers=speakers, gin_channels=6 if speakers > 1 else 0, inter_channels=4,
        hidden_channels=hidden, filter_channels=filters, n_heads=heads, n_layers=2, kernel_size=kernel,
    ).eval()  # fmt: skip
    before = perturbed(encoder)
    fast = cpu_form(encoder)
    assert isinstance(fast, EncoderCpuForm)
    batch, longest = len(lengths), max(lengths)
    tokens = torch.randint(0, 20, (batch, longest), dtype=torch.int32)
    mask = (torch.arange(longest)[None] < torch.tensor(lengths)[:, None]).float()  # [B, N]
    noise = torch.randn(batch, longest, 2)
    speaker = torch.randint(0, speakers, (batch,)) if speakers > 1 else None
    with torch.inference_mode():
        exact = copy.deepcopy(encoder).double()(tokens, mask.double(), noise.double(), speaker)
        plains, quicks = encoder(tokens, mask, noise, speaker), fast(tokens, mask, noise, speaker)
        for plain, quick, truth in zip(plains, quicks, exact, strict=True):  # the prior, the log-durations
            plain_error = (plain.double() - truth).abs().max().item()
            fast_error = (quick.double() - truth).abs().max().item()
            assert fast_error <= 10 * plain_error + 1e-5, (fast_error, plain_error)
    assert_untouched(encoder, before)
