"""Intelligibility of a voice against espeak-ng, its teacher: word error rate from an offline recogniser,
mel-cepstral distortion and duration error on the held-out teacher sentences, and how much of espeak-ng's
audio survives our log-mel and each vocoder (PESQ, STOI).

    python benchmarks/intelligibility.py --addon addons/fastspeech-en --data data/teacher [--sentences N]
        [--seeds 3] [--stack NAME] [--compare-stack NAME] [--out benchmarks/results]

pocketsphinx, with its stock English model, is a weak recogniser: its WER is a relative signal, not a
measure of how a listener hears the voice. Up to five systems are decoded on the same sentences and dither:
espeak-ng; copy synthesis, espeak-ng's audio through our log-mel and then Griffin-Lim ("ceiling") or the
addon's neural vocoder ("copy", when it has one), which is the best each vocoder can do; the voice through
its stack; and, with --compare-stack, the same voice through another stack (e.g. Griffin-Lim instead of the
neural vocoder). Paired WER differences separate what the vocoder loses from what the acoustic model loses.
PESQ (wide band) and STOI compare each copy synthesis with espeak-ng's own audio, sample by sample.

Decoding uses a closed-vocabulary unigram language model over the words of every held-out sentence (not
only the ones evaluated, so that a run on a subset estimates the same figure), slight Gaussian dither to
break digital silence, and a fresh decoder state per utterance, so that no result depends on the order of
decoding. WER is averaged over dither seeds, with a bootstrap interval over sentences.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pocketsphinx
import torch
from pesq import PesqError, pesq
from pystoi import stoi
from tqdm import tqdm

import tts_neuron
from tts_neuron.audio import AudioConfig, GriffinLim, MelSpectrogram
from tts_neuron.blocks.acoustic import durations_to_frames
from tts_neuron.errors import AttentionError
from tts_neuron.frontend.espeak import Espeak
from tts_neuron_build.teacher import TeacherSplit

RECOGNISER_RATE = 16000
"""Sample rate of pocketsphinx's English acoustic model."""
QUALITY_RATE = 16000
"""Sample rate of wide-band PESQ (STOI resamples to 10 kHz itself)."""
DITHER_SIGMA = 100.0
"""Standard deviation of the dither in int16 units: enough to break digital silence, far below speech."""
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
N_CEPSTRA = 24
"""Cepstral coefficients c1..c24 enter the MCD; c0 (overall level) is left out."""
MCD_SCALE = 10.0 / math.log(10.0)

SYSTEMS = {
    "espeak": ("espeak-ng", "espeak-ng"),
    "ceiling": ("espeak-ng → log-mel → Griffin-Lim (copy synthesis)", "Griffin-Lim copy"),
    "copy": ("espeak-ng → log-mel → neural vocoder (copy synthesis)", "vocoder copy"),
}
"""System -> (label, short name for paired rows); the voices' labels name the addon and stack. "ceiling"
keeps its name from before the neural vocoder, so that older reports read the same."""
COPIES = ("ceiling", "copy")
"""The copy syntheses, scored against espeak-ng's audio by PESQ and STOI."""
PAIRS = [
    ("copy", "espeak"),
    ("ceiling", "espeak"),
    ("copy", "ceiling"),
    ("voice", "espeak"),
    ("voice", "ceiling"),
    ("voice", "voice_compare"),
]
"""Paired WER differences (first minus second), reported where both systems ran."""


# --- Word error rate ------------------------------------------------------------------------------------


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation; hyphens and slashes separate words, inner apostrophes stay.

    The recogniser's dictionary spells contractions with their apostrophe ("doesn't"), so removing it
    would make them out of vocabulary.
    """
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower())


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))  # distances from the empty reference prefix
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray) -> float:
    """Σ numerators / Σ denominators: a corpus-level WER when these are per-sentence errors and words."""
    return float(numerators.sum() / denominators.sum())


def bootstrap_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of Σ numerators / Σ denominators, resampling sentences with replacement.

    Sentences are the unit that varies, so they are resampled whole; a paired difference is bootstrapped
    by passing per-sentence differences as numerators, which keeps each sentence's two systems together.
    """
    # numerators, denominators: [S], one entry per sentence
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(numerators), size=(resamples, len(numerators)))  # [R, S]
    stats = numerators[picks].sum(axis=1) / denominators[picks].sum(axis=1)  # [R]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


