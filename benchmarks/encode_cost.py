"""What the server's output stage costs: CPU seconds per second of audio for each format (and the
resampler alone), encoding a real voice's chunks as the server does, one encoder per stream.

    python benchmarks/encode_cost.py [--addon addons/fastspeech-en] [--chars 1500] [--repeats 3] [--json F]

The audio of the first `--chars` characters of hard_sentences.txt is made once; each format then encodes
the same chunks `--repeats` times and the best run is kept (the least disturbed by other work on the
host). Capacity: a format that costs C ms per second of audio takes C/1000 of one core per real-time
stream, against the synthesis the same stream needs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tts_neuron
from tts_neuron.server.encoding import RESPONSE_FORMATS, Encoder, Resampler

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8")


def cost(chunks: list[np.ndarray], make: type[Encoder] | None, *args: object, repeats: int) -> float:
    """Least CPU seconds over `repeats` runs of pushing every chunk through a fresh encoder (or the
    resampler alone when `make` is None) and finishing it."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        stage = make(*args) if make else Resampler(*args)  # type: ignore[arg-type]
        for chunk in chunks:
            stage.push(chunk)
        stage.finish()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addon", default=str(REPO / "addons" / "fastspeech-en"))
    parser.add_argument("--chars", type=int, default=1500, help="characters of hard_sentences.txt to speak")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    voice = tts_neuron.load(args.addon)
    started = time.process_time()
    chunks = list(voice.stream(TEXT[: args.chars]))
    synthesis = time.process_time() - started
    rate = voice.sample_rate
    seconds = sum(map(len, chunks)) / rate
    print(f"{voice.addon.name}: {len(chunks)} chunks, {seconds:.1f} s of audio at {rate} Hz")
    figures = {"synthesis (for scale)": {"rate": rate, "ms_per_audio_second": 1000 * synthesis / seconds}}
    for name in RESPONSE_FORMATS:
        encoder = Encoder(name, rate)
        out_rate = encoder.rate
        encoder.close()
        spent = cost(chunks, Encoder, name, rate, repeats=args.repeats)
        figures[name] = {"rate": out_rate, "ms_per_audio_second": 1000 * spent / seconds}
    spent = cost(chunks, None, rate, 24000, repeats=args.repeats)
    figures["resample to 24 kHz"] = {"rate": 24000, "ms_per_audio_second": 1000 * spent / seconds}
    print(f"{'format':<20} {'rate':>6} {'CPU ms per s of audio':>22}")
    for name, row in figures.items():
        print(f"{name:<20} {row['rate']:>6.0f} {row['ms_per_audio_second']:>22.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"audio_seconds": seconds, "formats": figures}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
