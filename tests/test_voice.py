"""The Python API end to end on the tiny addon: streaming, offline equivalence, bad text, long text."""

from __future__ import annotations

import importlib.util
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import tts_neuron
from tests.conftest import REPO
from tts_neuron.blocks.acoustic import durations_to_frames
from tts_neuron.blocks.base import CONTINUES, QUEUED_FRAMES, Chunk
from tts_neuron.engine import Engine
from tts_neuron.errors import AddonError, StackError, TargetUnavailableError, TextError
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.runners import TappedRunner
from tts_neuron.voice import CallSettings, ListenerClock

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def voice(tiny_addon_dir: Path) -> tts_neuron.Voice:
    return tts_neuron.load(tiny_addon_dir)


def test_synthesize_returns_float32_audio_of_whole_frames(voice: tts_neuron.Voice) -> None:
    audio = voice.synthesize(SENTENCE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) > 0 and len(audio) % voice.addon.audio.hop_length == 0
    assert np.isfinite(audio).all()
    assert voice.sample_rate == 22050


def test_stream_yields_several_chunks_that_join_to_synthesize(voice: tts_neuron.Voice) -> None:
    chunks = list(voice.stream(SENTENCE + " " + SENTENCE))
    assert len(chunks) > 2
    np.testing.assert_array_equal(np.concatenate(chunks), voice.synthesize(SENTENCE + " " + SENTENCE))


def test_streamed_mel_equals_whole_sentence_decoding(voice: tts_neuron.Voice) -> None:
    """The runtime's chunked mel equals running the networks on the whole sentence at once."""
    mel: list[np.ndarray] = []
    list(voice.stream(SENTENCE, mel.append))
    streamed = np.concatenate(mel)

    (sentence,) = voice.frontend.sentences(SENTENCE)
    addon = voice.addon
    tokens = torch.tensor([sentence.tokens])
    mask = torch.ones_like(tokens, dtype=torch.float32)
    with torch.inference_mode():
        encodings = addon.network("text_encoder")(tokens, mask)
        frames = durations_to_frames(addon.network("duration_predictor")(encodings, mask)[0], 1.0, 100)
        upsampled = torch.repeat_interleave(encodings[0], frames, dim=0)[None]
        offline = addon.network("decoder")(upsampled, torch.ones(1, upsampled.shape[1]))[0].numpy()
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, rtol=1e-4, atol=1e-4)


def test_a_stack_that_ends_at_mel(tiny_addon_dir: Path) -> None:
    voice = tts_neuron.load(tiny_addon_dir, stack="mel")
    chunks = list(voice.chunks(SENTENCE))
    assert all(c.data.ndim == 2 and c.data.shape[1] == 80 for c in chunks)
    with pytest.raises(StackError, match="ends at frames, not audio"):
        next(voice.stream(SENTENCE))


@pytest.mark.parametrize("text", ["", "   \n\t ", "!!! ... ???", "🙂🙂🎉", "\x00\x01\x02"])
def test_nothing_to_say_is_a_text_error(voice: tts_neuron.Voice, text: str) -> None:
    with pytest.raises(TextError):
        voice.synthesize(text)


def test_text_must_be_a_string(voice: tts_neuron.Voice) -> None:
    with pytest.raises(TextError, match="must be a str"):
        voice.synthesize(b"bytes")  # type: ignore[arg-type]