# --- Audio for the recogniser ---------------------------------------------------------------------------


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling by FFT: keep the spectrum below the lower Nyquist, invert at the new length.

    The signal is treated as periodic; utterances start and end near silence, so the wrap is inaudible.
    """
    # audio: [S] -> [round(S * to_rate / from_rate)]
    n_out = round(len(audio) * to_rate / from_rate)
    if n_out == 0:  # a voice stopped before its first chunk
        return np.zeros(0)
    spectrum = np.fft.rfft(audio.astype(np.float64))  # [S // 2 + 1]
    kept = np.zeros(n_out // 2 + 1, dtype=np.complex128)  # [n_out // 2 + 1]
    n = min(len(kept), len(spectrum))
    kept[:n] = spectrum[:n]
    return np.fft.irfft(kept, n_out) * (n_out / len(audio))


def dithered_int16(audio: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Audio in int16 units plus Gaussian dither, rounded and clipped to int16."""
    noisy = audio + rng.normal(0.0, sigma, size=audio.shape)
    return np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)


def recogniser_input(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float audio in [-1, 1] at `sample_rate` to float32 in int16 units at 16 kHz, ready for dither."""
    return resample(audio * 32768.0, sample_rate, RECOGNISER_RATE).astype(np.float32)


# --- Recogniser -----------------------------------------------------------------------------------------


def model_paths() -> tuple[Path, Path]:
    """The acoustic model folder and pronunciation dictionary that ship in the pocketsphinx wheel."""
    root = Path(pocketsphinx.get_model_path()) / "en-us"
    return root / "en-us", root / "cmudict-en-us.dict"


def read_dictionary(path: Path) -> dict[str, list[str]]:
    """Word -> its dictionary lines (alternative pronunciations are listed as "word(2)")."""
    entries: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            word = re.sub(r"\(\d+\)$", "", line.split(maxsplit=1)[0])
            entries.setdefault(word, []).append(line)
    return entries


def arpa_unigram(sentences: Iterable[list[str]], vocabulary: Iterable[str]) -> str:
    """A closed-vocabulary unigram ARPA model: each in-vocabulary word at its relative frequency.

    </s> is counted once per sentence; <s> is only ever a context, so it gets the conventional -99.
    """
    known = set(vocabulary)
    counts: Counter[str] = Counter()
    n_sentences = 0
    for words in sentences:
        counts.update(w for w in words if w in known)
        n_sentences += 1
    total = sum(counts.values()) + n_sentences
    lines = ["\\data\\", f"ngram 1={len(counts) + 2}", "", "\\1-grams:", "-99.0000 <s>"]
    lines.append(f"{math.log10(n_sentences / total):.4f} </s>")
    lines += [f"{math.log10(count / total):.4f} {word}" for word, count in sorted(counts.items())]
    return "\n".join([*lines, "", "\\end\\", ""])


class Recogniser:
    """pocketsphinx with a given language model and dictionary, reset before every utterance.

    A decoder carries its cepstral-mean estimate from one utterance to the next, which changes some
    hypotheses; reinitialising (milliseconds with a small dictionary) makes each result independent.
    """

    def __init__(self, lm: Path, dictionary: Path) -> None:
        hmm, _ = model_paths()
        self.decoder = pocketsphinx.Decoder(
            hmm=str(hmm), lm=str(lm), dict=str(dictionary), samprate=RECOGNISER_RATE, loglevel="FATAL"
        )

    def transcribe(self, audio: np.ndarray) -> str:
        """int16 audio at 16 kHz -> the best hypothesis ("" when nothing was recognised)."""
        if len(audio) == 0:
            return ""
        self.decoder.reinit()
        self.decoder.start_utt()
        self.decoder.process_raw(audio.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


@dataclass
class LanguageModel:
    """The files a Recogniser reads, and what the vocabulary leaves out."""

    lm: Path
    dictionary: Path
    vocabulary_size: int
    oov_types: list[str]


def write_language_model(sentences: list[list[str]], folder: Path) -> LanguageModel:
    """The unigram LM over all given sentences plus the dictionary entries of its words only.

    The reduced dictionary decodes exactly like the full one (the LM admits no other word) and loads in
    milliseconds instead of a third of a second, which is what makes a fresh decoder per utterance cheap.
    """
    _, full_dictionary = model_paths()
    entries = read_dictionary(full_dictionary)
    words = {w for sentence in sentences for w in sentence}
    vocabulary = sorted(words & entries.keys())
    lm, dictionary = folder / "eval.arpa", folder / "eval.dict"
    lm.write_text(arpa_unigram(sentences, vocabulary), encoding="utf-8")
    dictionary.write_text("".join(line + "\n" for w in vocabulary for line in entries[w]), encoding="utf-8")
    return LanguageModel(lm, dictionary, len(vocabulary), sorted(words - entries.keys()))


# --- Spectral distance and durations --------------------------------------------------------------------


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix [n, n]: cepstra = log_mel @ dct_matrix(n).T."""
    k = np.arange(n)[:, None]  # [n, 1]
    i = np.arange(n)[None, :]  # [1, n]
    basis = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * np.sqrt(2.0 / n)  # [n, n]
    basis[0] /= np.sqrt(2.0)
    return basis


def mel_cepstra(log_mel: np.ndarray, n_cepstra: int = N_CEPSTRA) -> np.ndarray:
    """Log-mel [T, n_mels] -> cepstra c1..c_n [T, n_cepstra]."""
    return (log_mel @ dct_matrix(log_mel.shape[1]).T)[:, 1 : n_cepstra + 1]


def frame_mcd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MCD in dB between every frame of `a` and every frame of `b`: [Ta, D], [Tb, D] -> [Ta, Tb]."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T  # [Ta, Tb]
    return MCD_SCALE * np.sqrt(2.0 * np.maximum(squared, 0.0))


def dtw(cost: np.ndarray) -> tuple[float, int]:
    """Minimum total cost of a monotonic path from (0, 0) to the far corner, and the path's length.

    Steps are (1, 0), (0, 1) and (1, 1), each adding the cost of the cell it enters. Within a row, the
    horizontal recursion D[j] = min(E[j], D[j-1] + c[j]) is a running minimum over cumulative sums, so
    each row is a few vectorised operations.
    """
    # cost: [Ta, Tb]
    n_a, n_b = cost.shape
    total = np.empty_like(cost)  # [Ta, Tb]: best cost of a path ending at each cell
    total[0] = np.cumsum(cost[0])
    for i in range(1, n_a):
        entering = cost[i].copy()  # [Tb]: best cost entering each cell from the row above
        entering[0] += total[i - 1, 0]
        entering[1:] += np.minimum(total[i - 1, 1:], total[i - 1, :-1])
        running = np.cumsum(cost[i])  # [Tb]
        total[i] = np.minimum.accumulate(entering - running) + running
    i, j, length = n_a - 1, n_b - 1, 1
    while i > 0 or j > 0:  # walk back along the cheapest predecessors to count the path's cells
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]]))
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        length += 1
    return float(total[-1, -1]), length


