"""Turns benchmark records into results.md (tables, and the targets checked against what was measured)
and PNG plots."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

NAIVE = "naive-whole-text"
DYNAMIC_CPU = ("cpu", "cpu", "torch-eager")
FIXED_CPU = ("neuron", "cpu", "torch-export-fixed")
ONNX = "onnxruntime"


def label(record: Record) -> str:
    return f"{record['backend']} ({record['stack']}/{record['target']})"


def latency(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r["status"] == "measured" and r["kind"] == "latency"]


def find(records: Iterable[Record], addon: str, size: int, key: tuple[str, str, str]) -> Record | None:
    """The latency record of one configuration (stack, target, backend) at one text size."""
    return next(
        (
            r
            for r in latency(records)
            if r["addon"] == addon
            and r["text_size"] == size
            and (r["stack"], r["target"], r["backend"]) == key
        ),
        None,
    )


def add_naive_speedups(records: list[Record]) -> list[Record]:
    """Each streaming latency record gets how many times sooner its first audio comes than the naive
    single call's on the same text (whose first audio is its whole synthesis)."""
    for record in latency(records):
        naive = next(
            (
                r
                for r in latency(records)
                if r["backend"] == NAIVE
                and r["addon"] == record["addon"]
                and r["text_size"] == record["text_size"]
            ),
            None,
        )
        speedup = None
        if naive is not None and record["backend"] != NAIVE:
            speedup = round(naive["ttfa_ms"]["p50"] / record["ttfa_ms"]["p50"], 2)
        record["ttfa_speedup_vs_naive"] = speedup
    return records


def _key(record: Record) -> tuple[str, str, str]:
    return record["stack"], record["target"], record["backend"]


def _configs(records: Iterable[Record]) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys(_key(r) for r in latency(records)))


def _ratio_text(ratios: list[tuple[int, float]]) -> str:
    return ", ".join(f"{size}: {ratio:.2f}" for size, ratio in ratios)


def targets(records: list[Record]) -> list[dict[str, Any]]:
    """The four targets of the brief, evaluated on medians (p50) of this run; `met` is strict."""
    rows: list[dict[str, Any]] = []
    for addon in dict.fromkeys(r["addon"] for r in latency(records)):
        sizes = sorted({r["text_size"] for r in latency(records) if r["addon"] == addon})
        small, large = sizes[0], sizes[-1]
        streaming = [key for key in _configs(records) if key[2] != NAIVE]
        for key in streaming:
            a, b = find(records, addon, small, key), find(records, addon, large, key)
            if a and b and small != large:
                long, short = b["ttfa_ms"]["p50"], a["ttfa_ms"]["p50"]
                ratio = long / short
                rows.append(
                    {
                        "target": f"TTFA at {large} chars <= 1.5x TTFA at {small} chars",
                        "config": f"{addon}: {key[2]} ({key[0]}/{key[1]})",
                        "measured": f"{ratio:.2f}x ({long:.0f} vs {short:.0f} ms)",
                        "met": ratio <= 1.5,
                    }
                )
        naive = find(records, addon, large, ("cpu", "cpu", NAIVE))
        for key in streaming:
            b = find(records, addon, large, key)
            if naive and b:
                ours, theirs = b["ttfa_ms"]["p50"], naive["ttfa_ms"]["p50"]
                speedup = theirs / ours
                rows.append(
                    {
                        "target": f"TTFA at {large} chars >= 10x shorter than the naive single call",
                        "config": f"{addon}: {key[2]} ({key[0]}/{key[1]})",
                        "measured": f"{speedup:.0f}x ({ours:.0f} vs {theirs:.0f} ms)",
                        "met": speedup >= 10,
                    }
                )
        rows += _comparison(
            records, addon, sizes, [FIXED_CPU], DYNAMIC_CPU, "fixed-shape CPU path no slower than dynamic CPU"
        )
        rows += _comparison(
            records,
            addon,
            sizes,
            [DYNAMIC_CPU, FIXED_CPU],
            ("cpu", "cpu", ONNX),
            "best CPU path at least as fast as ONNX Runtime",
        )
    return rows


def _comparison(
    records: list[Record],
    addon: str,
    sizes: list[int],
    ours: list[tuple[str, str, str]],
    peer: tuple[str, str, str],
    title: str,
) -> list[dict[str, Any]]:
    """Our best configuration over the peer, per text size, for total time and for TTFA p50: the ratio
    ours / peer, so that <= 1 meets the target."""
    rows = []
    for metric, get in (("total time", lambda r: r["total_ms"]), ("TTFA p50", lambda r: r["ttfa_ms"]["p50"])):
        ratios = []
        for size in sizes:
            mine = [get(r) for key in ours if (r := find(records, addon, size, key))]
            theirs = find(records, addon, size, peer)
            if mine and theirs:
                ratios.append((size, min(mine) / get(theirs)))
        if ratios:
            worst = max(ratio for _, ratio in ratios)
            rows.append(
                {
                    "target": f"{title} ({metric})",
                    "config": f"{addon}: ratio ours/peer by text size",
                    "measured": _ratio_text(ratios),
                    "met": worst <= 1.0,
                }
            )
    return rows


