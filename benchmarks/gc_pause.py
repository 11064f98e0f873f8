"""What one full collection of Python's garbage collector costs in a serving process, before and after
`gc.freeze()` (which the server calls once its voices are loaded and warm).

    python benchmarks/gc_pause.py

Loads the server's modules and both shipped voices on a device engine, speaks with each, then times
`gc.collect()` (every generation: the pause that stops every stream when Python decides to run it) with
the loaded heap as it is and once it is frozen. Medians of 5.
"""

from __future__ import annotations

import gc
import statistics
import time

from serve_load import ADDONS

import tts_neuron
import tts_neuron.server.app  # noqa: F401 - the server's heap: FastAPI, pydantic, the encoders
from tts_neuron.engine import Engine


def full_collection_ms() -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def main() -> None:
    engine = Engine()
    try:
        for addon in ADDONS:
            voice = tts_neuron.load(addon, runner=engine)
            for _ in engine.iterate("Warm up, then measure.", voice, paced=False):
                pass
        objects = len(gc.get_objects())
        before = full_collection_ms()
        gc.freeze()
        after = full_collection_ms()
    finally:
        engine.close()
    print(f"{objects} objects tracked; a full collection takes {before} ms, {after} ms once they are frozen")


if __name__ == "__main__":
    main()
