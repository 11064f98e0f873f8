"""The teacher-data recipe and the training loop: durations tile the audio, symbols cover espeak-ng's
English, and a few training steps on a tiny set bring the loss down."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import COVERAGE_TEXT
from tts_neuron.addon import load_addon
from tts_neuron.audio import AudioConfig, MelSpectrogram
from tts_neuron.frontend import Frontend
from tts_neuron_build import train_tacotron
from tts_neuron_build.corpus import docstring_sentences, generated_sentences
from tts_neuron_build.teacher import TeacherSplit, build, frame_durations, synthesize_teacher
from tts_neuron_build.train_fastspeech import TrainConfig, train

SHIPPED = Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en"


@settings(max_examples=200, deadline=None)
@given(
    n_samples=st.integers(0, 50_000),
    fractions=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    hop=st.sampled_from([128, 256, 300]),
)
def test_durations_tile_the_frames_exactly(n_samples: int, fractions: list[float], hop: int) -> None:
    starts = sorted(int(f * n_samples) for f in fractions)
    durations = frame_durations(starts, n_samples, hop)
    assert len(durations) == len(starts)
    assert durations.sum() == n_samples // hop + 1
    assert (durations >= 0).all()


def test_teacher_utterance_lines_up_with_espeak() -> None:
    cfg = AudioConfig()
    utterance = synthesize_teacher("On 2024-03-05, Bob paid $3.50 for 12 apples.", MelSpectrogram(cfg), 256)
    assert utterance is not None
    assert "twenty twenty-four" in utterance.text and "three dollars and fifty cents" in utterance.text
    assert utterance.durations.sum() == utterance.mel.shape[0]
    assert len(utterance.durations) == len(utterance.phonemes)
    assert synthesize_teacher("... !!!", MelSpectrogram(cfg), 256) is None


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    sentences = COVERAGE_TEXT + list(generated_sentences(40, seed=3))
    counts = build(sentences, out, AudioConfig())
    assert counts["train"] + counts["eval"] == len(sentences)
    return out


def test_saved_splits_round_trip(tiny_teacher: Path) -> None:
    split = TeacherSplit.load(tiny_teacher / "train.safetensors")
    for i in range(len(split)):
        tokens, durations, mel = split.item(i)
        assert len(tokens) == len(durations) and int(durations.sum()) == mel.shape[0]
        assert (tokens > 0).all(), "id 0 is padding"


def test_a_few_training_steps_bring_the_loss_down(tiny_teacher: Path) -> None:
    torch.set_num_threads(1)
    import json

    symbols = json.loads((tiny_teacher / "meta.json").read_text())["symbols"]
    split = TeacherSplit.load(tiny_teacher / "train.safetensors")
    sizes = {"channels": 32, "encoder_layers": 1, "decoder_channels": 32, "decoder_layers": 2}
    cfg = TrainConfig(epochs=20, max_frames=4000, lr=5e-3, sizes=sizes)
    _, history = train(cfg, split, split, len(symbols), 80)
    first, last = history[0], history[-1]
    assert last["mel"] < 0.7 * first["mel"]
    assert last["eval_mel"] < first["mel"]


def _english_sentences() -> list[str]:
    hard = [
        "Xylophones, zephyrs and quixotic jukeboxes: the judge vexed everyone by 9:45 pm.",
        "Would you measure the azure treasure in the Thames, or the genre of the rouge beige garage?",
        "Ooh, aah, hmm; the bourgeois entrepreneur's naïve façade, Worcestershire and Arkansas.",
        "Thirty-three thousand three hundred and thirty-three thistles, 1st, 2nd and 3rd of July 1999.",
    ]
    return hard + list(itertools.islice(docstring_sentences(), 150)) + list(generated_sentences(150, seed=7))


@pytest.mark.skipif(not (SHIPPED / "addon.json").is_file(), reason="no shipped voice")
def test_every_english_phoneme_maps_to_a_symbol_of_the_shipped_voice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frontend = Frontend(load_addon(SHIPPED).symbols)
    for text in _english_sentences():
        frontend.phonemize(text)
    assert "dropped phoneme" not in caplog.text


@pytest.mark.skipif(not (SHIPPED / "addon.json").is_file(), reason="no shipped voice")
def test_shipped_voice_audio_length_follows_its_predicted_durations() -> None:
    import tts_neuron
    from tts_neuron.blocks.acoustic import durations_to_frames

    voice = tts_neuron.load(SHIPPED)
    text = "The shipped voice speaks this sentence."
    mel: list[np.ndarray] = []
    audio = np.concatenate(list(voice.stream(text, mel.append)))
    (sentence,) = voice.frontend.sentences(text)
    tokens = torch.tensor([sentence.tokens])
    mask = torch.ones_like(tokens, dtype=torch.float32)
    with torch.inference_mode():
        encodings = voice.addon.network("text_encoder")(tokens, mask)
        frames = durations_to_frames(voice.addon.network("duration_predictor")(encodings, mask)[0], 1.0, 100)
    n_frames = int(frames.sum())
    assert sum(m.shape[0] for m in mel) == n_frames
    assert len(audio) == n_frames * voice.addon.audio.hop_length


@pytest.mark.slow  # about 47 s on 2 cores
def test_a_few_attention_training_steps_bring_the_losses_down(tiny_teacher: Path) -> None:
    """Teacher forcing and the guided-attention term both learn: mel error and attention CE fall."""
    torch.set_num_threads(1)
    import json

    from tests.conftest import TINY_TACOTRON_SIZES

    symbols = json.loads((tiny_teacher / "meta.json").read_text())["symbols"]
    split = TeacherSplit.load(tiny_teacher / "train.safetensors")
    sizes = {**TINY_TACOTRON_SIZES, "channels": 32, "attention_dim": 16, "rnn": 32}
    cfg = train_tacotron.TacotronConfig(epochs=15, max_frames=4000, lr=1e-2, sizes=sizes)
    entries, history = train_tacotron.train(cfg, split, split, len(symbols), 80)
    first, last = history[0], history[-1]
    assert last["postnet"] < 0.7 * first["postnet"]
    assert last["attention"] < 0.9 * first["attention"]
    assert {"eval_postnet", "eval_stop", "eval_attention"} <= set(last)
    assert set(entries) == {"encoder", "decoder_step", "postnet", "vocoder"}  # the vocoder trains apart
