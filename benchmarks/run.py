"""Latency, throughput and memory of every addon x stack x target this host can run, against ONNX Runtime
on the same networks and against the naive single call on the whole text.

    python benchmarks/run.py [--quick] [--out DIR] [--addons DIR ...] [--threads N]

Writes DIR/results.json (one record per measurement), DIR/results.md and plots; see docs/benchmarks.md
for the fields and the method. `--quick` (fewer repeats, concurrency on one-sentence texts) finishes in
under 3 minutes on 2 cores. Addons are copied to a temporary folder and compiled there, never in place.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_backends import Config, addon_configs
from bench_measure import PeakRss, cpu_model, first_audio_s, run_concurrent, run_stream, summarise
from bench_report import add_naive_speedups, write_markdown, write_plots
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
SIZES = (40, 200, 1000, 5000)
STREAMS = (1, 4, 16)

PARAGRAPH = (
    "The morning train was late again, sadly.",
    "Nobody on the platform seemed surprised, and a few people simply opened their newspapers.",
    "A woman near the stairs was reading a letter she had clearly read many times before.",
    "When the train finally arrived, it was crowded, warm, and smelled faintly of coffee.",
    "I found a seat by the window and watched the fields go by.",
    "The farmers had already started cutting the hay, and the air was full of dust.",
    "Near the river, two boys were trying to teach a dog to fetch a stick from the water.",
    "The dog, to everyone's delight, preferred to swim in circles.",
    "By the time we reached the city, the clouds had cleared and the sun was shining.",
    "I walked from the station to the library, which opens at nine.",
    "The librarian knew me by name and asked whether I had finished the book about the lighthouse.",
    "I told her that I had, and that I liked the ending more than I expected.",
    "She smiled and handed me another one, a long novel about a family that builds boats.",
    "It will probably take me the rest of the month to read it.",
)
"""Ordinary English sentences of varied length. Every text starts with the first one (40 characters), so
time to first audio compares like with like across text lengths."""


def build_text(chars: int, first: int = 0) -> str:
    """Whole sentences of the paragraph, cycling from sentence `first`, for as long as adding the next one
    brings the length closer to `chars` (always at least one sentence)."""
    text = PARAGRAPH[first % len(PARAGRAPH)]
    i = first + 1
    while True:
        longer = f"{text} {PARAGRAPH[i % len(PARAGRAPH)]}"
        if abs(len(longer) - chars) >= abs(len(text) - chars):
            return text
        text, i = longer, i + 1


@dataclass(frozen=True)
class Plan:
    """How many times each figure is measured: quick mode trades repeats for a run under 3 minutes."""

    quick: bool
    sizes: tuple[int, ...]
    streams: tuple[int, ...]
    concurrency_chars: int
    repeats_override: int | None = None

    def repeats(self, size: int) -> tuple[int, int]:
        """(complete runs, time-to-first-audio samples) for one text size. Extra samples beyond the
        complete runs stop after the first chunk, so that long texts get several samples cheaply."""
        if self.repeats_override is not None:
            return self.repeats_override, self.repeats_override
        if self.quick:
            return (3 if size <= 40 else 2 if size <= 200 else 1), 5
        return (10 if size <= 200 else 5 if size <= 1000 else 2), 20

    @property
    def throughput_repeats(self) -> int:
        return self.repeats_override or (1 if self.quick else 3)


def machine_info(threads: int, rss_method: str) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "numpy": np.__version__,
        "git_revision": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "peak_rss_method": rss_method,
    }


def base_record(config: Config) -> dict[str, Any]:
    """What every record of a configuration shares, measured or skipped."""
    return {
        "addon": config.addon,
        "addon_trained": config.trained,
        "stack": config.stack,
        "target": config.target,
        "backend": config.backend,
        "status": "skipped" if config.skipped else "measured",
        "skip_reason": config.skipped,
        "compile_s": config.compile_s,
        "load_s": config.load_s,
        "warmup_s": config.warmup_s,
    }


def warm_up(config: Config, text: str) -> None:
    """First calls are slow on every runtime (allocators, kernel selection): time one, discard another."""
    assert config.stream is not None
    config.warmup_s = round(run_stream(config.stream, text).total_s, 3)
    run_stream(config.stream, text)


def measure_latency(config: Config, text: str, repeats: tuple[int, int], rss: PeakRss) -> dict[str, Any]:
    """One text, one stream at a time: complete runs, then extra first-chunk samples."""
    assert config.stream is not None
    full, samples = repeats
    rss_start = rss.reset()
    if config.padding:
        config.padding.reset()
    runs = [run_stream(config.stream, text) for _ in range(full)]
    padding = config.padding.summary() if config.padding else None
    extra = [first_audio_s(config.stream, text) for _ in range(samples - full)] if config.streaming else []
    # The naive call's one chunk comes at its end: its first audio is its total, by definition.
    ttfa = [run.ttfa_s if config.streaming else run.total_s for run in runs] + extra
    figures = summarise(
        [run.total_s for run in runs],
        runs[0].samples / config.sample_rate,
        ttfa,
        [gap for run in runs for gap in run.gaps_s],
        len(runs[0].arrivals),
    )
    return {
        "kind": "latency",
        "text_chars": len(text),
        "streams": 1,
        **figures,
        "peak_rss_mb": rss.peak_mb(),
        "rss_start_mb": rss_start,
        "padding": padding,
    }


def measure_throughput(config: Config, texts: list[str], repeats: int, rss: PeakRss) -> dict[str, Any]:
    """Concurrent streams on threads, each its own text: aggregate RTFX and per-stream latency."""
    assert config.stream is not None
    rss_start = rss.reset()
    walls: list[float] = []
    ttfa: list[float] = []
    gaps: list[float] = []
    for _ in range(repeats):
        runs = run_concurrent(config.stream, texts)
        walls.append(max(run.end for run in runs) - min(run.start for run in runs))
        ttfa += [run.ttfa_s for run in runs]
        gaps += [gap for run in runs for gap in run.gaps_s]
    figures = summarise(
        walls,
        sum(run.samples for run in runs) / config.sample_rate,
        ttfa,
        gaps,
        sum(len(run.arrivals) for run in runs),
    )
    return {
        "kind": "throughput",
        "text_chars": round(statistics.mean(len(text) for text in texts)),
        "streams": len(texts),
        **figures,
        "peak_rss_mb": rss.peak_mb(),
        "rss_start_mb": rss_start,
        "padding": None,
    }


def run_benchmark(addons: list[Path], plan: Plan, threads: int, work: Path) -> list[dict[str, Any]]:
    """Load every configuration, warm each up, then measure text size by text size with every
    configuration in turn, so that drift of the machine spreads over all of them alike."""
    rss = PeakRss()
    machine = machine_info(threads, rss.method)
    configs = [config for addon in addons for config in addon_configs(addon, work, threads)]
    ready = [config for config in configs if config.stream is not None]
    texts = {size: build_text(size) for size in plan.sizes}
    warmup_text = texts[min(plan.sizes, key=lambda size: abs(size - 200))]
    steps = len(ready) * (1 + len(plan.sizes)) + len(plan.streams) * sum(c.streaming for c in ready)
    records: list[dict[str, Any]] = []
    with tqdm(total=steps, desc="benchmark", unit="step", file=sys.stderr) as progress:
        for config in ready:
            progress.set_postfix_str(f"warm up {config.label}")
            warm_up(config, warmup_text)
            progress.update()
        for size in plan.sizes:
            for config in ready:
                progress.set_postfix_str(f"{config.label}, {size} chars")
                record = measure_latency(config, texts[size], plan.repeats(size), rss)
                records.append({**base_record(config), "text_size": size, **record, "machine": machine})
                progress.update()
        for streams in plan.streams:
            for config in (c for c in ready if c.streaming):
                progress.set_postfix_str(f"{config.label}, {streams} streams")
                stream_texts = [build_text(plan.concurrency_chars, first=i) for i in range(streams)]
                record = measure_throughput(config, stream_texts, plan.throughput_repeats, rss)
                size = plan.concurrency_chars
                records.append({**base_record(config), "text_size": size, **record, "machine": machine})
                progress.update()
    skipped = [{**base_record(config), "machine": machine} for config in configs if config.skipped]
    return add_naive_speedups(records) + skipped


def default_addons() -> list[Path]:
    return sorted(path.parent for path in (REPO / "addons").glob("*/addon.json"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; under 3 minutes on 2 cores")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/bench[-quick]")
    parser.add_argument("--addons", type=Path, nargs="+", help="addon folders (default: all of addons/)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and ORT intra-op threads per stream (default 1: see docs/benchmarks.md)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="text lengths, characters")
    parser.add_argument("--streams", type=int, nargs="+", default=list(STREAMS), help="concurrent streams")
    parser.add_argument(
        "--concurrency-chars", type=int, help="text length of each concurrent stream (default 40 quick, 200)"
    )
    parser.add_argument("--repeats", type=int, help="complete runs and samples of every figure (tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    out: Path = args.out or REPO / "benchmarks" / "results" / ("bench-quick" if args.quick else "bench")
    addons: list[Path] = args.addons or default_addons()
    plan = Plan(
        quick=args.quick,
        sizes=tuple(sorted(args.sizes)),
        streams=tuple(args.streams),
        concurrency_chars=args.concurrency_chars or (40 if args.quick else 200),
        repeats_override=args.repeats,
    )
    with tempfile.TemporaryDirectory(prefix="tts-bench-") as work:
        records = run_benchmark(addons, plan, args.threads, Path(work))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_markdown(out / "results.md", records, command, time.perf_counter() - started)
    write_plots(out, records)
    print(f"wrote {out}/results.json, results.md and plots in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
