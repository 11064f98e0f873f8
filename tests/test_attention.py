"""The attention voice: the guards on its decoder loop, its step network at fixed shapes, the trained
voice on its cpu and neuron stacks, and the two voices side by side in one process."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.conftest import REPO, edit_addon_json
from tests.test_cli import assert_clean_error, run
from tts_neuron.backends.executor import pad_length
from tts_neuron.blocks.attention import AttentionGuards, AttentionMonitor
from tts_neuron.errors import AttentionError, StackError
from tts_neuron.models.tacotron import AttentionStep
from tts_neuron_build.compiler import compile_addon
from tts_neuron_build.train_tacotron import step_targets

TACOTRON = REPO / "addons" / "tacotron-en"
FASTSPEECH = REPO / "addons" / "fastspeech-en"
SENTENCE = "The quick brown fox jumps over the lazy dog."
GUARDS = AttentionGuards()
R = 4


def follow(path: list[int], n: int, stop_at_end: bool = True, guards: AttentionGuards = GUARDS) -> None:
    """Feed the monitor one-hot attention on each focus of `path`; the last step says stop."""
    monitor = AttentionMonitor(guards, n, R)
    for step, focus in enumerate(path):
        weights = torch.zeros(n)
        weights[focus] = 1
        monitor.check(step, weights, stop=stop_at_end and step == len(path) - 1)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 120), moves=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 2)), max_size=120))
def test_a_steady_alignment_never_trips_the_guards(n: int, moves: list[tuple[int, int]]) -> None:
    """Speech: 1 to 6 steps (4 to 24 frames) on a token, then on by one or two tokens, to the end."""
    path, focus = [], 0
    for dwell, advance in itertools.chain(moves, itertools.repeat((1, 1))):
        if focus == n - 1:
            break
        path += [focus] * dwell
        focus = min(focus + advance, n - 1)
    path += [n - 1] * 3
    assert len(path) <= GUARDS.max_steps(n, R)
    follow(path, n)


@pytest.mark.parametrize(
    ("path", "n", "kind", "step"),
    [
        ([0, 1, 2, 3, 9], 20, "skipped ahead", 4),
        ([*range(12), 4], 20, "jumped back", 12),
        ([0, 1] + [2] * 40, 20, "stalled", 2 + 120 // R),
        ([*range(10)] + [9] * 40, 10, "ran past the end", 9 + 80 // R),
        ([0, 1, 2, 3], 20, "stopped early", 3),
    ],
)
def test_each_failure_is_caught_where_it_happens(path: list[int], n: int, kind: str, step: int) -> None:
    with pytest.raises(AttentionError) as caught:
        follow(path, n, stop_at_end=kind == "stopped early")
    assert caught.value.kind == kind and caught.value.step == step and caught.value.frame == step * R
    assert f"decoder step {step}, frame {step * R}" in str(caught.value)


def test_the_end_is_the_last_spoken_token_not_the_trailing_pauses() -> None:
    """Sentences end in pause tokens that attention may never visit before the stop token fires."""

    def stop_at(focus: int) -> None:
        monitor = AttentionMonitor(GUARDS, 10, R, last_spoken=7)
        for step, token in enumerate(range(focus + 1)):
            monitor.check(step, torch.eye(10)[token], stop=token == focus)

    stop_at(7)
    stop_at(6)  # one token short: allowed (min_end_coverage 1)
    with pytest.raises(AttentionError, match="stopped early at token 5 .last spoken token 7."):
        stop_at(5)


def test_the_step_budget_follows_the_input_length() -> None:
    guards = AttentionGuards(max_frames_per_token=2, max_stall_frames=10_000, max_tail_frames=0)
    n = 30
    budget = guards.max_steps(n, R)
    assert budget == 15
    slow = [i // 2 for i in range(budget)]  # half a token a step: never reaches the end in time
    with pytest.raises(AttentionError, match="never stopped within 15 steps") as caught:
        follow(slow, n, stop_at_end=False, guards=guards)
    assert caught.value.step == budget - 1


@settings(max_examples=50, deadline=None)
@given(n_frames=st.lists(st.integers(1, 30), min_size=1, max_size=40), reduction=st.integers(1, 5))
def test_step_targets_follow_the_teacher_durations(n_frames: list[int], reduction: int) -> None:
    durations = torch.tensor(n_frames)
    n_steps = -(-sum(n_frames) // reduction)
    targets = step_targets(durations, n_steps, reduction)
    assert len(targets) == n_steps and bool((targets.diff() >= 0).all())
    ends = torch.cumsum(durations, 0)
    for step, phoneme in enumerate(targets.tolist()):
        middle = min(step * reduction + reduction // 2, int(ends[-1]) - 1)
        assert int(ends[phoneme]) > middle >= int(ends[phoneme]) - n_frames[phoneme]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 24), extra=st.integers(0, 12), seed=st.integers(0, 3))
def test_a_padded_memory_gives_the_same_steps(n: int, extra: int, seed: int) -> None:
    """What lets one compiled step per bucket serve every length up to it."""
    torch.manual_seed(seed)
    step = AttentionStep(
        n_mels=6,
        memory_channels=8,
        attention_dim=4,
        reduction=2,
        prenet_channels=4,
        attention_rnn=8,
        decoder_rnn=8,
        location_filters=3,
        location_kernel=5,
    ).eval()
    memory, keys = torch.randn(1, n, 8), torch.randn(1, n, 4)
    exact = [memory, keys, torch.ones(1, n), torch.zeros(1, 2, n)]
    padded = [pad_length(x, n + extra) for x in exact[:3]] + [torch.zeros(1, 2, n + extra)]
    state, last = torch.zeros(1, step.state_size), torch.zeros(1, 6)
    padded_state, padded_last = state, last
    with torch.inference_mode():
        for _ in range(4):
            masks = torch.bernoulli(torch.full((1, 2, 4), 0.5)) * 2
            frames, stop, exact[3], state = step(*exact, state, last, masks)
            p_frames, p_stop, padded[3], padded_state = step(*padded, padded_state, padded_last, masks)
            last, padded_last = frames[:, -1], p_frames[:, -1]
            torch.testing.assert_close(p_frames, frames, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(p_stop, stop, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(padded[3][:, :, :n], exact[3], rtol=1e-5, atol=1e-6)
            assert float(padded[3][:, :, n:].abs().sum()) == 0, "padding gets no attention at all"


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 24), min_size=1, max_size=4),
    kernel=st.sampled_from([3, 5, 15]),
    seed=st.integers(0, 3),
)
def test_the_cpu_form_takes_the_steps_the_step_takes(lengths: list[int], kernel: int, seed: int) -> None:
    """Its fused products, folded location filter and joint output projection give the step's frames,
    stop logits, alignments and states, step after step, for rows of different lengths in one batch."""
    torch.manual_seed(seed)
    step = AttentionStep(
        n_mels=6, memory_channels=8, attention_dim=4, reduction=2, prenet_channels=4, attention_rnn=8,
        decoder_rnn=12, location_filters=3, location_kernel=kernel,
    ).eval()  # fmt: skip
    for parameter in step.parameters():  # no zero biases: a bias dropped or added twice must show
        torch.nn.init.normal_(parameter, std=0.5)
    fused = step.cpu_form()
    rows, n = len(lengths), max(lengths)
    mask = (torch.arange(n) < torch.tensor(lengths)[:, None]).float()  # [B, N]
    memory, keys = torch.randn(rows, n, 8) * mask[..., None], torch.randn(rows, n, 4) * mask[..., None]
    alignment = torch.zeros(rows, 2, n)
    alignment[:, :, 0] = 1
    inputs = [(memory, keys, mask, alignment, torch.randn(rows, step.state_size), torch.randn(rows, 6))] * 2
    with torch.inference_mode():
        for _ in range(4):
            masks = torch.bernoulli(torch.full((rows, 2, 4), 0.5)) * 2
            outputs = [network(*x, masks) for network, x in zip((step, fused), inputs, strict=True)]
            for got, want in zip(*reversed(outputs), strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            inputs = [(memory, keys, mask, out[2], out[3], out[0][:, -1]) for out in outputs]


# --- an attention voice that cannot align: the guards must stop it, on every stack ---


@pytest.fixture(scope="module")
def compiled_tiny_tacotron(tiny_tacotron_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(shutil.copytree(tiny_tacotron_dir, tmp_path_factory.mktemp("compiled") / "tiny-tacotron"))
    assert len(compile_addon(root, "cpu", progress=False).compiled) == 3 + 3 + 2 + 3
    return root


@pytest.mark.parametrize("stack", ["cpu", "neuron"])
def test_an_untrained_attention_voice_is_stopped_not_looped(compiled_tiny_tacotron: Path, stack: str) -> None:
    voice = tts_neuron.load(compiled_tiny_tacotron, stack=stack, target="cpu")
    with pytest.raises(AttentionError, match=r"tiny-tacotron: attention .* at decoder step \d+, frame \d+"):
        voice.synthesize(SENTENCE)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"guards": {"max_skip": "four"}}, "guards: max_skip must be a non-negative integer, got 'four'"),
        ({"guards": {"max_jump": 4}}, "unexpected keyword argument 'max_jump'"),
        ({"stop_threshold": 2}, "stop_threshold must be in [0, 1], got 2"),
        ({"stop_threshold": "high"}, "AttentionDecoder"),
    ],
)
def test_bad_decoder_parameters_name_the_stack_entry(
    tiny_tacotron_dir: Path, params: dict[str, Any], message: str
) -> None:
    spec = json.loads((tiny_tacotron_dir / "addon.json").read_text())["stacks"]["cpu"]
    spec[0]["streamable_block"]["stack"][0].update(params)
    with pytest.raises(
        StackError, match=r"stack\[0\]\.streamable_block\.stack\[0\]: AttentionDecoder"
    ) as caught:
        tts_neuron.load(tiny_tacotron_dir, stack=spec)
    assert message in str(caught.value)


def test_the_cli_reports_an_attention_failure_in_one_line(tiny_tacotron_dir: Path, tmp_path: Path) -> None:
    result = run(
        "synthesize", "--addon", str(tiny_tacotron_dir), "--text", SENTENCE, "--out", str(tmp_path / "a.wav")
    )
    assert_clean_error(result, "attention")


# --- the trained attention voice ---


def with_decoder(params: dict[str, Any], stack: str = "cpu") -> list[dict[str, Any]]:
    """The trained voice's stack with parameters added to its attention decoder."""
    spec = json.loads((TACOTRON / "addon.json").read_text())["stacks"][stack]
    spec[0]["streamable_block"]["stack"][0].update(params)
    return spec