def test_unreadable_characters_are_dropped_with_a_warning(
    voice: tts_neuron.Voice, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        audio = voice.synthesize("Hello 🙂 world \x07 日本")
    assert len(audio) > 0
    assert "dropped characters" in caplog.text


def test_phonemes_outside_the_symbol_table_are_dropped_with_a_warning(
    tiny_addon_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    voice = tts_neuron.load(tiny_addon_dir)
    voice.frontend._ids.pop("s")  # a symbol table that lacks /s/
    with caplog.at_level(logging.WARNING):
        sentence = voice.frontend.phonemize("Sister Susie sits.")
    assert "s" not in sentence.phonemes and sentence.tokens
    assert "dropped phoneme 's'" in caplog.text


def test_long_text_streams_sentence_by_sentence(
    voice: tts_neuron.Voice, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    espeak = Espeak.get()
    original = espeak.synthesize
    monkeypatch.setattr(
        espeak, "synthesize", lambda text, voice="en-us": calls.append(text) or original(text, voice)
    )
    text = ("This is one sentence of a very long text. " * 2500)[:100_000]
    first = list(itertools.islice(voice.stream(text), 3))
    assert len(first) == 3 and len(calls) == 1, "the first audio needed only the first sentence"


@pytest.mark.parametrize("addon", ["tiny", "tacotron-en"])
def test_a_later_sentence_starts_at_full_chunks_and_says_the_same(addon: str, tiny_addon_dir: Path) -> None:
    """In a direct run a call's first sentence starts with small chunks (early audio); a later one, whose
    call already has audio playing, starts at full size: fewer network calls, the same audio."""
    calls: list[str] = []
    runner = TappedRunner(lambda handle, inputs: calls.append(handle.name))
    voice = tts_neuron.load(tiny_addon_dir if addon == "tiny" else REPO / "addons" / addon, runner=runner)
    (sentence,) = voice.frontend.sentences(SENTENCE)
    call = voice.call_settings({})
    spoken: dict[bool, list[np.ndarray]] = {}
    counts: dict[bool, int] = {}
    for later in (False, True):
        calls.clear()
        settings = {**call.sentence(0), CONTINUES: torch.tensor(later)}
        spoken[later] = [chunk.data.numpy() for chunk in voice.sentence_chunks(sentence, settings=settings)]
        counts[later] = len(calls)
    assert len(spoken[True][0]) > len(spoken[False][0])
    assert counts[True] < counts[False], counts
    np.testing.assert_allclose(np.concatenate(spoken[True]), np.concatenate(spoken[False]), atol=1e-4)
    assert not call.sentence(0)[CONTINUES] and call.sentence(1)[CONTINUES]


def test_an_engine_keeps_small_first_chunks_in_later_sentences(tiny_addon_dir: Path) -> None:
    """An engine paces its streams to a horizon of queued audio on a shared host: every sentence starts
    small there."""
    engine = Engine(workers=1)
    try:
        call = tts_neuron.load(tiny_addon_dir, runner=engine).call_settings({})
        assert not any(bool(call.sentence(index)[CONTINUES]) for index in range(3))
    finally:
        engine.close()


def test_targets_without_a_runtime_are_refused(tiny_addon_dir: Path) -> None:
    if importlib.util.find_spec("torch_neuronx") is None:  # on an inf2 host the SDK is there
        with pytest.raises(TargetUnavailableError, match="neuron"):
            tts_neuron.load(tiny_addon_dir, target="neuron")
    if not torch.cuda.is_available():
        with pytest.raises(TargetUnavailableError, match="CUDA"):
            tts_neuron.load(tiny_addon_dir, target="cuda")


def test_unknown_stack_name(tiny_addon_dir: Path) -> None:
    with pytest.raises(StackError, match="no stack 'gpu'; it has \\['cpu', 'mel', 'neuron'\\]"):
        tts_neuron.load(tiny_addon_dir, stack="gpu")


def test_a_voice_set_shares_a_frontend_only_between_equal_symbol_tables(
    tiny_addon_dir: Path, tiny_tacotron_dir: Path
) -> None:
    voices = tts_neuron.VoiceSet()
    duration, attention = voices.add(tiny_addon_dir), voices.add(tiny_tacotron_dir)
    shipped = voices.add(REPO / "addons" / "fastspeech-en")
    assert duration.frontend is attention.frontend and shipped.frontend is not duration.frontend
    assert voices["tiny"] is duration
    with pytest.raises(AddonError, match="a voice named 'tiny' is already loaded"):
        voices.add(tiny_addon_dir)
    with pytest.raises(AddonError, match="differ from the shared frontend's"):
        tts_neuron.load(REPO / "addons" / "fastspeech-en", frontend=duration.frontend)


def test_the_neuron_target_refuses_a_stack_that_compiles_nothing(
    tiny_addon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an inf2 host (the SDK's check passes), the dynamic stack would run every block on the host CPU
    without a word: it is refused, naming the stack."""
    from tts_neuron.backends.neuron import NeuronTarget

    monkeypatch.setattr(NeuronTarget, "check_available", lambda self: None)
    with pytest.raises(StackError, match=r"stacks.cpu: runs no compiled network, so target 'neuron'"):
        tts_neuron.load(tiny_addon_dir, stack="cpu", target="neuron")


def test_the_listener_clock_counts_what_is_made_less_what_has_played() -> None:
    """Nothing is queued before the first chunk; then audio made less audio played since it, in frames
    (a stack that ends at frames counts hop samples a frame), never below zero."""
    now = [10.0]
    clock = ListenerClock(sample_rate=1000, hop_length=10, now=lambda: now[0])
    assert clock.queued_frames() == 0
    chunks = [Chunk(torch.zeros(500), 0, False), Chunk(torch.zeros(30, 80), 500, True)]  # 0.5 s, then 0.3 s
    made = clock.made(iter(chunks))
    next(made)
    now[0] = 10.2  # 0.2 s played of 0.5 s made
    assert clock.queued_frames() == 30
    next(made)
    assert clock.queued_frames() == 60  # 0.8 s made
    now[0] = 12.0
    assert clock.queued_frames() == 0


def test_a_direct_runs_later_sentences_are_told_what_their_listener_has_queued(tiny_addon_dir: Path) -> None:
    """In a direct run, later sentences get QUEUED_FRAMES from the run's clock (a listener playing from the
    first chunk: this fast run makes audio far ahead of real time); an engine's streams, paced, get none;
    the first sentence never does."""
    voice = tts_neuron.load(tiny_addon_dir)
    seen: list[int] = []
    sentence_chunks = voice.sentence_chunks

    def spy(sentence, mel_sink=None, rate=1.0, settings=None):  # type: ignore[no-untyped-def]
        seen.append(int(settings[QUEUED_FRAMES]))
        return sentence_chunks(sentence, mel_sink, rate, settings)

    voice.sentence_chunks = spy  # type: ignore[method-assign]
    audio = voice.synthesize("The first sentence is here. The second one follows it. And a third.")
    assert len(seen) == 3 and seen[0] == 0 and 0 < seen[1] < seen[2]
    assert seen[2] <= len(audio) // voice.addon.audio.hop_length
    paced = CallSettings({}, 0, later_full=False)
    assert not any(int(paced.sentence(index, 100)[QUEUED_FRAMES]) for index in range(3))


def test_load_sets_one_intra_op_thread_unless_told_otherwise(tiny_addon_dir: Path) -> None:
    """One thread per stream is the serving policy (docs: threads); None leaves torch's setting alone."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tts_neuron.load(tiny_addon_dir, threads=None)
        assert torch.get_num_threads() == 2
        tts_neuron.load(tiny_addon_dir)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            tts_neuron.load(tiny_addon_dir, threads=0)
    finally:
        torch.set_num_threads(before)


def test_ssml_breaks_are_silence_and_prosody_rate_changes_the_duration_voice(tiny_addon_dir: Path) -> None:
    voice = tts_neuron.load(tiny_addon_dir)
    hello, bye = voice.synthesize("Hello there."), voice.synthesize("Goodbye now.")
    spoken = voice.synthesize('<speak>Hello there.<break time="500ms"/>Goodbye now.</speak>')
    pause = voice.sample_rate // 2
    assert len(spoken) == len(hello) + pause + len(bye)
    np.testing.assert_array_equal(spoken[len(hello) : len(hello) + pause], 0)
    np.testing.assert_allclose(spoken[: len(hello)], hello, atol=1e-6)
    fast = voice.synthesize('<speak><prosody rate="200%">Hello there.</prosody></speak>')
    assert len(fast) < 0.7 * len(hello)
    np.testing.assert_allclose(fast, voice.synthesize("Hello there.", speed=2.0), atol=1e-6)