def aligned_mcd(ours: np.ndarray, reference: np.ndarray) -> float:
    """Mean MCD in dB along the DTW path between two cepstral sequences [T, D] of different lengths."""
    total, length = dtw(frame_mcd(ours, reference))
    return total / length


@dataclass
class DurationError:
    """One sentence's predicted frame counts against the teacher's."""

    abs_error: float  # Σ |ours - teacher| frames
    phonemes: int


def duration_error(ours: np.ndarray, teacher: np.ndarray) -> DurationError:
    # ours, teacher: [N] frames per phoneme
    return DurationError(float(np.abs(ours - teacher).sum()), len(ours))


# --- Copy-synthesis quality -----------------------------------------------------------------------------


def speech_quality(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Wide-band PESQ and STOI of `degraded` against `reference`, float audio in [-1, 1] at `sample_rate`.

    Both metrics compare the signals sample by sample, so they are trimmed to the shorter one first (a copy
    synthesis has T * hop samples for espeak-ng's S, T = S // hop + 1) and resampled to 16 kHz. Raises
    PesqError where PESQ cannot score the pair (it detects no utterance, or a signal is all zeros).
    """
    # reference: [S], degraded: [S'] -> both [round(min(S, S') * 16000 / sample_rate)]
    n = min(len(reference), len(degraded))
    ref = resample(reference[:n], sample_rate, QUALITY_RATE)
    deg = resample(degraded[:n], sample_rate, QUALITY_RATE)
    try:
        pesq_wb = pesq(QUALITY_RATE, ref, deg, "wb")
    except ValueError as err:  # an all-zero signal: pesq's level alignment turns NaN into an integer
        raise PesqError(f"silent signal ({err})") from err
    return float(pesq_wb), float(stoi(ref, deg, QUALITY_RATE, extended=False))


# --- Synthesis ------------------------------------------------------------------------------------------


@dataclass
class Sentence:
    """One held-out sentence with everything the metrics need."""

    index: int
    text: str
    reference: list[str]
    audio: dict[str, np.ndarray] = field(default_factory=dict)  # system -> [S16] float32 in int16 units
    mcd_db: float | None = None
    durations: DurationError | None = None
    frames: tuple[int, int] | None = None
    """(the voice's mel frames, the teacher's)"""
    failure: str | None = None
    """The voice's AttentionError, if its guards stopped it; its audio is then what came before."""
    pesq: dict[str, float] = field(default_factory=dict)  # copy system -> wide-band PESQ
    stoi: dict[str, float] = field(default_factory=dict)  # copy system -> STOI
    quality_skipped: str | None = None
    """Why PESQ could not score one of the copies; the sentence then has no PESQ or STOI for any."""


class Systems:
    """Makes each system's audio for a sentence, and the comparisons with espeak-ng and the teacher."""

    def __init__(
        self, addon: Path, data: Path, stack: str | None = None, compare_stack: str | None = None
    ) -> None:
        self.voice = tts_neuron.load(addon, stack=stack)
        self.compare: tts_neuron.Voice | None = None
        if compare_stack is not None:
            self.compare = tts_neuron.load(addon, stack=compare_stack, frontend=self.voice.frontend)
        vocoders = [spec.name for spec in self.voice.addon.networks_with_role("vocoder")]
        if len(vocoders) > 1:
            raise SystemExit(f"{addon}: several vocoder networks {vocoders}; copy synthesis needs one")
        self.vocoder = self.voice.addon.network(vocoders[0]) if vocoders else None
        name = self.voice.addon.name
        self.labels = {key: SYSTEMS[key] for key in ("espeak", "ceiling")}
        """System -> (label, short name), for the systems this addon has, in the report's order."""
        if self.vocoder is not None:
            self.labels["copy"] = SYSTEMS["copy"]
        self.labels["voice"] = (f"{name} (ours, stack {self.voice.stack_name})", "ours")
        if self.compare is not None:
            compared = self.compare.stack_name
            self.labels["voice_compare"] = (f"{name} (ours, stack {compared})", f"ours via {compared}")
        meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
        self.teacher_symbols: list[str] = meta["symbols"]
        config = AudioConfig.from_dict(meta["audio"])
        if config != self.voice.addon.audio:
            raise SystemExit(f"{addon}: audio settings differ from the teacher's in {data / 'meta.json'}")
        self.config = config
        self.teacher = TeacherSplit.load(data / "eval.safetensors")
        self.mel, self.griffin_lim = MelSpectrogram(config), GriffinLim(config)
        self.espeak = Espeak.get()

    def espeak_audio(self, text: str) -> np.ndarray:
        """espeak-ng's own float waveform in [-1, 1] at 22050 Hz."""
        return self.espeak.synthesize(text, self.voice.addon.language).audio.astype(np.float32) / 32768.0

    def fill(self, sentence: Sentence) -> None:
        """Every system's recogniser audio, PESQ and STOI of the copies, the voice's MCD and durations."""
        rate = self.config.sample_rate
        espeak = self.espeak_audio(sentence.text)  # [S]
        audio = {"espeak": espeak}
        with torch.inference_mode():
            log_mel = self.mel(torch.from_numpy(espeak))  # [T, n_mels], T = S // hop + 1
            audio["ceiling"] = self.griffin_lim(log_mel).numpy()  # [T * hop]
            if self.vocoder is not None:  # the whole utterance at once: no windows, nothing to stream
                mask = torch.ones(1, len(log_mel))  # [1, T]
                audio["copy"] = self.vocoder(log_mel.unsqueeze(0), mask)[0].numpy()  # [T * hop]
        try:
            scores = {name: speech_quality(espeak, audio[name], rate) for name in COPIES if name in audio}
        except PesqError as err:
            sentence.quality_skipped = f"{type(err).__name__}: {err}"
        else:
            sentence.pesq = {name: score[0] for name, score in scores.items()}
            sentence.stoi = {name: score[1] for name, score in scores.items()}
        frames: list[np.ndarray] = []
        audio["voice"], sentence.failure = speak(self.voice, sentence.text, frames.append)
        if self.compare is not None:
            # Its guard failures are not listed: a truncation shows in its WER, like the voice's.
            audio["voice_compare"], _ = speak(self.compare, sentence.text)
        sentence.audio = {name: recogniser_input(audio[name], rate) for name in self.labels}
        if sentence.failure:
            return

        tokens, teacher_durations, teacher_mel = self.teacher.item(sentence.index)
        ours_mel = np.concatenate(frames)  # [T_ours, n_mels]
        sentence.frames = (len(ours_mel), len(teacher_mel))
        sentence.mcd_db = aligned_mcd(mel_cepstra(ours_mel), mel_cepstra(teacher_mel.numpy()))
        if {"text_encoder", "duration_predictor"} <= set(self.voice.addon.networks):
            phonemes, predicted = self.predicted_durations(sentence.text)
            if phonemes == [self.teacher_symbols[t] for t in tokens.tolist()]:
                sentence.durations = duration_error(predicted, teacher_durations.numpy())

    def predicted_durations(self, text: str) -> tuple[list[str], np.ndarray]:
        """The voice's phonemes and frame counts, from its own encoder and duration predictor.

        Phonemes are compared by name rather than id, so that an addon with another symbol table (the
        untrained one) is still checked phoneme by phoneme.
        """
        encoder = self.voice.addon.network("text_encoder")
        predictor = self.voice.addon.network("duration_predictor")
        phonemes: list[str] = []
        frames: list[np.ndarray] = []
        with torch.inference_mode():
            for part in self.voice.frontend.sentences(text):  # one, unless the frontend splits the text
                tokens = torch.tensor([part.tokens], dtype=torch.int64)  # [1, N]
                mask = torch.ones_like(tokens, dtype=torch.float32)  # [1, N]
                log_durations = predictor(encoder(tokens, mask), mask)  # [1, N]
                frames.append(durations_to_frames(log_durations[0], 1.0, 100).numpy())  # [N]
                phonemes += part.phonemes
        return phonemes, np.concatenate(frames)


def speak(voice: tts_neuron.Voice, text: str, mel_sink: Any = None) -> tuple[np.ndarray, str | None]:
    """The voice's audio for `text`, and the error if an attention voice's guards stopped it (the audio
    is then what it made before: a truncation the recogniser will count)."""
    chunks: list[np.ndarray] = []
    try:
        for chunk in voice.stream(text, mel_sink):
            chunks.append(chunk)
    except AttentionError as err:
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32), str(err)
    return np.concatenate(chunks), None


# --- Decoding -------------------------------------------------------------------------------------------

_worker: Recogniser | None = None


def _start_worker(lm: Path, dictionary: Path) -> None:
    global _worker
    _worker = Recogniser(lm, dictionary)


def _decode(job: tuple[int, str, np.ndarray, list[int]]) -> tuple[int, str, list[str], float]:
    """One sentence of one system under every dither seed: (index, system, hypotheses, seconds decoding)."""
    index, system, audio, seeds = job
    assert _worker is not None
    hypotheses, seconds = [], 0.0
    for seed in seeds:
        noisy = dithered_int16(audio, DITHER_SIGMA, np.random.default_rng([seed, index]))
        started = time.perf_counter()
        hypotheses.append(_worker.transcribe(noisy))
        seconds += time.perf_counter() - started
    return index, system, hypotheses, seconds


def decode_all(
    sentences: list[Sentence], language_model: LanguageModel, seeds: int, jobs: int
) -> tuple[dict[tuple[int, str], list[str]], float]:
    """Hypotheses per (sentence, system), one per seed, and the recogniser's summed decoding seconds.

    The dither of a sentence depends on its seed and index only, so all systems hear the same noise.
    """
    work = [(s.index, name, audio, list(range(seeds))) for s in sentences for name, audio in s.audio.items()]
    args = (language_model.lm, language_model.dictionary)
    results: dict[tuple[int, str], list[str]] = {}
    seconds = 0.0

    def collect(outputs: Iterable[tuple[int, str, list[str], float]]) -> None:
        nonlocal seconds
        for index, system, hypotheses, spent in tqdm(outputs, total=len(work), desc="recognising"):
            results[index, system] = hypotheses
            seconds += spent

    if jobs == 1:
        _start_worker(*args)
        collect(map(_decode, work))
    else:
        # fork: workers inherit the module as loaded, however the script was started
        with multiprocessing.get_context("fork").Pool(jobs, _start_worker, args) as pool:
            collect(pool.imap_unordered(_decode, work, chunksize=4))
    return results, seconds


# --- Report ---------------------------------------------------------------------------------------------


def interval(values: tuple[float, float], fmt: str = ".3f") -> str:
    return f"[{values[0]:{fmt}}, {values[1]:{fmt}}]"


def mean_with_ci(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean of per-sentence values [S] and its bootstrap interval (a ratio of sums over unit weights)."""
    return float(values.mean()), bootstrap_ci(values, np.ones_like(values))


def copy_quality(sentences: list[Sentence], labels: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """PESQ and STOI of each copy synthesis against espeak-ng, over the sentences PESQ could score."""
    scored = [s for s in sentences if s.quality_skipped is None]
    systems: dict[str, Any] = {}
    for name in COPIES:
        if name in labels and scored:
            pesq_mean, pesq_ci = mean_with_ci(np.array([s.pesq[name] for s in scored]))  # [S']
            stoi_mean, stoi_ci = mean_with_ci(np.array([s.stoi[name] for s in scored]))  # [S']
            systems[name] = {
                "label": labels[name][0],
                "pesq_wb": pesq_mean,
                "pesq_wb_ci95": pesq_ci,
                "stoi": stoi_mean,
                "stoi_ci95": stoi_ci,
            }
    return {
        "systems": systems,
        "sentences": len(scored),
        "skipped": [{"index": s.index, "error": s.quality_skipped} for s in sentences if s.quality_skipped],
    }


def summarise(
    sentences: list[Sentence],
    hypotheses: dict[tuple[int, str], list[str]],
    seeds: int,
    ms_per_frame: float,
    labels: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """Every figure of the report, and per-sentence results, as one JSON-ready dict.

    `labels` names the systems that ran (system -> (label, short name)), in the report's order.
    """
    words = np.array([len(s.reference) for s in sentences], dtype=np.float64)  # [S]
    errors = {  # system -> [seeds, S]
        name: np.array(
            [
                [word_errors(s.reference, normalise_words(hypotheses[s.index, name][k])) for s in sentences]
                for k in range(seeds)
            ],
            dtype=np.float64,
        )
        for name in labels
    }
    systems = {
        name: {
            "label": label,
            "wer": ratio_of_sums(errors[name].mean(0), words),
            "ci95": bootstrap_ci(errors[name].mean(0), words),
            "wer_per_seed": [ratio_of_sums(e, words) for e in errors[name]],
        }
        for name, (label, _) in labels.items()
    }
    paired: dict[str, Any] = {}
    for a, b in PAIRS:
        if a in errors and b in errors:
            difference = errors[a].mean(0) - errors[b].mean(0)  # [S]
            paired[f"{a}_minus_{b}"] = {
                "label": f"{labels[a][1]} − {labels[b][1]}",
                "wer": ratio_of_sums(difference, words),
                "ci95": bootstrap_ci(difference, words),
            }
    scored = [s.durations for s in sentences if s.durations is not None]
    abs_error = np.array([d.abs_error for d in scored], dtype=np.float64)  # [S']
    phonemes = np.array([d.phonemes for d in scored], dtype=np.float64)  # [S']
    spoken = [s for s in sentences if s.mcd_db is not None and s.frames is not None]
    mcd_db, mcd_db_ci = mean_with_ci(np.array([s.mcd_db for s in spoken], dtype=np.float64))  # [S'']
    frames = np.array([s.frames for s in spoken], dtype=np.float64).reshape(-1, 2)  # [S'', 2]
    voice_vs_teacher: dict[str, Any] = {
        "mcd_db": mcd_db,
        "mcd_db_ci95": mcd_db_ci,
        "length_ratio": ratio_of_sums(frames[:, 0], frames[:, 1]),
        "length_ratio_ci95": bootstrap_ci(frames[:, 0], frames[:, 1]),
        "duration_sentences": len(scored),
        "duration_skipped_phoneme_mismatch": len(sentences) - len(scored),
        "guard_failures": [{"index": s.index, "error": s.failure} for s in sentences if s.failure],
    }
    if scored:
        mae_ci = bootstrap_ci(abs_error, phonemes)
        voice_vs_teacher |= {
            "duration_mae_frames": ratio_of_sums(abs_error, phonemes),
            "duration_mae_frames_ci95": mae_ci,
            "duration_mae_ms": ratio_of_sums(abs_error, phonemes) * ms_per_frame,
            "duration_mae_ms_ci95": (mae_ci[0] * ms_per_frame, mae_ci[1] * ms_per_frame),
        }
    per_sentence = [
        {
            "index": s.index,
            "text": s.text,
            "reference_words": len(s.reference),
            "wer": {name: float(errors[name][:, k].mean() / words[k]) for name in labels},
            "hypotheses": {name: hypotheses[s.index, name] for name in labels},
            "mcd_db": s.mcd_db,
            "duration_abs_error_frames": s.durations.abs_error if s.durations else None,
            "pesq_wb": s.pesq,
            "stoi": s.stoi,
            "quality_skipped": s.quality_skipped,
        }
        for k, s in enumerate(sentences)
    ]
    return {
        "systems": systems,
        "paired": paired,
        "voice_minus_ceiling": paired["voice_minus_ceiling"],
        "copy_vs_espeak": copy_quality(sentences, labels),
        "voice_vs_teacher": voice_vs_teacher,
        "per_sentence": per_sentence,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The WER table, the copy-synthesis table and the voice-against-teacher table."""
    rows = ["| System | WER | 95% CI | WER per dither seed |", "|---|---:|---:|---|"]
    for entry in report["systems"].values():
        seeds = " / ".join(f"{w:.3f}" for w in entry["wer_per_seed"])
        rows.append(f"| {entry['label']} | {entry['wer']:.3f} | {interval(entry['ci95'])} | {seeds} |")
    for diff in report["paired"].values():
        ci = interval(diff["ci95"], "+.3f")
        rows.append(f"| {diff['label']} (paired) | {diff['wer']:+.3f} | {ci} | |")
    quality = report["copy_vs_espeak"]["systems"]
    if quality:
        rows += [
            "",
            "| Copy synthesis against espeak-ng | PESQ (wide band) | 95% CI | STOI | 95% CI |",
            "|---|---:|---:|---:|---:|",
        ]
        for entry in quality.values():
            rows.append(
                f"| {entry['label']} | {entry['pesq_wb']:.2f} | {interval(entry['pesq_wb_ci95'], '.2f')} | "
                f"{entry['stoi']:.3f} | {interval(entry['stoi_ci95'])} |"
            )
    teacher = report["voice_vs_teacher"]
    rows += ["", "| Ours against the teacher | Value | 95% CI |", "|---|---:|---:|"]
    mcd_ci = interval(teacher["mcd_db_ci95"], ".2f")
    rows.append(f"| MCD, c1–c24 along the DTW path (dB) | {teacher['mcd_db']:.2f} | {mcd_ci} |")
    if "duration_mae_frames" in teacher:
        rows += [
            f"| Duration MAE (frames/phoneme) | {teacher['duration_mae_frames']:.2f} | "
            f"{interval(teacher['duration_mae_frames_ci95'], '.2f')} |",
            f"| Duration MAE (ms/phoneme) | {teacher['duration_mae_ms']:.1f} | "
            f"{interval(teacher['duration_mae_ms_ci95'], '.1f')} |",
        ]
    length_ci = interval(teacher["length_ratio_ci95"])
    rows.append(f"| Total length, ours / teacher | {teacher['length_ratio']:.3f} | {length_ci} |")
    rows.append(f"| Sentences stopped by attention guards | {len(teacher['guard_failures'])} | |")
    return "\n".join(rows)


def write_markdown(path: Path, report: dict[str, Any], table: str) -> None:
    rec, run = report["recogniser"], report["run"]
    teacher, quality = report["voice_vs_teacher"], report["copy_vs_espeak"]
    method = [
        "Method: pocketsphinx (stock en-us model) with a closed-vocabulary unigram LM over the words of all "
        f"{rec['lm_sentences']} held-out sentences, on audio resampled to 16 kHz with Gaussian dither "
        f"(σ = {DITHER_SIGMA:g} int16 units); corpus WER averaged over {run['seeds']} dither seeds.",
        f"95% CIs: bootstrap over sentences ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); "
        "each paired difference (first system's WER minus the second's) resamples each sentence's two "
        "systems together.",
        "PESQ (ITU-T P.862.2, wide band) and STOI: each copy synthesis against espeak-ng's own audio, both "
        "trimmed to the shorter and resampled to 16 kHz, without dither.",
        "MCD: orthonormal DCT-II of the log-mel, c1–c24, DTW-aligned to the teacher's mel; durations: the "
        "duration predictor's frame counts against the teacher's, where the phoneme sequences match.",
    ]
    lines = [
        "# Intelligibility",
        "",
        table,
        "",
        *method,
        "",
        f"- Voice: `{run['addon']}`, stack `{run['stack']}`"
        + (f", compared with stack `{run['compare_stack']}`" if run["compare_stack"] else "")
        + ("" if run["addon_trained"] else " (**untrained**: random weights)"),
        f"- Sentences: {run['sentences']} of {rec['lm_sentences']} held out, {rec['reference_words']} "
        f"reference words, of which {rec['oov_words']} ({rec['oov_rate']:.1%}) are out of the recogniser's "
        f"vocabulary; LM vocabulary {rec['lm_vocabulary']} words",
        f"- Dither seeds: {run['seeds']}",
        f"- Duration error over {teacher['duration_sentences']} sentences; "
        f"{teacher['duration_skipped_phoneme_mismatch']} skipped (phonemes differ from the teacher's)",
        f"- PESQ and STOI over {quality['sentences']} sentences; {len(quality['skipped'])} skipped (PESQ "
        "could not score them)",
        f"- Recogniser: {rec['decode_seconds']:.0f} s of decoding (summed over processes) for "
        f"{rec['audio_seconds']:.0f} s of audio, real-time factor {rec['real_time_factor']:.3f}",
        f"- Whole run: {run['seconds']:.0f} s with {run['jobs']} recogniser processes",
        f"- Date: {run['date']}",
        "",
        f"Command: `{run['command']}`",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# --- Command line ---------------------------------------------------------------------------------------


def check_inputs(addon: Path, data: Path) -> str | None:
    """A message saying how to make what is missing, or None when everything is there."""
    missing = [name for name in ("eval.txt", "eval.safetensors", "meta.json") if not (data / name).is_file()]
    if missing:
        return f"{data}: no teacher data ({', '.join(missing)} missing); run `make teacher` first"
    if not (addon / "addon.json").is_file():
        return f"{addon}: no addon there (no addon.json); train the voice first (`make voice`)"
    return None


def pick_sentences(total: int, wanted: int | None) -> list[int]:
    """Evenly spread indices, so that a quick run samples the whole held-out set rather than its start."""
    if wanted is None or wanted >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, wanted).round()})


