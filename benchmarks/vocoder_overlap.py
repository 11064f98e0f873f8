"""How far streamed Griffin-Lim is from whole-utterance Griffin-Lim, for several window contexts.

    python benchmarks/vocoder_overlap.py [--data data/teacher] [--sentences 24]

Griffin-Lim has no bounded receptive field, so windowed output cannot equal offline output. The yardstick
for "negligible" is Griffin-Lim's own spread: the spectral convergence between two offline runs that
differ only in their random initial phase. Both the plain and the fixed-shape (padded) block are measured
on the teacher's held-out mel frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_neuron.audio import AudioConfig, GriffinLim, spectral_convergence  # noqa: E402
from tts_neuron.blocks.base import Chunk  # noqa: E402
from tts_neuron.blocks.fixed import PaddedGriffinLim  # noqa: E402
from tts_neuron.blocks.vocoder import GriffinLimVocoder  # noqa: E402
from tts_neuron_build.teacher import TeacherSplit  # noqa: E402

SETTINGS = [(0, 0), (4, 2), (8, 4), (16, 4), (16, 8), (32, 8)]
"""(context_frames, crossfade_frames) pairs, windows of 64 frames."""


def streamed(block: GriffinLimVocoder, mel: torch.Tensor, chunk: int = 24) -> torch.Tensor:
    chunks = (Chunk(mel[a : a + chunk], a, a + chunk >= len(mel)) for a in range(0, len(mel), chunk))
    return torch.cat([c.data for c in block.stream(chunks, {})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--sentences", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg, device = AudioConfig(), torch.device("cpu")
    split = TeacherSplit.load(args.data / "eval.safetensors")
    mels = [split.item(i)[2] for i in range(min(args.sentences, len(split)))]

    offline = [GriffinLim(cfg, seed=0)(mel) for mel in mels]
    spread = statistics.median(
        spectral_convergence(ref, GriffinLim(cfg, seed=1)(mel), cfg)
        for ref, mel in zip(offline, mels, strict=True)
    )
    rows = [
        f"Griffin-Lim's own spread (offline, seed 0 vs seed 1): spectral convergence {spread:.3f}",
        "",
        "| context frames | cross-fade frames | streamed vs offline | padded (fixed-shape) vs offline |",
        "|---|---|---|---|",
    ]
    settings: list[dict[str, float]] = []
    results = {"spread": spread, "settings": settings}
    for context, fade in SETTINGS:
        params = {"window_frames": 64, "context_frames": context, "crossfade_frames": fade}
        scores = []
        for cls in (GriffinLimVocoder, PaddedGriffinLim):
            block = cls(cfg, device, **params)
            scores.append(
                statistics.median(
                    spectral_convergence(ref, streamed(block, mel), cfg)
                    for ref, mel in zip(offline, mels, strict=True)
                )
            )
        settings.append({"context": context, "crossfade": fade, "plain": scores[0], "padded": scores[1]})
        rows.append(f"| {context} | {fade} | {scores[0]:.3f} | {scores[1]:.3f} |")
    table = "\n".join(rows) + f"\n\nMedians over {len(mels)} held-out sentences, windows of 64 frames.\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocoder_overlap.md").write_text(
        f"`python benchmarks/vocoder_overlap.py`\n\n{table}", encoding="utf-8"
    )
    (args.out / "vocoder_overlap.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
