"""Vocoder speed on one thread: the neural vocoder against Griffin-Lim, offline and streamed, per second of
audio, with its FLOPs counted and set against what this machine's matrix multiply reaches.

    python benchmarks/vocoder_speed.py [--addon addons/fastspeech-en] [--data data/teacher] [--sentences 24]

Inputs are the teacher's held-out mel frames. "Offline" vocodes a whole sentence in one call; "streamed"
runs the runtime's block on the sentence in the chunks a decoder hands it (24 frames, then 64), so it
includes the recomputed context of every window. Medians over sentences, after a warm-up. Writes
benchmarks/results/vocoder_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_neuron.addon import Addon, load_addon  # noqa: E402
from tts_neuron.audio import GriffinLim  # noqa: E402
from tts_neuron.blocks.base import Chunk, StreamableBlock  # noqa: E402
from tts_neuron.blocks.vocoder import GriffinLimVocoder, Vocoder  # noqa: E402
from tts_neuron.models.vocoder import MelVocoder  # noqa: E402
from tts_neuron_build.teacher import TeacherSplit  # noqa: E402

FIRST_CHUNK, CHUNK = 24, 64
"""The chunk sizes a decoder hands the vocoder (the Upsampler's defaults)."""


def decoder_chunks(mel: torch.Tensor) -> Iterator[Chunk]:
    start, size = 0, FIRST_CHUNK
    while True:
        stop = min(start + size, len(mel))
        yield Chunk(mel[start:stop], start, stop == len(mel))
        if stop == len(mel):
            return
        start, size = stop, CHUNK


def seconds(run: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of `repeats` runs: timing noise here only ever adds time."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def streamed(block: StreamableBlock, mel: torch.Tensor) -> Callable[[], object]:
    return lambda: [c.data for c in block.stream(decoder_chunks(mel), {})]


def matmul_gflops() -> float:
    """What one thread reaches on a large float32 matrix multiply: this machine's practical peak."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / seconds(lambda: a @ b, repeats=10) / 1e9


def vocoder_flops(network: MelVocoder, frames: int) -> int:
    mel = torch.zeros(1, frames, network.n_mels)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(mel, torch.ones(1, frames))
    return int(counter.get_total_flops())


def vocoder_arguments(doc: str, sentences: int) -> argparse.Namespace:
    """The command line both vocoder measurements share; pins torch to one thread."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--addon", type=Path, default=Path("addons/fastspeech-en"))
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--sentences", type=int, default=sentences)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    torch.set_num_threads(1)
    return parser.parse_args()


def addon_vocoder(addon_dir: Path) -> tuple[Addon, str, MelVocoder]:
    """The addon, its vocoder network's name and the network."""
    addon = load_addon(addon_dir)
    (spec,) = addon.networks_with_role("vocoder")
    network = addon.network(spec.name)
    if not isinstance(network, MelVocoder):
        raise SystemExit(f"{addon_dir}: its vocoder is a {type(network).__name__}, not a MelVocoder")
    return addon, spec.name, network


def main() -> None:
    args = vocoder_arguments(__doc__ or "", sentences=24)
    addon, name, network = addon_vocoder(args.addon)
    real_only = network.compiled_form()
    griffin_lim = GriffinLim(addon.audio)
    split = TeacherSplit.load(args.data / "eval.safetensors")
    mels = [split.item(i)[2] for i in range(min(args.sentences, len(split)))]
    per_second = addon.audio.sample_rate / addon.audio.hop_length  # frames per second of audio

    systems: dict[str, Callable[[torch.Tensor], Callable[[], object]]] = {
        "neural vocoder, offline (torch.fft inverse STFT)": lambda m: (
            lambda: network(m[None], torch.ones(1, len(m)))
        ),
        "neural vocoder, offline (real-only inverse STFT)": lambda m: (
            lambda: real_only(m[None], torch.ones(1, len(m)))
        ),
        "neural vocoder, streamed (Vocoder block)": lambda m: streamed(
            Vocoder(name, network, network.receptive_radius, network.hop), m
        ),
        "Griffin-Lim 32 iterations, offline": lambda m: lambda: griffin_lim(m),
        "Griffin-Lim, streamed (GriffinLim block, 64-frame windows +/-16)": lambda m: streamed(
            GriffinLimVocoder(addon.audio, torch.device("cpu")), m
        ),
    }
    results: dict[str, float] = {}
    with torch.inference_mode():
        for label, make in systems.items():
            make(mels[0])()  # warm up
            results[label] = statistics.median(seconds(make(m)) / (len(m) / per_second) for m in mels)
    flops_per_second = vocoder_flops(network, 862) / (862 / per_second)
    peak = matmul_gflops()
    offline = results["neural vocoder, offline (torch.fft inverse STFT)"]
    report = {
        "seconds_per_audio_second": results,
        "vocoder_gflop_per_audio_second": flops_per_second / 1e9,
        "vocoder_achieved_gflops": flops_per_second / 1e9 / offline,
        "matmul_gflops_one_thread": peak,
        "speedup_streamed_vs_streamed_griffin_lim": results[
            "Griffin-Lim, streamed (GriffinLim block, 64-frame windows +/-16)"
        ]
        / results["neural vocoder, streamed (Vocoder block)"],
        "sentences": len(mels),
        "parameters": sum(p.numel() for p in network.parameters()),
        "command": "python benchmarks/vocoder_speed.py " + " ".join(sys.argv[1:]),
    }
    rows = ["| Vocoder (1 thread) | s per s of audio | times real time |", "|---|---:|---:|"]
    rows += [f"| {label} | {value:.4f} | {1 / value:.0f}x |" for label, value in results.items()]
    rows += [
        "",
        f"Neural vocoder: {report['parameters']:,} parameters, "
        f"{report['vocoder_gflop_per_audio_second']:.2f} GFLOP per second of audio (counted by "
        f"torch.utils.flop_counter), {report['vocoder_achieved_gflops']:.1f} GFLOP/s achieved offline, "
        f"against {peak:.1f} GFLOP/s for a 1024x1024 float32 matmul on the same thread. Streamed neural "
        f"vocoder is {report['speedup_streamed_vs_streamed_griffin_lim']:.1f}x faster than streamed "
        "Griffin-Lim.",
        "",
        f"Command: `{report['command']}` ({len(mels)} held-out sentences, medians; fastest of 3 runs each)",
    ]
    table = "\n".join(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocoder_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "vocoder_speed.md").write_text("# Vocoder speed\n\n" + table + "\n")


if __name__ == "__main__":
    main()
