"""An imported Kokoro model (our addon) against the `kokoro` package's own CPU inference, same paragraphs,
same phonemes, same run.

    python benchmarks/kokoro_compare.py [--paragraphs 8] [--streams 8] [--threads 1] [--out DIR]

No real weights can be downloaded here, so the model is built by the package itself: `KModel` from
Kokoro-82M's published config (full shape, 81.8 M parameters) and vocabulary, every tensor perturbed, with
its duration head set to about 3 frames a token (real speech's rate: random weights would give about 25),
written in Kokoro's layout and imported with `tts-neuron import kokoro` (default buckets).

Both sides get the same phonemes, from our Kokoro frontend (misaki's G2P needs a spaCy model that cannot
be installed here), and the same voice pack; frontend time is left out of both. The package's side is what
its `KPipeline` does once text is phonemised: chunks of at most 510 phonemes (here, whole sentences joined
while they fit, as its waterfall splits at sentence ends), each `KPipeline.infer(model, phonemes, pack)`,
audio yielded per chunk. Paragraphs are 3 consecutive sentences of benchmarks/hard_sentences.txt.

- one stream (`--threads` torch threads on both sides): time to first audio and total time per paragraph,
  interleaved (ours, then the package's), after one warm-up each;
- aggregate throughput at `--streams` concurrent streams: ours on the device engine (one worker per
  core, calls of the streams batched at the addon's buckets), the package's paragraphs one after another
  with every core's torch threads (it has no batching; Python threads would only contend for the cores).

Run it on a quiet machine: figures taken while other work shares the cores are noise. Writes
`results.json` and `results.md` to `--out` (default benchmarks/results/kokoro_compare).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
FRAMES_PER_TOKEN = 3.0
CHUNK_PHONEMES = 510
"""KPipeline's chunk limit: ALBERT's 512 positions less Kokoro's two 0 ids."""


def fixture_model(folder: Path) -> Path:
    """A Kokoro-82M-shaped model in Kokoro's layout, built and perturbed by the kokoro package."""
    sys.path.insert(0, str(REPO))
    from tests.test_kokoro import FULL, PUBLISHED_VOCAB, write_model

    write_model(
        folder,
        {**FULL, "vocab": PUBLISHED_VOCAB},
        seed=7,
        voices=("af_heart",),
        frames_per_token=FRAMES_PER_TOKEN,
    )
    return folder


