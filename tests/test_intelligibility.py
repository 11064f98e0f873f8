"""Tests for the metric code of benchmarks/intelligibility.py (a script, so it is loaded from its path)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pocketsphinx
import pytest
import torch

from tests.conftest import edit_addon_json
from tts_neuron.audio import AudioConfig, MelSpectrogram
from tts_neuron.frontend.espeak import Espeak
from tts_neuron_build.addon_writer import GRIFFIN_LIM_STACK
from tts_neuron_build.teacher import save_split, synthesize_teacher

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("intelligibility", REPO / "benchmarks" / "intelligibility.py")
assert _spec is not None and _spec.loader is not None
ib = importlib.util.module_from_spec(_spec)
sys.modules["intelligibility"] = ib  # dataclasses look their module up by name
_spec.loader.exec_module(ib)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "She sells sea shells by the sea shore.",
    "Would you, could you, on a boat?",
]


# --- WER ------------------------------------------------------------------------------------------------


def test_normalise_words_drops_punctuation_and_splits_hyphens() -> None:
    assert ib.normalise_words('A well-known "word", e.g. it\'s (x/y)!') == [
        "a", "well", "known", "word", "e", "g", "it's", "x", "y",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("hypothesis", "errors"),
    [
        ("the cat sat", 0),
        ("the dog sat", 1),  # substitution
        ("the sat", 1),  # deletion
        ("the cat sat down", 1),  # insertion
        ("a cat", 2),  # substitution and deletion
        ("", 3),  # empty hypothesis: every word deleted
    ],
)
def test_word_errors(hypothesis: str, errors: int) -> None:
    assert ib.word_errors(["the", "cat", "sat"], hypothesis.split()) == errors


def test_corpus_wer_is_total_errors_over_total_words() -> None:
    errors, words = np.array([1.0, 0.0, 3.0]), np.array([2.0, 5.0, 3.0])
    assert ib.ratio_of_sums(errors, words) == pytest.approx(4 / 10)  # not the mean of 0.5, 0 and 1


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_sentences() -> None:
    rng = np.random.default_rng(1)

    def corpus(n: int) -> tuple[np.ndarray, np.ndarray]:
        words = rng.integers(5, 20, size=n).astype(np.float64)  # [n]
        return rng.binomial(words.astype(int), 0.3).astype(np.float64), words

    widths = []
    for n in (20, 500):
        errors, words = corpus(n)
        low, high = ib.bootstrap_ci(errors, words)
        assert low <= ib.ratio_of_sums(errors, words) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_seeded() -> None:
    errors, words = np.arange(10.0), np.full(10, 12.0)
    assert ib.bootstrap_ci(errors, words) == ib.bootstrap_ci(errors, words)
    assert ib.bootstrap_ci(errors, words, seed=1) != ib.bootstrap_ci(errors, words)


# --- Audio ----------------------------------------------------------------------------------------------


def test_resample_keeps_a_sine_at_its_frequency_with_the_right_length() -> None:
    t = np.arange(22050) / 22050  # one second
    out = ib.resample(np.sin(2 * np.pi * 1000 * t), 22050, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))  # 1 Hz bins
    assert int(np.argmax(spectrum)) == 1000
    assert np.abs(out).max() == pytest.approx(1.0, abs=0.01)


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    t = np.arange(22050) / 22050
    out = ib.resample(np.sin(2 * np.pi * 10000 * t), 22050, 16000)  # above the new 8 kHz Nyquist
    assert np.abs(out).max() < 1e-9


def test_dither_is_seeded_and_int16() -> None:
    silence = np.zeros(16000)
    a = ib.dithered_int16(silence, 100.0, np.random.default_rng(0))
    assert a.dtype == np.int16
    assert np.array_equal(a, ib.dithered_int16(silence, 100.0, np.random.default_rng(0)))
    assert a.std() == pytest.approx(100.0, rel=0.05)


# --- PESQ and STOI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak_audio() -> tuple[np.ndarray, int]:
    synthesis = Espeak.get().synthesize(SENTENCES[0])
    return synthesis.audio.astype(np.float32) / 32768.0, synthesis.sample_rate


def test_speech_quality_is_best_for_the_signal_itself(espeak_audio: tuple[np.ndarray, int]) -> None:
    audio, rate = espeak_audio
    assert ib.speech_quality(audio, audio, rate) == pytest.approx((4.64, 1.0), abs=0.01)  # PESQ's maximum
    padded = np.concatenate([audio, np.zeros(256, np.float32)])  # a copy synthesis's few extra samples
    assert ib.speech_quality(audio, padded, rate) == pytest.approx((4.64, 1.0), abs=0.01)
    noisy = audio + np.random.default_rng(0).normal(0.0, 0.05, size=audio.shape).astype(np.float32)
    pesq_wb, stoi = ib.speech_quality(audio, noisy, rate)
    assert 1.0 <= pesq_wb < 2.0 and 0.5 < stoi < 0.99


def test_speech_quality_raises_pesq_error_when_it_cannot_score(espeak_audio: tuple[np.ndarray, int]) -> None:
    audio, rate = espeak_audio
    silence = np.zeros_like(audio)
    with pytest.raises(ib.PesqError):  # no utterance in the reference
        ib.speech_quality(silence, audio, rate)
    with pytest.raises(ib.PesqError):  # an all-zero signal
        ib.speech_quality(audio, silence, rate)


# --- MCD and DTW ----------------------------------------------------------------------------------------


def test_dct_matrix_is_orthonormal() -> None:
    basis = ib.dct_matrix(80)
    assert np.allclose(basis @ basis.T, np.eye(80))


def test_mcd_of_identical_cepstra_is_zero_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    cepstra = ib.mel_cepstra(rng.normal(size=(40, 80)))  # [40, 24]
    assert cepstra.shape == (40, 24)
    assert np.allclose(np.diag(ib.frame_mcd(cepstra, cepstra)), 0.0, atol=1e-5)
    assert ib.aligned_mcd(cepstra, cepstra) == pytest.approx(0.0, abs=1e-5)
    assert ib.aligned_mcd(cepstra, cepstra + 0.1) > 0.0


def test_mcd_follows_its_formula() -> None:
    a, b = np.zeros((1, 24)), np.zeros((1, 24))
    b[0, 0], b[0, 1] = 3.0, 4.0  # Σ Δc² = 25
    assert ib.frame_mcd(a, b)[0, 0] == pytest.approx(10 / np.log(10) * np.sqrt(2 * 25))


def test_dtw_against_a_time_stretched_copy_costs_nearly_nothing() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(60, 24)), axis=0)  # [60, 24]: a smooth walk
    stretched = np.repeat(x, 3, axis=0)[::2]  # [90, 24]: 1.5 times slower
    total, length = ib.dtw(ib.frame_mcd(x, stretched))
    assert total == pytest.approx(0.0, abs=1e-4)
    assert length == 90
    shuffled = x[rng.permutation(60)]
    assert ib.aligned_mcd(shuffled, stretched) > 10.0


def test_dtw_matches_a_plain_dynamic_programme() -> None:
    rng = np.random.default_rng(2)
    cost = rng.random((7, 11))
    expected = np.full((8, 12), np.inf)
    expected[0, 0] = 0.0
    for i in range(1, 8):
        for j in range(1, 12):
            before = min(expected[i - 1, j - 1], expected[i - 1, j], expected[i, j - 1])
            expected[i, j] = cost[i - 1, j - 1] + (0.0 if i == j == 1 else before)
    assert ib.dtw(cost)[0] == pytest.approx(expected[-1, -1])


def test_duration_error() -> None:
    error = ib.duration_error(np.array([3, 5, 2]), np.array([4, 5, 0]))
    assert (error.abs_error, error.phonemes) == (3.0, 3)


# --- Language model and recogniser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def language_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    references = [ib.normalise_words(s) for s in SENTENCES] + [["zzyzxq", "the"]]
    return ib.write_language_model(references, tmp_path_factory.mktemp("lm"))


def parse_unigrams(arpa: str) -> dict[str, float]:
    """word -> log10 probability, from the 1-grams section of an ARPA file."""
    section = arpa.split("\\1-grams:")[1].split("\\end\\")[0]
    return {line.split()[1]: float(line.split()[0]) for line in section.splitlines() if line.strip()}


def test_arpa_text_lists_every_in_vocabulary_word() -> None:
    text = ib.arpa_unigram([["the", "cat"], ["the", "zzyzxq"]], vocabulary=["the", "cat"])
    unigrams = parse_unigrams(text)
    assert set(unigrams) == {"<s>", "</s>", "the", "cat"}
    assert "ngram 1=4" in text
    assert 10 ** unigrams["the"] == pytest.approx(2 / 5, rel=1e-3)  # 3 in-vocabulary words + 2 sentence ends
    assert sum(10**p for w, p in unigrams.items() if w != "<s>") == pytest.approx(1.0, abs=1e-3)


def test_language_model_loads_in_pocketsphinx(language_model: Any) -> None:
    assert language_model.oov_types == ["zzyzxq"]
    recogniser = ib.Recogniser(language_model.lm, language_model.dictionary)
    words = {w for s in SENTENCES for w in ib.normalise_words(s)}
    assert language_model.vocabulary_size == len(words)
    assert all(recogniser.decoder.lookup_word(w) for w in words)
    lm_text = language_model.lm.read_text()
    assert all(f" {w}\n" in lm_text for w in words)


def test_espeak_sentence_is_recognised_end_to_end(language_model: Any) -> None:
    synthesis = Espeak.get().synthesize(SENTENCES[0])
    audio = ib.recogniser_input(synthesis.audio / 32768.0, synthesis.sample_rate)
    heard = ib.Recogniser(language_model.lm, language_model.dictionary).transcribe(
        ib.dithered_int16(audio, ib.DITHER_SIGMA, np.random.default_rng(0))
    )
    reference = ib.normalise_words(SENTENCES[0])
    assert ib.word_errors(reference, ib.normalise_words(heard)) <= 2


# --- Command line ---------------------------------------------------------------------------------------


def test_missing_inputs_exit_2_with_advice(tmp_path: Path, tiny_addon_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert ib.main(["--addon", str(tiny_addon_dir), "--data", str(tmp_path / "none")]) == 2
    assert "make teacher" in capsys.readouterr().err
    data = tmp_path / "teacher"
    data.mkdir()
    for name in ("eval.txt", "eval.safetensors", "meta.json"):
        (data / name).touch()
    assert ib.main(["--addon", str(tmp_path / "no-addon"), "--data", str(data)]) == 2
    assert "no addon" in capsys.readouterr().err
    assert ib.main(["--addon", str(tiny_addon_dir), "--data", str(data), "--compare-stack", "nope"]) == 2
    assert "no stack 'nope'" in capsys.readouterr().err


def test_pick_sentences_spreads_over_the_set() -> None:
    assert ib.pick_sentences(10, None) == list(range(10))
    assert ib.pick_sentences(10, 3) == [0, 4, 9]  # 4.5 rounds to even
    assert ib.pick_sentences(3, 5) == [0, 1, 2]


def test_model_ships_in_the_wheel() -> None:
    hmm, dictionary = ib.model_paths()
    assert hmm.is_dir() and dictionary.is_file()
    assert Path(pocketsphinx.get_model_path()) in hmm.parents


@pytest.fixture
def tiny_teacher(tmp_path: Path, tiny_addon_dir: Path) -> Path:
    """Teacher data for two sentences, in the tiny addon's symbol table, made as compile.teacher makes it."""
    config = AudioConfig()
    symbols = json.loads((tiny_addon_dir / "addon.json").read_text())["symbols"]
    utterances = [
        synthesize_teacher(text, MelSpectrogram(config), config.hop_length) for text in SENTENCES[:2]
    ]
    data = tmp_path / "teacher"
    data.mkdir()
    save_split(data / "eval.safetensors", [u for u in utterances if u], {s: i for i, s in enumerate(symbols)})
    (data / "meta.json").write_text(json.dumps({"symbols": symbols, "audio": config.to_dict()}))
    return data


