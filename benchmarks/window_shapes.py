"""Dynamic windows rounded to a multiple of DYNAMIC_MULTIPLE frames (as shipped) against windows of exact
lengths, in a long direct run.

    python benchmarks/window_shapes.py [ADDON ...] [--piper] [--warm 40] [--sentences 100] [--threads 1]

oneDNN builds a convolution's kernels for each input shape it has not seen, and keeps the last 1,024 it
built, so a window of a new length runs slower than one of a length seen before; windows of exact length
are as varied as sentences. Each setting runs in a process of its own (the cache is the process's),
alternating exact, rounded, rounded, exact. Each process speaks `--warm` sentences, then times
`--sentences` more, each as a direct run speaks a call's later sentences (CONTINUES). The sentences are
6 to 30 words of benchmarks/hard_sentences.txt drawn with a fixed seed, all different; a sentence the
attention voice refuses (AttentionError) is counted and left out of both totals. `--piper` adds the
perturbed medium Piper voice of piper_compare.py. A ratio below 1 says rounding is faster
(docs/importing.md, "Benchmark").
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_measure import cpu_model, read_hard_sentences
from window_growth import voice_arguments, voice_roots

import tts_neuron
import tts_neuron.blocks.acoustic as acoustic
from tts_neuron.blocks.windows import DYNAMIC_MULTIPLE
from tts_neuron.errors import AttentionError

ORDER = (1, DYNAMIC_MULTIPLE, DYNAMIC_MULTIPLE, 1)


def word_salad(count: int, seed: int = 0) -> list[str]:
    """`count` sentences of 6 to 30 words of the hard sentences, drawn with `seed`."""
    words = [word.strip(".,;:!?\"'()") for _, line in read_hard_sentences() for word in line.split()]
    words = [word for word in words if word.isalpha()]
    draw = random.Random(seed)
    return [" ".join(draw.choices(words, k=draw.randint(6, 30))).capitalize() + "." for _ in range(count)]


def run(root: Path, multiple: int, warm: int, count: int, threads: int) -> dict[str, float]:
    """Seconds to speak the timed sentences, their audio seconds and the sentences refused."""
    acoustic.DYNAMIC_MULTIPLE = multiple
    voice = tts_neuron.load(root, threads=threads)
    later = voice.call_settings({"seed": 0}).sentence(1)  # a call's second sentence: CONTINUES is set
    seconds, samples, refused = 0.0, 0, 0
    for index, text in enumerate(word_salad(warm + count)):
        started, made = time.perf_counter(), 0
        try:
            for sentence in voice.frontend.sentences(text):
                made += sum(chunk.data.shape[0] for chunk in voice.sentence_chunks(sentence, settings=later))
        except AttentionError:
            refused += index >= warm
            continue
        if index >= warm:
            seconds, samples = seconds + time.perf_counter() - started, samples + made
    return {"seconds": seconds, "audio_seconds": samples / voice.sample_rate, "refused": refused}


def compare(
    root: Path, warm: int, count: int, threads: int, order: tuple[int, ...] = ORDER
) -> list[tuple[int, dict[str, float]]]:
    """One child process per setting in `order`."""
    results = []
    for multiple in order:
        command = [sys.executable, __file__, "--child", str(root), str(multiple), str(warm), str(count)]
        output = subprocess.run([*command, str(threads)], check=True, capture_output=True, text=True)
        results.append((multiple, json.loads(output.stdout.splitlines()[-1])))
    return results


def report(root: Path, results: list[tuple[int, dict[str, float]]]) -> None:
    for multiple, row in results:
        print(
            f"| {root.name} | {multiple} | {row['seconds']:.2f} s | {row['audio_seconds']:.1f} s | "
            f"{row['refused']} |",
            flush=True,
        )
    by = {m: statistics.median(r["seconds"] for k, r in results if k == m) for m in set(ORDER)}
    print(f"| {root.name} | ratio of medians | {by[DYNAMIC_MULTIPLE] / by[1]:.3f} | | |", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        root, multiple, warm, count, threads = sys.argv[2:7]
        print(json.dumps(run(Path(root), int(multiple), int(warm), int(count), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    voice_arguments(parser)
    parser.add_argument("--warm", type=int, default=40)
    parser.add_argument("--sentences", type=int, default=100)
    args = parser.parse_args()
    host = f"{cpu_model()}, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"{host}, {args.warm} warm-up sentences")
    print("\n| addon | multiple | seconds | audio | refused |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for addon in voice_roots(args, Path(tmp)):
            report(addon, compare(addon.resolve(), args.warm, args.sentences, args.threads))


if __name__ == "__main__":
    main()