def paragraphs(count: int) -> list[str]:
    lines = [
        line
        for line in (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [" ".join(lines[i : i + 3]) for i in range(0, 3 * count, 3)][:count]


class CachedFrontend:
    """The voice's own frontend, run once per paragraph before timing: its sentences replayed."""

    def __init__(self, frontend: Any, texts: list[str]) -> None:
        self.kind, self.symbols, self.language = frontend.kind, frontend.symbols, frontend.language
        self.cache = {text: list(frontend.sentences(text)) for text in texts}

    def sentences(self, text: str) -> Iterator[Any]:
        return iter(self.cache[text])


def package_chunks(sentences: list[Any]) -> list[str]:
    """The phoneme strings KPipeline would infer: sentences joined while they fit in 510 phonemes."""
    chunks: list[str] = []
    for sentence in sentences:
        phonemes = "".join(sentence.phonemes)
        if chunks and len(chunks[-1]) + 1 + len(phonemes) <= CHUNK_PHONEMES:
            chunks[-1] += " " + phonemes
        else:
            chunks.append(phonemes[:CHUNK_PHONEMES])
    return chunks


def compare(
    model_dir: Path, addon_dir: Path, n_paragraphs: int, streams: int, threads: int
) -> dict[str, Any]:
    from kokoro import KModel, KPipeline

    import tts_neuron
    from tts_neuron.engine import END, Engine

    texts = paragraphs(max(n_paragraphs, streams) + 1)
    voice = tts_neuron.load(addon_dir, threads=threads)
    voice.frontend = CachedFrontend(voice.frontend, texts)  # type: ignore[assignment]
    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    weights = next(model_dir.glob("*.pth"))
    kmodel = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(weights)).eval()
    pack = torch.load(model_dir / "voices" / "af_heart.pt", weights_only=True)
    chunks = {text: package_chunks(voice.frontend.cache[text]) for text in texts}  # type: ignore[attr-defined]

    def ours(text: str) -> tuple[float, float, int]:
        started, first, samples = time.perf_counter(), None, 0
        for audio in voice.stream(text, speaker="af_heart", seed=0):
            first = time.perf_counter() - started if first is None else first
            samples += audio.size
        return first or 0.0, time.perf_counter() - started, samples

    def package(text: str) -> tuple[float, float, int]:
        started, first, samples = time.perf_counter(), None, 0
        with torch.inference_mode():
            for phonemes in chunks[text]:
                audio = KPipeline.infer(kmodel, phonemes, pack, 1.0).audio
                first = time.perf_counter() - started if first is None else first
                samples += audio.numel()
        return first or 0.0, time.perf_counter() - started, samples

    torch.set_num_threads(threads)
    ours(texts[0]), package(texts[0])  # warm-up: first calls allocate
    rows: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "total": [], "samples": []} for name in ("ours", "package")
    }
    for text in texts[1 : n_paragraphs + 1]:
        for name, run in (("ours", ours), ("package", package)):
            for key, value in zip(("first", "total", "samples"), run(text), strict=True):
                rows[name][key].append(value)

    # aggregate throughput at `streams` streams
    batch_texts = texts[1 : streams + 1]
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    package_samples = sum(package(text)[2] for text in batch_texts)
    package_seconds = time.perf_counter() - started
    engine = Engine()
    try:
        # the streams' voice runs its networks on the engine (a voice's runner is fixed when it is built)
        served = tts_neuron.load(addon_dir, threads=None, runner=engine)
        served.frontend = voice.frontend
        done, made = threading.Semaphore(0), [0]

        def sink(item: object) -> None:
            if isinstance(item, np.ndarray):
                made[0] += item.size
            elif item is END or isinstance(item, BaseException):
                done.release()

        view = served.with_settings(speaker="af_heart", seed=0)
        for _ in engine.iterate(texts[0], view, paced=False):  # warm-up on the engine
            pass
        started = time.perf_counter()
        for text in batch_texts:
            engine.submit(view, text, sink, paced=False)
        for _ in batch_texts:
            done.acquire()
        ours_seconds = time.perf_counter() - started
    finally:
        engine.close()
    rate = voice.sample_rate
    return {
        "model": "Kokoro-82M shape (kokoro 0.9.4 KModel, perturbed random weights), voice pack af_heart",
        "paragraphs": n_paragraphs,
        "threads": threads,
        "host": {"machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__},
        "one_stream": {
            name: {
                "first_audio_p50_s": round(statistics.median(times["first"]), 3),
                "first_audio_max_s": round(max(times["first"]), 3),
                "total_s": round(sum(times["total"]), 3),
                "audio_s": round(sum(times["samples"]) / voice.sample_rate, 2),
                "rtf": round(sum(times["total"]) * voice.sample_rate / sum(times["samples"]), 3),
            }
            for name, times in rows.items()
        },
        "streams": {
            "count": len(batch_texts),
            "ours_rtfx": round(made[0] / rate / ours_seconds, 3),
            "package_rtfx": round(package_samples / rate / package_seconds, 3),
            "ours_seconds": round(ours_seconds, 2),
            "package_seconds": round(package_seconds, 2),
        },
        "command": "python benchmarks/kokoro_compare.py " + " ".join(sys.argv[1:]),
    }


def markdown(result: dict[str, Any]) -> str:
    one, many = result["one_stream"], result["streams"]
    lines = [
        "# Imported Kokoro model against the kokoro package's CPU inference",
        "",
        f"{result['model']}; {result['paragraphs']} paragraphs of 3 sentences, {result['threads']} "
        f"thread(s) for one stream; host {result['host']}. Audio lengths differ a little: the package speaks "
        "a paragraph as one chunk, we speak it sentence by sentence (each with its own style row).",
        "",
        "| one stream | first audio p50 | first audio max | total | audio | RTF |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {row['first_audio_p50_s']} s | {row['first_audio_max_s']} s | {row['total_s']} s | "
            f"{row['audio_s']} s | {row['rtf']} |"
            for name, row in one.items()
        ),
        "",
        f"{many['count']} streams at once: ours {many['ours_rtfx']}x real time ({many['ours_seconds']} s), "
        f"the package {many['package_rtfx']}x ({many['package_seconds']} s, one paragraph after another).",
        "",
        f"`{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=8)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kokoro_compare")
    args = parser.parse_args()
    from tts_neuron.importers.kokoro import import_model

    with tempfile.TemporaryDirectory(prefix="kokoro-compare-") as tmp:
        model_dir = fixture_model(Path(tmp) / "model")
        import_model(model_dir, Path(tmp) / "addon")
        result = compare(model_dir, Path(tmp) / "addon", args.paragraphs, args.streams, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
