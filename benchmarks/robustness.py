"""Robustness of the voices on hard sentences: words skipped, repeated or mumbled, and truncation.

    python benchmarks/robustness.py [--addons addons/fastspeech-en addons/tacotron-en] [--seeds 3]
        [--out benchmarks/results]

FastSpeech (Ren et al., 2019) counts skipped and repeated words on a set of particularly hard sentences,
by listening; Non-Attentive Tacotron (Shen et al., 2020) reports the word deletion rate of a speech
recogniser. We do the second, on our own hard sentences (benchmarks/hard_sentences.txt: repeated words,
long lists, numbers, tongue twisters, sentences of 60 words and more), and pair every voice with espeak-ng,
its teacher, on the same sentence: pocketsphinx misses words even in espeak-ng's clean speech, so what
counts is a voice's deletions *beyond* espeak-ng's. A repeat is an inserted word equal to the reference
word beside it. Without any recogniser we also count sentences the attention guards stopped, and those
whose audio is much shorter (truncated) or longer (stuck or repeating) than espeak-ng's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_measure import HARD_SENTENCES, read_hard_sentences
from intelligibility import (
    Sentence,
    bootstrap_ci,
    decode_all,
    interval,
    normalise_words,
    ratio_of_sums,
    recogniser_input,
    speak,
    write_language_model,
)
from tqdm import tqdm

import tts_neuron
from tts_neuron.frontend.espeak import Espeak
from tts_neuron.frontend.normalize import normalize

REPO = Path(__file__).resolve().parent.parent
ESPEAK = "espeak-ng"
TRUNCATED_BELOW = 0.6
"""A voice's audio shorter than this fraction of espeak-ng's is counted as truncated."""
OVERLONG_ABOVE = 1.6
"""Longer than this multiple of espeak-ng's is counted as stuck or repeating."""
SKIP_WORDS = 2
"""A sentence counts as having skipped words when the voice deletes this many more than espeak-ng."""