@pytest.fixture(scope="module")
def tacotron() -> tts_neuron.Voice:
    return tts_neuron.load(TACOTRON)


def mel_of(voice: tts_neuron.Voice, text: str) -> tuple[np.ndarray, np.ndarray]:
    frames: list[np.ndarray] = []
    audio = np.concatenate(list(voice.stream(text, frames.append)))
    return audio, np.concatenate(frames)


def test_the_trained_voice_speaks_for_about_as_long_as_its_teacher(tacotron: tts_neuron.Voice) -> None:
    fastspeech = tts_neuron.load(FASTSPEECH)
    ours, theirs = len(tacotron.synthesize(SENTENCE)), len(fastspeech.synthesize(SENTENCE))
    assert 0.7 < ours / theirs < 1.4, (ours, theirs)


@pytest.mark.parametrize("text", ["a", "I", "O."])
def test_a_one_vowel_sentence_is_not_cut_to_one_step(tacotron: tts_neuron.Voice, text: str) -> None:
    """The stop token is ignored until the utterance has 4 frames a token (the teacher never has fewer
    than 5): one vowel and its two pause tokens give at least 12 frames, not one step of 4."""
    (sentence,) = tacotron.frontend.sentences(text)
    assert len(tacotron.synthesize(text)) >= 4 * len(sentence.tokens) * tacotron.addon.audio.hop_length


