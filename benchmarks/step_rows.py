"""Rows a call of the attention step when streams of different memory lengths meet in one call (padded
to the longest: `AttentionStep.length_axes`) against only at equal lengths, on an engine of one worker
(as on a NeuronCore), alternating round by round in one process.

    python benchmarks/step_rows.py [--streams 8] [--rounds 4] [--stack neuron] [--out FILE]

Each round starts `--streams` streams of tacotron-en at once, each a different ordinary text of the load
test (benchmarks/serve_load.py), each read as fast as it is made (`Engine.iterate(paced=False)`: every
chunk is taken, so each stream has a playback deadline), on each engine in turn (the order flipping each
round). Reported
per engine: the step's calls and mean rows a call, and the round's wall time; the audio of both must agree
within the engine tests' 2e-4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from bench_measure import cpu_model
from serve_load import texts

from tts_neuron.engine import Engine
from tts_neuron.models.tacotron import AttentionStep
from tts_neuron.voice import VoiceSet

REPO = Path(__file__).resolve().parent.parent
ADDON = REPO / "addons" / "tacotron-en"
TOLERANCE = 2e-4


def engine_voices(across_lengths: bool, stack: str | None) -> tuple[Engine, VoiceSet]:
    """An engine of one worker and the voice on it; without `across_lengths` its step's handle is built
    with no length axes, so calls meet only at equal shapes."""
    engine = Engine(workers=1)
    voices = VoiceSet(engine)
    axes = AttentionStep.length_axes
    if not across_lengths:
        del AttentionStep.length_axes  # handles take the axes when they are built
    try:
        voices.add(ADDON, stack=stack, target="cpu" if stack == "neuron" else None)
    finally:
        AttentionStep.length_axes = axes  # type: ignore[misc]
    voices.synthesize("Warm the voice up.", "tacotron-en")
    return engine, voices


def one_round(engine: Engine, voices: VoiceSet, jobs: list[str]) -> tuple[list[int], float, list[np.ndarray]]:
    """The step's rows of every call, the wall time, and each stream's audio."""
    rows: list[int] = []
    engine.observer = lambda name, n, _size: rows.append(n) if name == "decoder_step" else None
    audio: list[np.ndarray] = [np.zeros(0, np.float32)] * len(jobs)

    def read(i: int) -> None:  # as fast as the stream makes it, each chunk taken (so it has a deadline)
        audio[i] = np.concatenate(list(engine.iterate(jobs[i], voices["tacotron-en"], paced=False)))

    start = time.perf_counter()
    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(jobs))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(600)
    engine.observer = None
    return rows, time.perf_counter() - start, audio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--stack", help="the addon's stack (neuron: compiled, on the CPU target; compile it first)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    engines = {
        name: engine_voices(name == "across lengths", args.stack)
        for name in ("across lengths", "equal lengths")
    }
    sentences = texts("ordinary")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    for r in range(args.rounds):
        jobs = [sentences[(r * args.streams + i) % len(sentences)] for i in range(args.streams)]
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        audio = {}
        for name in order:
            rows, wall, audio[name] = one_round(*engines[name], jobs)
            mean = statistics.mean(rows)
            results[name].append({"calls": len(rows), "rows": mean, "wall_s": wall})
            print(f"round {r} {name}: {len(rows)} step calls, {mean:.2f} rows a call, {wall:.2f} s")
        for a, b in zip(*audio.values(), strict=True):
            if a.shape != b.shape or np.abs(a - b).max(initial=0) > TOLERANCE:
                raise SystemExit("the two engines' audio differ")
    summary = {
        name: {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}
        for name, runs in results.items()
    }
    print("medians:", json.dumps(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"cpu": cpu_model(), "streams": args.streams, "rounds": results, "medians": summary}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    for engine, _ in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
