"""An imported Piper voice (our addon, streamed) against Piper's own ONNX Runtime, same sentences, same run.

    python benchmarks/piper_compare.py [VOICE.onnx] [--sentences 40] [--threads 1] [--out DIR]

Without a voice, it builds one: a Piper "medium" voice made by `piper-tts` itself (the `piper` extra), every
tensor perturbed, exported as Piper's export script does (no real voice can be downloaded here; the
shapes, and so the costs, are a real medium voice's). The voice is imported with `tts-neuron import piper`
and loaded with its `cpu` stack.

Both sides get the same phoneme ids (our Piper frontend's, whole sentences of benchmarks/hard_sentences.txt),
the voice's `noise_scale` and `length_scale`, and `noise_w` 0 (so both make exactly the same number of
frames; pass `--noise-w` to change it). Per sentence, interleaved (ours, then Piper's), after one warm-up
each:

- ours: time to the first audio chunk of the sentence spoken as a text's first (small windows for early
  audio; only that chunk is made), then the time to speak the whole sentence as the voice speaks it after
  the sentence before (full windows from the start, growing past it: that sentence's audio plays
  meanwhile). The stack:
  encoder, Piper's durations, flow and HiFi-GAN in windows;
- Piper's: one `InferenceSession.run` per sentence, as Piper speaks; its first audio is its total.

Frontend time is left out of both; each side's minor page faults and system time are counted. Then the
same sentences again, totals only: by then our networks have met nearly every window length (oneDNN builds
a convolution's kernels at each new length, which made HiFi-GAN's first call at a length 1.2 to 2.4x its
second in ad hoc timings; ONNX Runtime's kernels take any length), as in a process that has spoken for a
while. Then the first audio of texts (three lines of the file each, one per line, interleaved): ours is
`voice.stream(text)`'s first chunk, frontend included (the first sentence is cut after its first long
enough clause, as the frontend does for every text); Piper's is one run on the text's first whole
sentence, frontend left out. Last, our first audio of single texts of 1, 10, 100 and 400 lines (the
file's lines cycled): it should not grow with the text. Run it on a quiet machine: figures taken while
other work shares the cores are noise. `TTS_NEURON_MALLOC=system` runs ours with glibc's default
allocator settings (tts_neuron.allocator). Writes `results.json` and `results.md` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "benchmarks" / "hard_sentences.txt").read_text("utf-8")
MEDIUM = {
    "resblock": "2",
    "resblock_kernel_sizes": (3, 5, 7),
    "resblock_dilation_sizes": ((1, 2), (2, 6), (3, 12)),
    "upsample_rates": (8, 8, 4),
    "upsample_initial_channel": 256,
    "upsample_kernel_sizes": (16, 16, 8),
}
"""Piper's "medium" generator (`piper.train.vits`'s defaults)."""
TEXT_LINES = (1, 10, 100, 400)
"""Lengths, in lines of the file (cycled), of the texts whose first audio is timed by length."""


def fixture_voice(folder: Path, generator: dict[str, Any] = MEDIUM, hidden: int = 192) -> Path:
    """A Piper voice of the given shape with random, perturbed weights, written by piper-tts as its export
    script writes one; returns the .onnx path (its .onnx.json beside it)."""
    sys.path.insert(0, str(REPO))
    from tests.test_piper_import import write_voice

    onnx_path, _ = write_voice(folder, generator, hidden=hidden)
    return onnx_path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def compare(
    onnx_path: Path, addon_dir: Path, n_sentences: int, threads: int, noise_w: float
) -> dict[str, Any]:
    import onnxruntime as ort

    import tts_neuron
    from tts_neuron.allocator import hold_freed_memory
    from tts_neuron.blocks.base import CONTINUES
    from tts_neuron.frontend import Sentence
    from tts_neuron.frontend.piper import PiperFrontend, ipa_sentences_with_text, merge_clusters
    from tts_neuron.voice import ListenerClock, Voice

    voice: Voice = tts_neuron.load(addon_dir, threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    settings: dict[str, Any] = {
        "noise_scale": voice.addon.settings["noise_scale"].default,
        "length_scale": voice.addon.settings["length_scale"].default,
        "noise_w": noise_w,
        "seed": 0,
    }
    scales = np.array(
        [settings["noise_scale"], settings["length_scale"], noise_w], np.float32
    )  # Piper's order
    sid = voice.speaker_id(None) if voice.addon.speakers else None
    lines = [line for line in TEXT.splitlines() if line.strip() and not line.startswith("#")]
    frontend = voice.frontend
    assert isinstance(frontend, PiperFrontend)

    def whole_sentences(text: str) -> list[Sentence]:  # as the frontend reads them, none cut
        return [
            frontend.sentence(part, merge_clusters(phonemes, frontend.clusters))
            for part, phonemes in ipa_sentences_with_text(text, frontend.voice)
        ]

    whole = [sentence for line in lines for sentence in whole_sentences(line)]
    sentences = whole[: n_sentences + 1]
    call = voice.call_settings(settings)

    def ours_first(index: int) -> float:
        """First audio of the sentence as a text's first (small windows; its first chunk only)."""
        started = time.perf_counter()
        first_only = {**call.sentence(index), CONTINUES: torch.tensor(False)}
        next(iter(voice.sentence_chunks(sentences[index], settings=first_only)))
        return time.perf_counter() - started

    def ours(index: int, clock: ListenerClock) -> tuple[float, int]:
        """The whole sentence as the voice speaks it after the one before (full windows from the start,
        growing; the first as large as half the audio a real-time listener of the pass has queued, wall
        time of Piper's turns included, allows)."""
        started, samples = time.perf_counter(), 0
        later = call.sentence(index, clock.queued_frames())
        for chunk in clock.made(voice.sentence_chunks(sentences[index], settings=later)):
            samples += chunk.data.shape[0]
        return time.perf_counter() - started, samples

    def piper(ids: list[int]) -> tuple[float, int]:
        feeds = {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": scales,
        }
        if sid is not None:
            feeds["sid"] = np.array([sid], np.int64)
        started = time.perf_counter()
        audio = session.run(None, feeds)[0]
        return time.perf_counter() - started, int(audio.size)

    def ours_text(text: str) -> float:
        started = time.perf_counter()
        next(iter(voice.stream(text, **settings)))
        return time.perf_counter() - started

    listener = ListenerClock(voice.sample_rate, voice.addon.audio.hop_length)  # one a pass
    ours_first(0), ours(0, listener), piper(sentences[0].tokens)  # warm-up: first calls allocate
    rows: dict[str, dict[str, list[float]]] = {
        "tts_neuron_addon": {"first": [], "total": []},
        "piper_onnxruntime": {"first": [], "total": []},
    }
    host_cost = {name: {"minor_faults": 0, "system_s": 0.0} for name in rows}  # the kernel's share

    def counted(name: str, call: Callable[..., Any], *args: Any) -> Any:
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = call(*args)
        after = resource.getrusage(resource.RUSAGE_SELF)
        host_cost[name]["minor_faults"] += after.ru_minflt - before.ru_minflt
        host_cost[name]["system_s"] += after.ru_stime - before.ru_stime
        return result

    audio_seconds, tokens = 0.0, []
    for index in range(1, len(sentences)):
        first = counted("tts_neuron_addon", ours_first, index)
        total, samples = counted("tts_neuron_addon", ours, index, listener)
        rows["tts_neuron_addon"]["first"].append(first)
        rows["tts_neuron_addon"]["total"].append(total)
        seconds, piper_samples = counted("piper_onnxruntime", piper, sentences[index].tokens)
        rows["piper_onnxruntime"]["first"].append(seconds)
        rows["piper_onnxruntime"]["total"].append(seconds)
        if samples != piper_samples:
            raise RuntimeError(f"sentence {index}: we made {samples} samples, Piper {piper_samples}")
        audio_seconds += samples / voice.sample_rate
        tokens.append(len(sentences[index].tokens))
    # The same sentences again, totals only: the window lengths our networks meet have nearly all been seen
    # (oneDNN builds a convolution's kernels at each new length; ONNX Runtime's kernels take any length).
    listener = ListenerClock(voice.sample_rate, voice.addon.audio.hop_length)
    seen = {name: 0.0 for name in rows}
    for index in range(1, len(sentences)):
        seen["tts_neuron_addon"] += ours(index, listener)[0]
        seen["piper_onnxruntime"] += piper(sentences[index].tokens)[0]
    texts = [" ".join(lines[i : i + 3]) for i in range(min(n_sentences, len(lines) - 2))]
    text_first: dict[str, list[float]] = {"tts_neuron_addon": [], "piper_onnxruntime": []}
    for text in texts:
        text_first["tts_neuron_addon"].append(ours_text(text))
        text_first["piper_onnxruntime"].append(piper(whole_sentences(text)[0].tokens)[0])
    by_length = {}  # ours only: Piper's first audio is one run on the first sentence, whatever follows it
    for n_lines in TEXT_LINES:
        text = " ".join(lines[i % len(lines)] for i in range(n_lines))
        by_length[n_lines] = round(1000 * statistics.median(ours_text(text) for _ in range(7)), 1)
    return {
        "voice": onnx_path.name,
        "sentences": len(tokens),
        "ids_per_sentence": {"min": min(tokens), "median": statistics.median(tokens), "max": max(tokens)},
        "texts": len(texts),
        "audio_seconds": round(audio_seconds, 2),
        "threads": threads,
        "text_first_audio_p50_ms_by_lines": by_length,
        "settings": {k: v for k, v in settings.items() if k != "seed"},
        "malloc": "held" if hold_freed_memory() else "system",
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },  # fmt: skip
        **{
            name: {
                "first_audio_p50_ms": round(1000 * statistics.median(times["first"]), 1),
                "first_audio_p90_ms": round(1000 * percentile(times["first"], 90), 1),
                "first_audio_max_ms": round(1000 * max(times["first"]), 1),
                "text_first_audio_p50_ms": round(1000 * statistics.median(text_first[name]), 1),
                "text_first_audio_p90_ms": round(1000 * percentile(text_first[name], 90), 1),
                "total_s": round(sum(times["total"]), 3),
                "total_seen_lengths_s": round(seen[name], 3),
                "rtf": round(sum(times["total"]) / audio_seconds, 4),
                "minor_faults": host_cost[name]["minor_faults"],
                "system_s": round(host_cost[name]["system_s"], 3),
            }
            for name, times in rows.items()
        },
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Imported Piper voice against Piper's ONNX Runtime ({result['voice']})",
        "",
        f"{result['sentences']} sentences ({result['ids_per_sentence']['min']} to "
        f"{result['ids_per_sentence']['max']} ids, median {result['ids_per_sentence']['median']}), "
        f"{result['audio_seconds']} s of audio, {result['threads']} thread(s), "
        f"settings {result['settings']}, freed host memory {result['malloc']} (tts_neuron.allocator).",
        "",
        "| runtime | sentence: first audio p50 | p90 | max | total | RTF | "
        f"text ({result['texts']} of 3 lines): first audio p50 | p90 | page faults | system time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("tts_neuron_addon", "piper_onnxruntime"):
        row = result[name]
        lines.append(
            f"| {name} | {row['first_audio_p50_ms']} ms | {row['first_audio_p90_ms']} ms | "
            f"{row['first_audio_max_ms']} ms | {row['total_s']} s | {row['rtf']} | "
            f"{row['text_first_audio_p50_ms']} ms | {row['text_first_audio_p90_ms']} ms | "
            f"{row['minor_faults']} | {row['system_s']} s |"
        )
    ours, piper = result["tts_neuron_addon"], result["piper_onnxruntime"]
    by_length = result["text_first_audio_p50_ms_by_lines"]
    lines += [
        "",
        f"Total, ours against Piper's: {ours['total_s']} / {piper['total_s']} s, "
        f"{ours['total_s'] / piper['total_s']:.3f}x; the same sentences again, window lengths "
        f"seen: {ours['total_seen_lengths_s']} / {piper['total_seen_lengths_s']} s, "
        f"{ours['total_seen_lengths_s'] / piper['total_seen_lengths_s']:.3f}x.",
        "",
        "Our first audio of one text of N lines (p50 of 7, frontend included): "
        + ", ".join(f"{n} lines {ms} ms" for n, ms in by_length.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "voice", type=Path, nargs="?", help="a Piper .onnx (default: a perturbed medium fixture)"
    )
    parser.add_argument("--sentences", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--noise-w", type=float, default=0.0)
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    args = parser.parse_args()
    from tts_neuron.importers.piper import import_voice

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.voice or fixture_voice(Path(tmp))
        import_voice(onnx_path, None, Path(tmp) / "addon")
        result = compare(onnx_path, Path(tmp) / "addon", args.sentences, args.threads, args.noise_w)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "results.md").write_text(markdown(result))
        print(markdown(result))


if __name__ == "__main__":
    main()