def test_chunks_after_the_first_double_as_the_vocoders_windows_do(tacotron: tts_neuron.Voice) -> None:
    """12 steps, then 8 doubling up to 32 (48, 32, 64, then 128 frames at reduction 4), so each vocoder
    window (16, 32, 64, then 128 frames) runs as soon as the steps it needs are made. Seen at the
    postnet's output, which passes each chunk on less its right context, held back once at the start."""
    frames: list[np.ndarray] = []
    text = (
        "The committee reviewed every proposal carefully before the deadline, and then it announced "
        "which projects would receive funding for the coming year."
    )
    list(tacotron.stream(text, frames.append))
    sizes = [len(f) for f in frames]
    radius = tacotron.addon.network("postnet").receptive_radius
    assert len(sizes) >= 5
    assert sizes[:-1] == [48 - radius, 32, 64, *[128] * (len(sizes) - 4)]


@settings(max_examples=6, deadline=None)
@given(first=st.integers(1, 10), second=st.integers(1, 20), size=st.integers(1, 40))
def test_chunk_sizes_do_not_change_the_frames(
    tacotron: tts_neuron.Voice, first: int, second: int, size: int
) -> None:
    reference = mel_of(tacotron, SENTENCE)[1]
    sizes = {"first_chunk_steps": first, "second_chunk_steps": second, "chunk_steps": size}
    chunked = tts_neuron.load(TACOTRON, stack=with_decoder(sizes))
    # the decoder loop is identical; the postnet decodes other windows, equal to float rounding
    np.testing.assert_allclose(mel_of(chunked, SENTENCE)[1], reference, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def compiled_tacotron(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained voice's `neuron` stack compiled for the CPU target at every bucket, at batch 1 only (a
    voice alone runs batch 1; batched rows are test_engine's): 15 artifacts instead of 60."""
    root = Path(
        shutil.copytree(
            TACOTRON,
            tmp_path_factory.mktemp("compiled") / "tacotron-en",
            ignore=shutil.ignore_patterns("compiled"),
        )
    )

    def batch_one(config: dict[str, Any]) -> None:
        for network in config["networks"].values():
            network["batch_sizes"] = [1]

    edit_addon_json(root, batch_one)
    assert len(compile_addon(root, "cpu", "neuron", progress=False).compiled) == 5 + 5 + 2 + 3
    return root


def test_the_neuron_stack_on_the_cpu_target_equals_the_cpu_stack(
    tacotron: tts_neuron.Voice, compiled_tacotron: Path
) -> None:
    fixed = tts_neuron.load(compiled_tacotron, stack="neuron", target="cpu")
    audio, mel = mel_of(fixed, SENTENCE)
    reference_audio, reference_mel = mel_of(tacotron, SENTENCE)
    assert mel.shape == reference_mel.shape
    np.testing.assert_allclose(mel, reference_mel, rtol=0, atol=1e-4)  # docs/voices.md: 1e-5 measured
    assert audio.shape == reference_audio.shape
    np.testing.assert_allclose(audio, reference_audio, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("params", "kind"),
    [
        ({"guards": {"max_frames_per_token": 1, "max_tail_frames": 0}}, "never stopped"),
        ({"stop_threshold": 1.0}, "ran past the end"),
        ({"stop_threshold": 0.0}, "stopped early"),
    ],
)
def test_forced_failures_stop_cleanly_and_say_where(params: dict[str, Any], kind: str) -> None:
    voice = tts_neuron.load(TACOTRON, stack=with_decoder(params))
    chunks: list[np.ndarray] = []
    with pytest.raises(AttentionError) as caught:
        for chunk in voice.stream(SENTENCE):
            chunks.append(chunk)
    error = caught.value
    assert error.kind == kind
    assert f"frame {error.frame}" in str(error) and SENTENCE in str(error)
    made = sum(len(c) for c in chunks) // voice.addon.audio.hop_length
    assert made <= error.frame + 4, "nothing after the failure is played"


def test_a_sentence_longer_than_the_largest_bucket_is_decoded_in_segments(compiled_tacotron: Path) -> None:
    fixed = tts_neuron.load(compiled_tacotron, stack="neuron", target="cpu")
    (sentence,) = fixed.frontend.sentences(LONG)
    assert len(sentence.tokens) > 256  # one sentence, more tokens than the largest bucket
    cpu = tts_neuron.load(TACOTRON)
    seconds = len(fixed.synthesize(LONG)) / fixed.sample_rate
    assert seconds == pytest.approx(len(cpu.synthesize(LONG)) / cpu.sample_rate, rel=0.05)
    assert seconds > 15  # both segments spoken: 283 tokens at 6 frames each are about 20 s


LONG = (
    "We packed apples, pears, plums, peaches, cherries, grapes, lemons, limes, oranges, melons, figs, "
    "dates, nuts, bread, cheese, butter, honey, jam, tea, coffee, milk, sugar, salt, pepper, rice, beans, "
    "peas, corn, soup, fish, eggs, ham, bacon, toast, cake, pie, buns, rolls, biscuits, crackers, olives, "
    "onions, garlic, carrots and kale."
)


# --- two voices of different architectures in one process ---


@pytest.fixture(scope="module")
def voices() -> tts_neuron.VoiceSet:
    voices = tts_neuron.VoiceSet()
    voices.add(FASTSPEECH)
    voices.add(TACOTRON)
    return voices


def test_both_voices_share_one_frontend(voices: tts_neuron.VoiceSet) -> None:
    assert voices["fastspeech-en"].frontend is voices["tacotron-en"].frontend
    with pytest.raises(tts_neuron.AddonError, match="no voice 'nobody'; loaded: fastspeech-en, tacotron-en"):
        voices.synthesize(SENTENCE, voice="nobody")


def test_interleaved_streams_equal_each_voice_alone(voices: tts_neuron.VoiceSet) -> None:
    texts = {"fastspeech-en": SENTENCE + " " + SENTENCE, "tacotron-en": "Pack my box with five dozen jugs."}
    alone = {name: voices.synthesize(text, voice=name) for name, text in texts.items()}
    streams = {name: voices.stream(text, voice=name) for name, text in texts.items()}
    streams["tacotron-en again"] = voices.stream(texts["tacotron-en"], voice="tacotron-en")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in streams}
    for name, chunk in _round_robin(streams):
        parts[name].append(chunk)
    for name, expected in alone.items():
        np.testing.assert_array_equal(np.concatenate(parts[name]), expected)
    np.testing.assert_array_equal(np.concatenate(parts["tacotron-en again"]), alone["tacotron-en"])


def _round_robin(streams: dict[str, Any]) -> Any:
    """(name, chunk) taking one chunk from each unfinished stream in turn."""
    active = dict(streams)
    for name in itertools.cycle(list(streams)):
        if not active:
            return
        if name in active:
            chunk = next(active[name], None)
            if chunk is None:
                del active[name]
            else:
                yield name, chunk


def test_the_cli_chooses_the_voice_per_call(tmp_path: Path) -> None:
    for addon in (FASTSPEECH, TACOTRON):
        result = run("synthesize", "--addon", str(addon), "--text", "Hello there.", "--raw")
        assert result.returncode == 0, result.stderr.decode()
        assert len(result.stdout) > 22050  # over half a second of 16-bit audio
