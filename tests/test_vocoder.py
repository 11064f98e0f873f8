"""The neural vocoder: its two inverse STFTs, its declared receptive field, and streaming that equals
vocoding the whole utterance for any chunking, with dynamic and with fixed (padded, masked) windows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_neuron.audio import AudioConfig, MelSpectrogram, _hann, _stft
from tts_neuron.backends.executor import FixedShapeExecutor, TensorSpec
from tts_neuron.blocks.base import Chunk
from tts_neuron.blocks.fixed import PaddedVocoder
from tts_neuron.blocks.vocoder import Vocoder
from tts_neuron.blocks.windows import windows
from tts_neuron.models.vocoder import InverseSTFT, MelVocoder

CFG = AudioConfig()
TOLERANCE = 1e-5
"""What the README claims: streamed audio equals vocoding the whole utterance within 1e-5."""


def small_vocoder(seed: int = 0, layers: int = 2) -> MelVocoder:
    torch.manual_seed(seed)
    return MelVocoder(dim=32, hidden=64, layers=layers).eval()


def chunked(data: torch.Tensor, cuts: list[int]) -> Iterator[Chunk]:
    """`data` [T, C] as chunks ending at the sorted, distinct `cuts` (and at T)."""
    ends = sorted({c for c in cuts if 0 < c < len(data)} | {len(data)})
    start = 0
    for end in ends:
        yield Chunk(data[start:end], start, end == len(data))
        start = end


def frames_and_cuts(max_frames: int = 200) -> st.SearchStrategy[tuple[int, list[int]]]:
    return st.integers(1, max_frames).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(1, max(1, n - 1)), max_size=12))
    )


def log_mel(n_frames: int, seed: int) -> torch.Tensor:
    """A plausible log-mel: random audio's features, so magnitudes span speech-like ranges."""
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(n_frames * CFG.hop_length - 1, generator=generator) * 0.1
    return MelSpectrogram(CFG)(audio)  # [n_frames, n_mels]


# ------------------------------------------------------------------------------------- inverse STFT
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**16))
def test_both_inverse_stfts_invert_the_feature_stft(n_frames: int, seed: int) -> None:
    """Either form turns the runtime's own STFT back into the waveform, and they agree with each other."""
    generator = torch.Generator().manual_seed(seed)
    audio = torch.rand(1, n_frames * CFG.hop_length, generator=generator) * 2 - 1  # [1, S]
    spec = _stft(audio, CFG, _hann(CFG))[..., :n_frames].transpose(1, 2)  # [1, T, F]
    mask = torch.ones(1, n_frames)
    fft = InverseSTFT(CFG.n_fft, CFG.hop_length)(spec.real, spec.imag, mask)
    real_only = InverseSTFT(CFG.n_fft, CFG.hop_length, real_only=True)(spec.real, spec.imag, mask)
    # The last hop block also needs frame T, which lies past the features' end (as in Griffin-Lim).
    interior = slice(0, (n_frames - 1) * CFG.hop_length)
    assert torch.allclose(fft[:, interior], audio[:, interior], atol=TOLERANCE)
    assert torch.allclose(real_only, fft, atol=TOLERANCE)


def test_real_only_form_has_no_fft_and_no_complex_tensors() -> None:
    """What neuronx-cc rejects must not be in the graph the compiled targets get."""
    network = small_vocoder().compiled_form()
    program = torch.export.export(network, network.example_inputs(40), strict=False)
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not [op for op in ops if "fft" in op or "complex" in op or "stft" in op], ops
    dtypes = {
        node.meta["val"].dtype for node in program.graph.nodes if hasattr(node.meta.get("val"), "dtype")
    }
    assert not [d for d in dtypes if d.is_complex], dtypes
    # ...and it computes what the dynamic form computes, within float rounding.
    original = small_vocoder()
    mel = log_mel(40, 0)[None]
    with torch.inference_mode():
        assert torch.allclose(
            network(mel, torch.ones(1, 40)), original(mel, torch.ones(1, 40)), atol=TOLERANCE
        )


def test_compiled_form_shares_parameters() -> None:
    network = small_vocoder()
    twin = network.compiled_form()
    assert twin.head.weight is network.head.weight and twin.istft.real_only and not network.istft.real_only


# ----------------------------------------------------------------------------------- receptive field
@pytest.mark.parametrize("layers", [1, 3])
def test_declared_receptive_radius_is_exact(layers: int) -> None:
    """Changing a mel frame just past the radius leaves a frame's samples alone; at the radius, it does not
    (on the right: the inverse STFT reaches one frame less to the left, so the left side is one short)."""
    network = small_vocoder(layers=layers)
    radius, hop, n, j = network.receptive_radius, CFG.hop_length, 80, 40
    mel = log_mel(n, 1)
    with torch.inference_mode():
        base = network(mel[None], torch.ones(1, n))[0, j * hop : (j + 1) * hop]
        cases = ((radius + 1, False), (-radius, False), (radius, True), (-(radius - 1), True))
        for offset, changes in cases:
            moved = mel.clone()
            moved[j + offset] += 3.0
            audio = network(moved[None], torch.ones(1, n))[0, j * hop : (j + 1) * hop]
            assert (not torch.equal(audio, base)) == changes, (offset, radius)