def run(args: argparse.Namespace, addon_config: dict[str, Any]) -> dict[str, Any]:
    """Synthesise, decode and score; the whole report except its rendering."""
    started = time.perf_counter()
    torch.set_num_threads(1)  # per-sentence tensors are small; more threads only contend for the cores
    texts = (args.data / "eval.txt").read_text(encoding="utf-8").splitlines()
    references = [normalise_words(t) for t in texts]
    sentences = [
        Sentence(i, texts[i], references[i])
        for i in pick_sentences(len(texts), args.sentences)
        if references[i]
    ]
    systems = Systems(args.addon, args.data, args.stack, args.compare_stack)
    if len(systems.teacher) != len(texts):
        raise SystemExit(f"{args.data}: eval.txt and eval.safetensors hold different numbers of sentences")
    for sentence in tqdm(sentences, desc="synthesising", unit="sentence"):
        systems.fill(sentence)

    with tempfile.TemporaryDirectory() as folder:
        language_model = write_language_model(references, Path(folder))
        hypotheses, decode_seconds = decode_all(sentences, language_model, args.seeds, args.jobs)
    ms_per_frame = 1000.0 * systems.config.hop_length / systems.config.sample_rate
    report = summarise(sentences, hypotheses, args.seeds, ms_per_frame, systems.labels)

    oov = set(language_model.oov_types)
    n_words = sum(len(s.reference) for s in sentences)
    n_oov = sum(w in oov for s in sentences for w in s.reference)
    audio_seconds = args.seeds * sum(len(a) for s in sentences for a in s.audio.values()) / RECOGNISER_RATE
    report["recogniser"] = {
        "model": "pocketsphinx en-us (wheel)",
        "lm_sentences": len(texts),
        "lm_vocabulary": language_model.vocabulary_size,
        "reference_words": n_words,
        "oov_words": n_oov,
        "oov_rate": n_oov / n_words,
        "oov_types": sorted(oov & {w for s in sentences for w in s.reference}),
        "dither_sigma": DITHER_SIGMA,
        "decode_seconds": decode_seconds,
        "audio_seconds": audio_seconds,
        "real_time_factor": decode_seconds / audio_seconds,
    }
    report["run"] = {
        "command": shlex.join(["python", "benchmarks/intelligibility.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "addon": str(args.addon),
        "addon_trained": addon_config.get("trained", True) is not False,
        "stack": systems.voice.stack_name,
        "compare_stack": systems.compare.stack_name if systems.compare else None,
        "data": str(args.data),
        "sentences": len(sentences),
        "seeds": args.seeds,
        "jobs": args.jobs,
        "seconds": time.perf_counter() - started,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addon", type=Path, default=Path("addons/fastspeech-en"))
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--sentences", type=int, default=None, help="evaluate N evenly spread sentences")
    parser.add_argument("--seeds", type=int, default=3, help="dither seeds to average WER over")
    parser.add_argument("--stack", help="the voice's stack (default: the addon's default stack)")
    parser.add_argument("--compare-stack", help="also decode the voice through this stack, e.g. griffin-lim")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="recogniser processes")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or (args.sentences is not None and args.sentences < 1):
        parser.error("--seeds, --jobs and --sentences must be at least 1")
    problem = check_inputs(args.addon, args.data)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    addon_config = json.loads((args.addon / "addon.json").read_text(encoding="utf-8"))
    stacks = addon_config.get("stacks", {})
    for stack in (args.stack, args.compare_stack):
        if stack is not None and stack not in stacks:
            print(f"{args.addon}: no stack '{stack}'; it has {sorted(stacks)}", file=sys.stderr)
            return 2
    if addon_config.get("trained") is False:
        print(f"warning: {args.addon} is untrained (random weights): expect a WER near 1", file=sys.stderr)

    report = run(args, addon_config)
    table = markdown_table(report)
    rec = report["recogniser"]
    print(table)
    print(
        f"\n{report['run']['sentences']} sentences, {args.seeds} seeds; OOV {rec['oov_words']}/"
        f"{rec['reference_words']} reference words; recogniser {rec['decode_seconds']:.0f} s "
        f"(RTF {rec['real_time_factor']:.3f}); run {report['run']['seconds']:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "intelligibility.md", report, table)
    (args.out / "intelligibility.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'intelligibility.md'} and {args.out / 'intelligibility.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