Column = tuple[str, Callable[[Record], Any]]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _table(columns: list[Column], rows: Iterable[Record]) -> list[str]:
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(get(row)) for _, get in columns) + " |" for row in rows]


CONFIG: list[Column] = [("addon", lambda r: r["addon"]), ("backend (stack/target)", label)]
LATENCY: list[Column] = [
    *CONFIG,
    ("chars", lambda r: r["text_chars"]),
    ("TTFA p50", lambda r: _fmt(r["ttfa_ms"]["p50"])),
    ("p90", lambda r: _fmt(r["ttfa_ms"]["p90"])),
    ("p99", lambda r: _fmt(r["ttfa_ms"]["p99"])),
    ("gap p50", lambda r: _fmt(r["gap_ms"]["p50"])),
    ("gap p90", lambda r: _fmt(r["gap_ms"]["p90"])),
    ("gap max", lambda r: _fmt(r["gap_ms"]["max"])),
    ("total ms", lambda r: _fmt(r["total_ms"])),
    ("audio s", lambda r: _fmt(r["audio_s"], 1)),
    ("RTF", lambda r: _fmt(r["rtf"], 3)),
    ("RTFX", lambda r: _fmt(r["rtfx"], 1)),
    ("peak RSS MB", lambda r: _fmt(r["peak_rss_mb"])),
    ("repeats", lambda r: f"{r['repeats']} ({r['ttfa_samples']})"),
]
VERSUS_NAIVE: list[Column] = [
    *CONFIG,
    ("chars", lambda r: r["text_chars"]),
    ("TTFA p50 ms", lambda r: _fmt(r["ttfa_ms"]["p50"])),
    ("naive TTFA ms", lambda r: _fmt(r["ttfa_ms"]["p50"] * r["ttfa_speedup_vs_naive"])),
    ("first audio sooner by", lambda r: f"{r['ttfa_speedup_vs_naive']:.1f}x"),
]
THROUGHPUT: list[Column] = [
    *CONFIG,
    ("streams", lambda r: r["streams"]),
    ("chars each", lambda r: r["text_chars"]),
    ("aggregate RTFX", lambda r: _fmt(r["rtfx"], 1)),
    ("TTFA p50", lambda r: _fmt(r["ttfa_ms"]["p50"])),
    ("p90", lambda r: _fmt(r["ttfa_ms"]["p90"])),
    ("p99", lambda r: _fmt(r["ttfa_ms"]["p99"])),
    ("gap max", lambda r: _fmt(r["gap_ms"]["max"])),
    ("wall ms", lambda r: _fmt(r["total_ms"])),
    ("peak RSS MB", lambda r: _fmt(r["peak_rss_mb"])),
]


def _slowest(compile_s: dict[str, float] | None) -> str:
    if not compile_s:
        return ""
    name = max(compile_s, key=lambda key: compile_s[key])
    return f"{name}: {compile_s[name]:.2f}"


COSTS: list[Column] = [
    *CONFIG,
    ("compile s (total)", lambda r: _fmt(sum(r["compile_s"].values()), 2) if r["compile_s"] else ""),
    ("slowest artifact s", lambda r: _slowest(r["compile_s"])),
    ("load s", lambda r: _fmt(r["load_s"], 2)),
    ("warm-up s", lambda r: _fmt(r["warmup_s"], 2)),
]
PADDING: list[Column] = [
    *CONFIG,
    ("chars", lambda r: r["text_chars"]),
    ("network", lambda r: r["network"]),
    ("real positions", lambda r: r["real"]),
    ("computed", lambda r: r["computed"]),
    ("padding share", lambda r: f"{r['share']:.1%}"),
]
SKIPPED: list[Column] = [*CONFIG, ("reason", lambda r: r["skip_reason"])]
TARGETS: list[Column] = [
    ("target", lambda t: t["target"]),
    ("configuration", lambda t: t["config"]),
    ("measured", lambda t: t["measured"]),
    ("met", lambda t: "yes" if t["met"] else "**no**"),
]