# -------------------------------------------------------------------------------------- the windows
@settings(max_examples=60, deadline=None)
@given(frames_and_cuts(), st.integers(0, 12), st.none() | st.integers(1, 40), st.none() | st.integers(1, 40))
def test_windows_tile_the_utterance_with_their_halo(
    case: tuple[int, list[int]], halo: int, core: int | None, first: int | None
) -> None:
    n, cuts = case
    data = torch.arange(n, dtype=torch.float32)[:, None]  # frame t holds t
    seen = list(windows(chunked(data, cuts), halo, core, first if core else None))
    assert [w.start for w in seen] == [0] + [w.stop for w in seen[:-1]]
    assert seen[-1].stop == n and seen[-1].final and not any(w.final for w in seen[:-1])
    for w in seen:
        assert w.lo == max(0, w.start - halo) and w.hi == min(n, w.stop + halo)
        assert torch.equal(w.frames[:, 0], torch.arange(w.lo, w.hi, dtype=torch.float32))
    if core is not None:  # cores grow from the first: each twice the one before, up to `core`
        expected = first or core
        for w in seen[:-1]:
            assert w.stop - w.start == expected
            expected = min(core, 2 * expected)


# ------------------------------------------------------------------------------- streaming is exact
@settings(max_examples=30, deadline=None)
@given(
    frames_and_cuts(),
    st.integers(0, 2**16),
    st.sampled_from([(16, 128), (1, 1), (None, None), (5, 40)]),
    st.booleans(),
)
def test_vocoder_streams_exactly_for_any_chunking(
    case: tuple[int, list[int]], seed: int, sizes: tuple[int | None, int | None], carried: bool
) -> None:
    n, cuts = case
    network = small_vocoder(seed % 3, layers=1 + seed % 3)
    mel = log_mel(n, seed)
    with torch.inference_mode():
        offline = network(mel[None], torch.ones(1, n))[0]
    fed: list[int] = []

    def counting(x: torch.Tensor, mask: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fed.append(int(mask.sum()))
        return form(x, mask, *state)

    form = network.carried_form() if carried else network
    block = Vocoder("vocoder", form, network.receptive_radius, network.hop, *sizes)
    if carried:
        block.network = counting  # the carried form, counting the real frames fed to it
    chunks = list(block.stream(chunked(mel, cuts), {}))
    assert [c.start for c in chunks] == [0] + [c.end for c in chunks[:-1]] and chunks[-1].final
    streamed = torch.cat([c.data for c in chunks])
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() <= TOLERANCE
    assert not carried or sum(fed) == n  # each frame fed once


def padded_executor(network: MelVocoder, buckets: list[int]) -> tuple[FixedShapeExecutor, list[list[int]]]:
    """The real-only network behind the fixed-shape executor, recording the shapes it is called at."""
    compiled = network.compiled_form()
    calls: list[list[int]] = []

    def at_bucket(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        calls.append(list(x.shape))
        return compiled(x, mask)

    signatures = {(1, b): tuple(TensorSpec.of(t) for t in network.example_inputs(b)) for b in buckets}
    return FixedShapeExecutor("vocoder (test)", dict.fromkeys(signatures, at_bucket), signatures), calls


@settings(max_examples=30, deadline=None)
@given(frames_and_cuts(), st.integers(0, 2**16))
def test_padded_vocoder_streams_exactly_at_compiled_shapes_only(
    case: tuple[int, list[int]], seed: int
) -> None:
    n, cuts = case
    network = small_vocoder(seed % 3)
    radius = network.receptive_radius
    buckets = [c + 2 * radius for c in (4, 16, 24)]
    executor, calls = padded_executor(network, buckets)
    mel = log_mel(n, seed)
    with torch.inference_mode():
        offline = network(mel[None], torch.ones(1, n))[0]
    block = PaddedVocoder("vocoder", executor, radius, per_frame=CFG.hop_length)
    streamed = torch.cat([c.data for c in block.stream(chunked(mel, cuts), {})])
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() <= TOLERANCE
    assert calls and all(shape[1] in buckets and shape[0] == 1 for shape in calls)
    assert calls[0][1] == buckets[0] or n > buckets[0]  # the first window is the smallest that holds it


def test_padded_vocoder_refuses_buckets_without_a_core() -> None:
    network = small_vocoder()
    executor, _ = padded_executor(network, [2 * network.receptive_radius])
    with pytest.raises(ValueError, match="leaves no core"):
        PaddedVocoder("vocoder", executor, network.receptive_radius, per_frame=CFG.hop_length)
