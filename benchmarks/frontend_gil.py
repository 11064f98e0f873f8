"""How much of the GIL the frontend holds while it phonemises the next sentence (the engine's frontend
thread does this beside the engine's thread, which runs every stream's Python).

    python benchmarks/frontend_gil.py [--addon addons/fastspeech-en] [--seconds 5]

A pure-Python loop counts how far it gets in `--seconds`, alone and then while another thread phonemises
the hard sentences over and over; the loop's slowdown is the share of the GIL the frontend took. The
frontend's own time per sentence is measured alone, so that its cost to a loaded engine is that share of
its time.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import tts_neuron

REPO = Path(__file__).resolve().parent.parent


def count_for(seconds: float) -> int:
    """Iterations of a pure-Python loop in `seconds` of wall time."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addon", default=str(REPO / "addons" / "fastspeech-en"))
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    frontend = tts_neuron.load(args.addon).frontend
    lines = (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8").splitlines()
    text = " ".join(line for line in lines if line.strip())
    started = time.perf_counter()
    sentences = sum(1 for _ in frontend.sentences(text))
    per_sentence = (time.perf_counter() - started) / sentences
    alone = count_for(args.seconds)
    stop = threading.Event()

    def phonemise() -> None:
        while not stop.is_set():
            for _ in frontend.sentences(text):
                if stop.is_set():
                    return

    worker = threading.Thread(target=phonemise)
    worker.start()
    beside = count_for(args.seconds)
    stop.set()
    worker.join()
    share = 1 - beside / alone
    print(f"frontend: {per_sentence * 1000:.2f} ms per sentence ({sentences} sentences)")
    print(
        f"a Python loop beside it runs at {beside / alone:.2f} of its speed alone: the frontend holds the "
        f"GIL {share:.0%} of its time, {share * per_sentence * 1000:.2f} ms per sentence"
    )


if __name__ == "__main__":
    main()
