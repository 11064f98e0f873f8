"""One stream's time to first audio over HTTP against the Python API's, interleaved in one run.

    python benchmarks/first_audio_http.py [--rounds 2] [--format pcm] [--out DIR]

For each text and voice, one request to `tts-neuron serve` on 127.0.0.1 (time to the first body byte, the
body read to its end) and then the same text through `tts_neuron.load(...).stream` in this process (time
to the first chunk), one after the other, so both see the same host at the same moment: on a shared
machine, figures from two separate runs differ by more than what HTTP adds. Texts are the first sentence
and the first three sentences of benchmarks/run.py's paragraph, starting at each of its sentences. Writes
results.json and results.md to `--out` (default benchmarks/results/first_audio_http).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from run import PARAGRAPH
from serve_load import ADDONS, REPO, Server, machine

import tts_neuron

PAUSE_S = 0.3
"""Between two requests, so that each starts on an idle engine as a lone stream does."""


async def measure(rounds: int, fmt: str) -> dict[str, dict[str, list[float]]]:
    voices = {voice.addon.name: voice for voice in (tts_neuron.load(addon) for addon in ADDONS)}
    texts = {
        "one sentence": list(PARAGRAPH),
        "three sentences": [" ".join(PARAGRAPH[i : i + 3]) for i in range(len(PARAGRAPH) - 2)],
    }
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as logs, Server(ADDONS, Path(logs) / "server.log") as server:
        await server.wait_ready(300)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as client:
            for name, voice in voices.items():
                for kind, kind_texts in texts.items():
                    row = times.setdefault(f"{name}, {kind}", {"http": [], "python": []})
                    for index, text in enumerate(["Warm up.", *kind_texts * rounds]):
                        request = {"model": name, "voice": name, "input": text, "response_format": fmt}
                        started, first = time.perf_counter(), None
                        async with client.stream("POST", "/v1/audio/speech", json=request) as answer:
                            answer.raise_for_status()
                            async for _ in answer.aiter_raw():
                                first = first or time.perf_counter() - started
                        await asyncio.sleep(PAUSE_S)
                        started = time.perf_counter()
                        next(iter(voice.stream(text)))
                        direct = time.perf_counter() - started
                        if index and first is not None:  # the first text warms both paths up
                            row["http"].append(first)
                            row["python"].append(direct)
                        await asyncio.sleep(PAUSE_S)
    return times


def p50_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each text is spoken")
    parser.add_argument("--format", default="pcm", help="response_format (pcm: OpenAI's 24 kHz)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "first_audio_http")
    args = parser.parse_args()
    times = asyncio.run(measure(args.rounds, args.format))
    rows: list[dict[str, Any]] = [
        {
            "texts": key,
            "requests": len(row["http"]),
            "http_p50_ms": p50_ms(row["http"]),
            "python_p50_ms": p50_ms(row["python"]),
            "added_p50_ms": p50_ms([h - p for h, p in zip(row["http"], row["python"], strict=True)]),
        }
        for key, row in times.items()
    ]
    result = {
        "command": "python benchmarks/first_audio_http.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "format": args.format,
        "rows": rows,
    }
    host = result["machine"]
    lines = [
        "# One stream's first audio: HTTP against the Python API, interleaved",
        "",
        f"`{result['command']}` on {host['cpu']} ({host['cores']} cores, load average "
        f"{host['load_average_at_start']} at start); response_format {args.format}. Added = the median "
        "of each text's HTTP time less its Python time, taken one after the other.",
        "",
        "| voice, texts | requests | HTTP p50 ms | Python API p50 ms | added p50 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {r['texts']} | {r['requests']} | {r['http_p50_ms']} | {r['python_p50_ms']} | "
            f"{r['added_p50_ms']} |"
            for r in rows
        ),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
