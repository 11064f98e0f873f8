"""Continuing sentences with windows that grow past their full size (as shipped) against windows held at it,
alternating sentence by sentence in one process, freed memory held as `tts_neuron.load` holds it.

    python benchmarks/window_growth.py [ADDON ...] [--piper] [--sentences 40] [--rounds 3] [--threads 1]

`--piper` adds the perturbed medium Piper voice that benchmarks/piper_compare.py builds (the `piper`
extra), imported into a temporary folder. Each sentence of benchmarks/hard_sentences.txt (the addon's
own frontend, each line read as a text, seeded) is spoken as a direct run speaks a call's later
sentences (the CONTINUES feature: windows start at their full core), once with `Decoder`/`Vocoder`
windows doubling up to CONTINUING_GROWTH times that core and once held at it; the order flips each
sentence. Both must give the same audio within 1e-4. A ratio below 1 says growth is faster on this host
(docs/importing.md, "Benchmark").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_measure import cpu_model, read_hard_sentences

import tts_neuron
import tts_neuron.blocks.acoustic as acoustic
from tts_neuron.blocks.windows import CONTINUING_GROWTH
from tts_neuron.frontend import Sentence
from tts_neuron.voice import Voice


def sentences(voice: Voice, count: int) -> list[Sentence]:
    found: list[Sentence] = []
    for _, line in read_hard_sentences():
        found += voice.frontend.sentences(line)
    return found[:count]


def speak(
    voice: Voice, sentence: Sentence, settings: dict[str, torch.Tensor], growth: int
) -> tuple[float, np.ndarray]:
    acoustic.CONTINUING_GROWTH = growth
    started = time.perf_counter()
    audio = [chunk.data.float().numpy() for chunk in voice.sentence_chunks(sentence, settings=settings)]
    return time.perf_counter() - started, np.concatenate(audio)


def compare(root: Path, count: int, rounds: int, threads: int) -> list[tuple[float, float]]:
    """Per round: the total seconds of the sentences with windows held, and grown."""
    voice = tts_neuron.load(root, threads=threads)
    call = voice.call_settings({"seed": 0})
    spoken = sentences(voice, count)
    later = call.sentence(1)  # a call's second sentence: CONTINUES is set in a direct run
    speak(voice, spoken[0], later, 1), speak(voice, spoken[0], later, CONTINUING_GROWTH)  # warm-up
    totals = []
    try:
        for round_ in range(rounds):
            seconds = {1: 0.0, CONTINUING_GROWTH: 0.0}
            for index, sentence in enumerate(spoken):
                order = (1, CONTINUING_GROWTH) if (index + round_) % 2 else (CONTINUING_GROWTH, 1)
                audio = {}
                for growth in order:
                    took, audio[growth] = speak(voice, sentence, later, growth)
                    seconds[growth] += took
                if not np.allclose(audio[1], audio[CONTINUING_GROWTH], atol=1e-4):
                    raise RuntimeError(f"{root.name}: sentence {index} differs with growth")
            totals.append((seconds[1], seconds[CONTINUING_GROWTH]))
    finally:
        acoustic.CONTINUING_GROWTH = CONTINUING_GROWTH
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    voice_arguments(parser)
    parser.add_argument("--sentences", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} thread(s), growth x{CONTINUING_GROWTH}")
    print("\n| addon | round | windows held | windows grown | ratio |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for root in voice_roots(args, Path(tmp)):
            report(root, compare(root, args.sentences, args.rounds, args.threads))


def voice_arguments(parser: argparse.ArgumentParser) -> None:
    """The voices a window benchmark runs (addon folders, and the Piper fixture) and its threads."""
    parser.add_argument("addons", nargs="*", type=Path)
    parser.add_argument("--piper", action="store_true", help="add the perturbed medium Piper voice")
    parser.add_argument("--threads", type=int, default=1)


def voice_roots(args: argparse.Namespace, folder: Path) -> list[Path]:
    """The addons of `voice_arguments`, the Piper fixture imported into `folder` where asked for."""
    return [*args.addons, *([piper_fixture(folder)] if args.piper else [])]


def piper_fixture(folder: Path) -> Path:
    """The medium Piper fixture voice of piper_compare.py, imported as an addon in `folder`."""
    from piper_compare import fixture_voice

    from tts_neuron.importers.piper import import_voice

    import_voice(fixture_voice(folder), None, folder / "piper-medium")
    return folder / "piper-medium"


def report(root: Path, totals: list[tuple[float, float]]) -> None:
    for round_, (held, grown) in enumerate(totals, start=1):
        print(f"| {root.name} | {round_} | {held:.2f} s | {grown:.2f} s | {grown / held:.3f} |", flush=True)
    print(f"| {root.name} | median | | | {statistics.median(grown / held for held, grown in totals):.3f} |")


if __name__ == "__main__":
    main()