def test_script_writes_its_report(tmp_path: Path, addon_copy: Path, tiny_teacher: Path) -> None:
    edit_addon_json(addon_copy, lambda config: config["stacks"].update({"griffin-lim": GRIFFIN_LIM_STACK}))
    threads = torch.get_num_threads()
    out = tmp_path / "results"
    args = ["--addon", str(addon_copy), "--data", str(tiny_teacher), "--seeds", "2", "--jobs", "1"]
    try:
        assert ib.main([*args, "--compare-stack", "griffin-lim", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "intelligibility.json").read_text())
    run = report["run"]
    assert run["sentences"] == 2 and not run["addon_trained"]
    assert (run["stack"], run["compare_stack"]) == ("cpu", "griffin-lim")
    assert list(report["systems"]) == ["espeak", "ceiling", "copy", "voice", "voice_compare"]
    assert report["systems"]["espeak"]["wer"] < 0.5  # the recogniser hears espeak-ng
    assert len(report["systems"]["voice"]["wer_per_seed"]) == 2

    paired = report["paired"]
    assert set(paired) == {f"{a}_minus_{b}" for a, b in ib.PAIRS}
    assert report["voice_minus_ceiling"] == paired["voice_minus_ceiling"]
    wer = {name: entry["wer"] for name, entry in report["systems"].items()}
    assert paired["copy_minus_ceiling"]["wer"] == pytest.approx(wer["copy"] - wer["ceiling"])
    low, high = paired["voice_minus_voice_compare"]["ci95"]
    assert low <= paired["voice_minus_voice_compare"]["wer"] <= high

    quality = report["copy_vs_espeak"]
    assert quality["sentences"] + len(quality["skipped"]) == 2
    assert set(quality["systems"]) == {"ceiling", "copy"}
    for entry in quality["systems"].values():
        assert 1.0 <= entry["pesq_wb"] <= 4.65 and 0.0 <= entry["stoi"] <= 1.0
        assert entry["pesq_wb_ci95"][0] <= entry["pesq_wb"] <= entry["pesq_wb_ci95"][1]
    assert all(set(s["pesq_wb"]) == set(s["stoi"]) == {"ceiling", "copy"} for s in report["per_sentence"])

    assert report["voice_vs_teacher"]["duration_sentences"] == 2  # same phonemes, same symbol table
    assert report["voice_vs_teacher"]["mcd_db"] > 0
    assert len(report["per_sentence"]) == 2
    markdown = (out / "intelligibility.md").read_text()
    assert "| ours − Griffin-Lim copy (paired) |" in markdown
    assert "| ours − ours via griffin-lim (paired) |" in markdown
    assert "| espeak-ng → log-mel → neural vocoder (copy synthesis) |" in markdown
    assert "PESQ (wide band)" in markdown


def test_an_addon_without_vocoder_has_no_copy_system(addon_copy: Path, tiny_teacher: Path) -> None:
    def drop_vocoder(config: dict[str, Any]) -> None:
        del config["networks"]["vocoder"]
        config["stacks"] = {"griffin-lim": GRIFFIN_LIM_STACK}
        config["default_stack"] = "griffin-lim"

    edit_addon_json(addon_copy, drop_vocoder)
    systems = ib.Systems(addon_copy, tiny_teacher)
    assert list(systems.labels) == ["espeak", "ceiling", "voice"]
    sentence = ib.Sentence(0, SENTENCES[0], ib.normalise_words(SENTENCES[0]))
    systems.fill(sentence)
    assert set(sentence.audio) == {"espeak", "ceiling", "voice"}
    assert set(sentence.pesq) == set(sentence.stoi) == {"ceiling"}