@dataclass(frozen=True)
class Edits:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    repeats: int = 0
    """Insertions of a word equal to the reference word before or after the insertion point."""

    def __add__(self, other: Edits) -> Edits:
        return Edits(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.substitutions, self.deletions, self.insertions, self.repeats


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> Edits:
    """Word-level Levenshtein alignment, classified. Among alignments of equal cost, the one read back
    from the end prefers a match, then a deletion or insertion over a substitution, so that a repeated
    word shows as the insertion it is."""
    n, m = len(reference), len(hypothesis)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1])
            cost[i, j] = min(diagonal, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    subs = dels = ins = repeats = 0
    i, j = n, m
    while i or j:
        if i and j and reference[i - 1] == hypothesis[j - 1] and cost[i, j] == cost[i - 1, j - 1]:
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            dels, i = dels + 1, i - 1
        elif j and cost[i, j] == cost[i, j - 1] + 1:
            ins += 1
            repeats += hypothesis[j - 1] in reference[max(0, i - 1) : i + 1]
            j -= 1
        else:
            subs, i, j = subs + 1, i - 1, j - 1
    return Edits(subs, dels, ins, repeats)


def synthesise(
    voices: dict[str, tts_neuron.Voice], hard: list[tuple[str, str]], rate: int
) -> tuple[list[Sentence], dict[str, dict[int, str]], dict[str, np.ndarray]]:
    """Every system's recogniser audio per sentence, the guard failures, and audio seconds [system][S]."""
    sentences: list[Sentence] = []
    failures: dict[str, dict[int, str]] = {name: {} for name in voices}
    seconds: dict[str, list[float]] = {name: [] for name in [ESPEAK, *voices]}
    espeak = Espeak.get()
    for index, (_, text) in enumerate(tqdm(hard, desc="synthesising", unit="sentence")):
        spoken = normalize(text)
        sentence = Sentence(index, text, normalise_words(spoken))
        audio = espeak.synthesize(spoken, "en-us").audio.astype(np.float32) / 32768.0
        sentence.audio[ESPEAK] = recogniser_input(audio, rate)
        seconds[ESPEAK].append(len(audio) / rate)
        for name, voice in voices.items():
            audio, failure = speak(voice, text)
            if failure:
                failures[name][index] = failure
            sentence.audio[name] = recogniser_input(audio, rate)
            seconds[name].append(len(audio) / rate)
        sentences.append(sentence)
    return sentences, failures, {name: np.array(values) for name, values in seconds.items()}


def summarise(
    hard: list[tuple[str, str]],
    sentences: list[Sentence],
    hypotheses: dict[tuple[int, str], list[str]],
    failures: dict[str, dict[int, str]],
    seconds: dict[str, np.ndarray],
    seeds: int,
) -> dict[str, Any]:
    words = np.array([len(s.reference) for s in sentences], dtype=np.float64)  # [S]
    # edits[system]: [S, 4] (subs, dels, ins, repeats), averaged over dither seeds
    edits = {
        name: np.array(
            [
                np.mean(
                    [
                        align(s.reference, normalise_words(hypotheses[s.index, name][k])).as_tuple()
                        for k in range(seeds)
                    ],
                    axis=0,
                )
                for s in sentences
            ]
        )
        for name in seconds
    }
    of = np.array([category for category, _ in hard])  # [S]
    categories = list(dict.fromkeys(of.tolist()))
    systems: dict[str, Any] = {}
    for name, e in edits.items():
        errors = e[:, :3].sum(1)  # [S]
        entry: dict[str, Any] = {
            "wer": ratio_of_sums(errors, words),
            "wer_ci95": bootstrap_ci(errors, words),
            "deletion_rate": ratio_of_sums(e[:, 1], words),
            "deletion_rate_ci95": bootstrap_ci(e[:, 1], words),
            "insertion_rate": ratio_of_sums(e[:, 2], words),
            "repeated_words": float(e[:, 3].sum()),
            "wer_by_category": {c: ratio_of_sums(errors[of == c], words[of == c]) for c in categories},
        }
        if name != ESPEAK:
            excess = e[:, 1] - edits[ESPEAK][:, 1]  # [S] deletions beyond espeak-ng's, paired
            excess_errors = errors - edits[ESPEAK][:, :3].sum(1)  # [S]
            ratio = seconds[name] / seconds[ESPEAK]  # [S]
            entry |= {
                "excess_wer": ratio_of_sums(excess_errors, words),
                "excess_wer_ci95": bootstrap_ci(excess_errors, words),
                "excess_deletion_rate": ratio_of_sums(excess, words),
                "excess_deletion_rate_ci95": bootstrap_ci(excess, words),
                "sentences_with_skips": int((excess >= SKIP_WORDS).sum()),
                "sentences_with_repeats": int((e[:, 3] - edits[ESPEAK][:, 3] >= 1).sum()),
                "guard_stops": len(failures[name]),
                "truncated": int((ratio < TRUNCATED_BELOW).sum()),
                "overlong": int((ratio > OVERLONG_ABOVE).sum()),
                "length_ratio_median": float(np.median(ratio)),
            }
        systems[name] = entry
    per_sentence = [
        {
            "index": s.index,
            "category": hard[s.index][0],
            "text": s.text,
            "reference_words": len(s.reference),
            "seconds": {name: float(values[k]) for name, values in seconds.items()},
            "edits": {
                name: dict(zip(("sub", "del", "ins", "rep"), edits[name][k].tolist(), strict=True))
                for name in edits
            },
            "hypotheses": {name: hypotheses[s.index, name] for name in seconds},
            "failures": {name: failures[name][s.index] for name in failures if s.index in failures[name]},
        }
        for k, s in enumerate(sentences)
    ]
    return {"systems": systems, "categories": categories, "per_sentence": per_sentence}


def markdown_table(report: dict[str, Any]) -> str:
    systems = report["systems"]
    voices = [name for name in systems if name != ESPEAK]
    rows = [
        "| | " + " | ".join([ESPEAK, *voices]) + " |",
        "|---|" + "---:|" * (1 + len(voices)),
        "| WER | " + " | ".join(f"{systems[n]['wer']:.3f}" for n in [ESPEAK, *voices]) + " |",
        "| word deletion rate | "
        + " | ".join(f"{systems[n]['deletion_rate']:.3f}" for n in [ESPEAK, *voices])
        + " |",
        *(
            f"| {label} beyond espeak-ng (paired, 95% CI) | | "
            + " | ".join(
                f"{systems[n][key]:+.3f} " + interval(systems[n][f"{key}_ci95"], "+.3f") for n in voices
            )
            + " |"
            for key, label in [("excess_wer", "WER"), ("excess_deletion_rate", "deletion rate")]
        ),
        "| repeated words (recogniser) | "
        + " | ".join(f"{systems[n]['repeated_words']:.1f}" for n in [ESPEAK, *voices])
        + " |",
    ]
    n = len(report["per_sentence"])
    for key, label in [
        (
            "sentences_with_skips",
            f"sentences with skipped words (>= {SKIP_WORDS} deletions beyond espeak-ng)",
        ),
        ("sentences_with_repeats", "sentences with a repeated word beyond espeak-ng"),
        ("guard_stops", "sentences stopped by the attention guards"),
        ("truncated", f"truncated (audio < {TRUNCATED_BELOW}x espeak-ng's)"),
        ("overlong", f"overlong (audio > {OVERLONG_ABOVE}x espeak-ng's)"),
    ]:
        rows.append(f"| {label} | | " + " | ".join(f"{systems[v][key]} / {n}" for v in voices) + " |")
    rows.append(
        "| median length, voice / espeak-ng | | "
        + " | ".join(f"{systems[v]['length_ratio_median']:.2f}" for v in voices)
        + " |"
    )
    for category in report["categories"]:
        rows.append(
            f"| WER, {category} | "
            + " | ".join(f"{systems[n]['wer_by_category'][category]:.3f}" for n in [ESPEAK, *voices])
            + " |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addons",
        type=Path,
        nargs="+",
        default=[REPO / "addons" / "fastspeech-en", REPO / "addons" / "tacotron-en"],
    )
    parser.add_argument("--sentences", type=Path, default=HARD_SENTENCES)
    parser.add_argument("--seeds", type=int, default=3, help="dither seeds to average over")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="recogniser processes")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    started = time.perf_counter()
    torch.set_num_threads(1)
    hard = read_hard_sentences(args.sentences)
    voices = tts_neuron.VoiceSet()
    for addon in args.addons:
        voices.add(addon)
    rate = next(iter(voices.voices.values())).sample_rate
    sentences, failures, seconds = synthesise(voices.voices, hard, rate)
    with tempfile.TemporaryDirectory() as folder:
        language_model = write_language_model([s.reference for s in sentences], Path(folder))
        hypotheses, _ = decode_all(sentences, language_model, args.seeds, args.jobs)
    report = summarise(hard, sentences, hypotheses, failures, seconds, args.seeds)
    report["run"] = {
        "command": shlex.join(
            ["python", "benchmarks/robustness.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "addons": [str(a) for a in args.addons],
        "sentences": len(sentences),
        "words": sum(len(s.reference) for s in sentences),
        "seeds": args.seeds,
        "seconds": time.perf_counter() - started,
    }
    table = markdown_table(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    run = report["run"]
    lengths = [len(s.reference) for s in sentences]
    (args.out / "robustness.md").write_text(
        "\n".join(
            [
                "# Robustness on hard sentences",
                "",
                table,
                "",
                f"{run['sentences']} sentences ({min(lengths)} to {max(lengths)} words, {run['words']} in "
                f"all) from `benchmarks/hard_sentences.txt`; pocketsphinx with a closed-vocabulary unigram "
                f"LM over their words, {run['seeds']} dither seeds; method in the docstring of "
                "`benchmarks/robustness.py`.",
                "",
                f"Command: `{run['command']}` ({run['seconds']:.0f} s, {run['date']})",
                "",
            ]
        ),
        encoding="utf-8",
    )
    (args.out / "robustness.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'robustness.md'} and {args.out / 'robustness.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