def write_markdown(path: Path, records: list[Record], command: str, seconds: float) -> None:
    measured = [r for r in records if r["status"] == "measured"]
    machine = records[0]["machine"]
    revision = machine["git_revision"][:12] + (" (dirty)" if machine["git_dirty"] else "")
    addons = sorted({f"{r['addon']} (trained: {str(r['addon_trained']).lower()})" for r in records})
    first_of_config: dict[tuple[str, ...], Record] = {}
    for r in measured:
        first_of_config.setdefault((r["addon"], *_key(r)), r)
    padding = [
        {**r, "network": name, **counts}
        for r in latency(records)
        if r["padding"]
        for name, counts in r["padding"].items()
    ]
    lines = [
        "# Benchmark results",
        "",
        f"`{command}` took {seconds:.0f} s on {machine['cpu']} ({machine['cores']} cores, "
        f"{machine['torch_threads']} torch/ORT threads); torch {machine['torch']}, onnxruntime "
        f"{machine['onnxruntime']}; git {revision}; {machine['date']}. Addons: {', '.join(addons)}.",
        "",
        "Times are in ms: medians (p50) and percentiles over repeats. RTF = total / audio, "
        f"RTFX = audio / total. Peak RSS: {machine['peak_rss_method']}.",
        "",
        "## One stream",
        "",
        *_table(LATENCY, latency(records)),
        "",
        "Repeats: complete runs (time-to-first-audio samples; the extra ones stop after the first chunk).",
        "",
        "## Streaming against the naive single call",
        "",
        *_table(VERSUS_NAIVE, [r for r in latency(records) if r["ttfa_speedup_vs_naive"]]),
        "",
        "## Concurrent streams (threads, each its own text)",
        "",
        *_table(THROUGHPUT, [r for r in measured if r["kind"] == "throughput"]),
        "",
        "## Compile, load and warm-up",
        "",
        *_table(COSTS, first_of_config.values()),
    ]
    if padding:
        lines += ["", "## Padding waste of the fixed-shape path", "", *_table(PADDING, padding)]
    skipped = [r for r in records if r["status"] == "skipped"]
    if skipped:
        lines += ["", "## Skipped", "", *_table(SKIPPED, skipped)]
    lines += ["", "## Targets", "", *_table(TARGETS, targets(records))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plots(out: Path, records: list[Record]) -> None:
    """Time to first audio against text length (log-log), RTF by backend and text length, and aggregate
    RTFX against concurrent streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    rows = latency(records)
    series = list(dict.fromkeys((r["addon"], label(r)) for r in rows))
    multi = len({addon for addon, _ in series}) > 1

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for addon, name in series:
        points = sorted(
            (r["text_chars"], r["ttfa_ms"]) for r in rows if (r["addon"], label(r)) == (addon, name)
        )
        xs = [x for x, _ in points]
        ax.plot(xs, [t["p50"] for _, t in points], marker="o", label=f"{addon}: {name}" if multi else name)
        ax.fill_between(xs, [t["p50"] for _, t in points], [t["p90"] for _, t in points], alpha=0.15)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="text length (characters)",
        ylabel="time to first audio, ms (p50-p90)",
    )
    ax.set_title("Time to first audio")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten, on both log axes
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted({r["text_chars"] for r in rows}))
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ttfa_vs_length.png", dpi=120)
    plt.close(fig)

    sizes = sorted({r["text_size"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(series))
    for i, (addon, name) in enumerate(series):
        by_size = {r["text_size"]: r["rtf"] for r in rows if (r["addon"], label(r)) == (addon, name)}
        xs = [j + i * width for j, size in enumerate(sizes) if size in by_size]
        ax.bar(
            xs,
            [by_size[s] for s in sizes if s in by_size],
            width,
            label=f"{addon}: {name}" if multi else name,
        )
    ax.set_xticks(
        [j + width * (len(series) - 1) / 2 for j in range(len(sizes))], [f"{s} chars" for s in sizes]
    )
    ax.set(ylabel="real-time factor (total / audio; lower is faster)", title="RTF by backend, one stream")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rtf_by_backend.png", dpi=120)
    plt.close(fig)

    throughput = [r for r in records if r["status"] == "measured" and r["kind"] == "throughput"]
    if throughput:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for addon, name in dict.fromkeys((r["addon"], label(r)) for r in throughput):
            points = sorted(
                (r["streams"], r["rtfx"]) for r in throughput if (r["addon"], label(r)) == (addon, name)
            )
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=f"{addon}: {name}" if multi else name,
            )
        ax.set(xscale="log", xlabel="concurrent streams", ylabel="aggregate RTFX (audio s per wall s)")
        ax.set_xticks(
            [p for p in sorted({r["streams"] for r in throughput})],
            [str(p) for p in sorted({r["streams"] for r in throughput})],
        )
        ax.set_title("Throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=120)
        plt.close(fig)
