"""Padding waste of the fixed-shape path on a realistic mix of sentences, for several bucket choices.

    python benchmarks/padding.py [--data data/teacher] [--out benchmarks/results]

Waste is the share of computed positions that are padding: for the encoders, token positions beyond
each piece's length in its bucket; for the decoder, frame positions of each window that are halo or
padding rather than the frames the window produces. It is pure arithmetic over the sentences' token and
frame counts (the teacher's, from `make teacher`), using the runtime's own bucket table and splitter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_neuron.backends.executor import BucketTable  # noqa: E402
from tts_neuron.blocks.pieces import split_points  # noqa: E402
from tts_neuron_build.teacher import TeacherSplit  # noqa: E402

TOKEN_LADDERS = {
    "16-256, powers of two (shipped)": [16, 32, 64, 128, 256],
    "32-256, multiples of 32": list(range(32, 257, 32)),
    "64, 128, 256": [64, 128, 256],
    "256 only": [256],
    "16-128, powers of two (longer sentences split)": [16, 32, 64, 128],
}
DECODER_RADIUS = 12
DECODER_CORES = {"core 64 + short last window (shipped)": (64, True), "core 64": (64, False),
                 "core 32": (32, False), "core 128": (128, False)}  # fmt: skip


def token_waste(lengths: list[int], buckets: list[int]) -> tuple[float, int]:
    """(padding share, pieces) when every sentence is split to the largest bucket and padded."""
    table = BucketTable(buckets)
    computed = pieces = 0
    for n in lengths:
        cuts = split_points(n, table.largest, set(), set(range(n)))
        for a, b in zip(cuts, cuts[1:], strict=False):
            bucket = table.bucket_for(b - a)
            assert bucket is not None
            computed += bucket
            pieces += 1
    return 1 - sum(lengths) / computed, pieces


def frame_waste(frames: list[int], core: int, short_last: bool) -> float:
    """Padding share of decoder windows: each window computes core + 2 halo frames to produce <= core."""
    full = core + 2 * DECODER_RADIUS
    short = core // 4 + 2 * DECODER_RADIUS
    computed = 0
    for t in frames:
        windows, rest = divmod(t, core)
        computed += windows * full
        if rest:
            computed += short if short_last and rest <= core // 4 else full
    return 1 - sum(frames) / computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/teacher"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not (args.data / "eval.safetensors").is_file():
        raise SystemExit(f"{args.data}: no teacher data; run `make teacher` first")
    split = TeacherSplit.load(args.data / "train.safetensors")
    lengths = (split.token_offsets[1:] - split.token_offsets[:-1]).tolist()
    frames = (split.frame_offsets[1:] - split.frame_offsets[:-1]).tolist()

    rows = ["| encoder token buckets | padding share | encoder calls per sentence |", "|---|---|---|"]
    results: dict[str, dict[str, float]] = {"tokens": {}, "frames": {}}
    for name, ladder in TOKEN_LADDERS.items():
        waste, pieces = token_waste(lengths, ladder)
        results["tokens"][name] = waste
        rows.append(f"| {name} | {waste:.1%} | {pieces / len(lengths):.2f} |")
    rows += [
        "",
        f"| decoder windows (halo {DECODER_RADIUS} each side) | padding and halo share |",
        "|---|---|",
    ]
    for name, (core, short_last) in DECODER_CORES.items():
        results["frames"][name] = frame_waste(frames, core, short_last)
        rows.append(f"| {name} | {results['frames'][name]:.1%} |")
    mean_tokens, max_tokens = sum(lengths) / len(lengths), max(lengths)
    header = (
        f"{len(lengths)} training sentences: {mean_tokens:.0f} tokens on average (max {max_tokens}), "
        f"{sum(frames) / len(frames):.0f} frames on average.\n\n"
    )
    table = header + "\n".join(rows) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "padding.md").write_text(f"`python benchmarks/padding.py`\n\n{table}", encoding="utf-8")
    (args.out / "padding.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
