"""The attention decoder's chunks as shipped (12 steps, then 8 doubling up to 32) against the earlier
fixed ones (12, then 16 each), alternating text by text in one process through the Python API.

    python benchmarks/attention_chunks.py [--addon addons/tacotron-en] [--rounds 2] [--out FILE]

Each of the load test's ordinary texts (benchmarks/serve_load.py) is spoken by both, the order flipping
each text; both must give the same audio within 1e-4. Reported: when each of a stream's first four audio
chunks arrived (p50 over the texts, from the call) and the total time. Smaller chunks after the first let
each vocoder window run as soon as the steps it needs are made; a direct run's later sentences decode in
chunks of 32 steps instead of 16 (fewer postnet windows, less context recomputed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_measure import cpu_model
from serve_load import texts

import tts_neuron
from tts_neuron.addon import read_json
from tts_neuron.errors import AddonError

REPO = Path(__file__).resolve().parent.parent
EARLIER = {"second_chunk_steps": 16, "chunk_steps": 16}
"""The chunk sizes before the change: 12 steps, then 16 each."""


def stack_with(addon: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The addon's `cpu` stack with parameters added to its attention decoder."""
    spec = read_json(addon / "addon.json", AddonError)["stacks"]["cpu"]
    spec[0]["streamable_block"]["stack"][0].update(params)
    return spec


def timed(voice: tts_neuron.Voice, text: str) -> tuple[list[float], np.ndarray]:
    """Seconds from the call to each chunk, and the audio."""
    start, times, chunks = time.perf_counter(), [], []
    for chunk in voice.stream(text):
        times.append(time.perf_counter() - start)
        chunks.append(chunk)
    return times, np.concatenate(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addon", type=Path, default=REPO / "addons" / "tacotron-en")
    parser.add_argument("--rounds", type=int, default=2, help="times each text is spoken by each")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    voices = {
        "shipped": tts_neuron.load(args.addon),
        "earlier": tts_neuron.load(args.addon, stack=stack_with(args.addon, EARLIER)),
    }
    for voice in voices.values():
        voice.synthesize("Warm the voice up.")
    arrivals: dict[str, list[list[float]]] = {name: [] for name in voices}
    totals = dict.fromkeys(voices, 0.0)
    for index, text in enumerate(texts("ordinary") * args.rounds):
        names = list(voices) if index % 2 == 0 else list(reversed(voices))
        audio = {}
        for name in names:
            times, audio[name] = timed(voices[name], text)
            arrivals[name].append(times)
            totals[name] += times[-1]
        np.testing.assert_allclose(audio["shipped"], audio["earlier"], rtol=0, atol=1e-4)
    result = {
        "machine": cpu_model(),
        "texts": len(arrivals["shipped"]),
        **{
            name: {
                "chunk_ms_p50": [
                    round(statistics.median(t[k] for t in times if k < len(t)) * 1e3, 1) for k in range(4)
                ],
                "total_s": round(totals[name], 2),
            }
            for name, times in arrivals.items()
        },
    }
    result["total_ratio"] = round(totals["shipped"] / totals["earlier"], 3)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
