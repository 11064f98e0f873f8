"""Load test of `tts-neuron serve`: real HTTP clients against the real server on 127.0.0.1, each playing
what it receives in real time, against one stream through the Python API in the same run.

    python benchmarks/serve_load.py [--streams 1 16 32 64] [--duration 30] [--out DIR] [--capacity]
    python benchmarks/serve_load.py --soak-minutes 10          # `make soak`: 32 streams, the server only
    python benchmarks/serve_load.py --runners server --formats pcm mp3   # what mp3's encoding costs

The server is started on a free port, and for each concurrency that many clients run in a closed loop
(Riva's perf client method: a client sends its next request only when the previous body has ended), with
texts and voices dealt round-robin. A client's playback starts when its first chunk arrives; a chunk that
arrives after the audio before it has finished playing is an underrun. Each text is three consecutive
sentences of benchmarks/run.py's paragraph (`--texts hard`: benchmarks/hard_sentences.txt, one each).
The `python` runner speaks the same texts one after another through `tts_neuron.load(...).stream` in
this process: the baseline of time to first audio and of throughput. Writes results.json, results.md and
serve_load.png (soak.json, soak.md and soak.png with --soak-minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from bench_measure import cpu_model, percentile, read_hard_sentences
from prometheus_client.parser import text_string_to_metric_families

from tts_neuron.engine import usable_cores
from tts_neuron.server.encoding import BIT_RATES

REPO = Path(__file__).resolve().parent.parent
ADDONS = (REPO / "addons" / "fastspeech-en", REPO / "addons" / "tacotron-en")
VOICES = ("fastspeech-en", "tacotron-en")
STREAMS = (1, 16, 32, 64)
SOAK_STREAMS = 32
SENTENCES_PER_TEXT = 3
TTFA_LIMIT_MS = 500.0
"""Capacity counts streams whose time to first audio p99 is at most this."""
COALESCE_S = 0.005
"""Socket reads this close to the previous one belong to the same server chunk: a chunk larger than one
read (httpcore reads 64 KiB) arrives in several, and their split is no gap between chunks."""


def texts(kind: str) -> list[str]:
    """Ordinary texts: each of the 14 sentences of benchmarks/run.py's paragraph (40 to 93 characters)
    with the two after it; or the hard sentences of benchmarks/robustness.py. Both are imported lazily
    because they pull in torch."""
    if kind == "ordinary":
        from run import PARAGRAPH

        n = len(PARAGRAPH)
        return [" ".join(PARAGRAPH[(i + j) % n] for j in range(SENTENCES_PER_TEXT)) for i in range(n)]
    return [sentence for _, sentence in read_hard_sentences()]


def deal(k: int, sentences: Sequence[str], voices: Sequence[str]) -> tuple[str, str]:
    """The k-th request of a run: each text in turn, said by each voice in turn, so voices mix at every
    concurrency and every text is heard in every voice."""
    return sentences[(k // len(voices)) % len(sentences)], voices[k % len(voices)]


def late_chunks(chunks: Sequence[tuple[float, int]], sample_rate: int) -> list[int]:
    """The indices of the chunks (arrival time, samples) that arrive after the audio before them has
    finished playing: each is an underrun.

    Playback starts at the first arrival; a chunk exactly at the deadline plays on seamlessly. After an
    underrun the player resumes when the late chunk arrives, as a real one does, so one stall is counted
    once and not again for every chunk after it.
    """
    late, deadline = [], None
    for index, (arrival, samples) in enumerate(chunks):
        if deadline is not None and arrival > deadline:
            late.append(index)
        start = arrival if deadline is None or arrival > deadline else deadline
        deadline = start + samples / sample_rate
    return late


@dataclass
class Request:
    """One request as its client saw it: when it was sent, and when each chunk of how many samples came."""

    voice: str
    sent: float
    status: int | None = None
    error: str | None = None
    sample_rate: int = 0
    chunks: list[tuple[float, int]] = field(default_factory=list)
    ended: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunks)

    @property
    def ttfa_s(self) -> float:
        return self.chunks[0][0] - self.sent

    @property
    def gaps_s(self) -> list[float]:
        return [b[0] - a[0] for a, b in zip(self.chunks, self.chunks[1:], strict=False)]

    @property
    def audio_s(self) -> float:
        return sum(n for _, n in self.chunks) / self.sample_rate if self.sample_rate else 0.0

    @property
    def late_chunks(self) -> list[int]:
        return late_chunks(self.chunks, self.sample_rate) if self.sample_rate else []

    @property
    def underruns(self) -> int:
        return len(self.late_chunks)


FORMATS = ("pcm", "wav", "mp3")
"""What the clients may ask for: formats whose bytes tell how much audio came without decoding them
(16-bit samples; mp3 at its constant bit rate, so a client plays what it got for bytes * 8 / rate s)."""


def samples_in(response_format: str, received: int, sample_rate: int) -> int:
    """Samples of audio in the first `received` bytes of a body (a WAV's 44-byte header holds none)."""
    if response_format == "mp3":
        return int(received * 8 / BIT_RATES["mp3"] * sample_rate)
    return max(received - (44 if response_format == "wav" else 0), 0) // 2


async def speak(
    client: httpx.AsyncClient,
    text: str,
    voice: str,
    timeout_s: float,
    sample_rate: int | None = None,
    response_format: str = "pcm",
) -> Request:
    """Send one speech request and read its body to the end, stamping each chunk as it arrives.
    `sample_rate`: ask for this rate (default: the server's, OpenAI's 24 kHz for pcm)."""
    body: dict[str, Any] = {
        "model": "tts-1",
        "input": text,
        "voice": voice,
        "response_format": response_format,
        "stream_format": "audio",
    }
    if sample_rate:
        body["sample_rate"] = sample_rate
    request = Request(voice, time.perf_counter())
    received = 0

    async def read() -> None:
        nonlocal received
        async with client.stream("POST", "/v1/audio/speech", json=body) as response:
            request.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                request.error = str(response.status_code)
                return
            request.sample_rate = int(response.headers["x-sample-rate"])
            rate = request.sample_rate
            async for piece in response.aiter_raw():
                now = time.perf_counter()
                before, received = samples_in(response_format, received, rate), received + len(piece)
                samples = samples_in(response_format, received, rate) - before
                if request.chunks and now - request.chunks[-1][0] <= COALESCE_S:
                    last_time, last_samples = request.chunks[-1]
                    request.chunks[-1] = (last_time, last_samples + samples)
                else:
                    request.chunks.append((now, samples))
            if not request.chunks:
                request.error = "empty body"

    try:
        await asyncio.wait_for(read(), timeout_s)
    except (httpx.HTTPError, asyncio.TimeoutError) as err:
        request.error = type(err).__name__
    request.ended = time.perf_counter()
    return request


async def closed_loop(
    base_url: str,
    streams: int,
    sentences: Sequence[str],
    voices: Sequence[str],
    duration_s: float,
    requests_each: int | None,
    timeout_s: float,
    sample_rate: int | None = None,
    ramp_s: float = 0.0,
    response_format: str = "pcm",
) -> tuple[list[Request], float]:
    """`streams` clients, each sending its next request when the previous one has ended, until
    `duration_s` has passed (or each has sent `requests_each`); returns the requests and the wall time
    from the first send to the last end. With `ramp_s`, client i sends its first request i / streams of
    `ramp_s` after the first, as arrivals spread over time rather than all in the same millisecond."""
    done: list[Request] = []
    counter = iter(range(1 << 62))
    start = time.perf_counter()

    async def client_loop(client: httpx.AsyncClient, index: int) -> None:
        await asyncio.sleep(ramp_s * index / streams)
        sent = 0
        while (requests_each is None and time.perf_counter() - start < duration_s) or (
            requests_each is not None and sent < requests_each
        ):
            text, voice = deal(next(counter), sentences, voices)
            done.append(await speak(client, text, voice, timeout_s, sample_rate, response_format))
            sent += 1

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(streams)))
    return done, time.perf_counter() - start


class Server:
    """`tts-neuron serve` in a subprocess on 127.0.0.1 at a free port; always stopped on exit."""

    def __init__(
        self,
        addons: Sequence[Path],
        log: Path,
        stack: str | None = None,
        ray_replicas: int = 0,
        options: Sequence[str] = (),
    ) -> None:
        """`options`: more `tts-neuron serve` options (`--budget 2`, `--threads 1`)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "tts_neuron.cli", "serve", "--host", "127.0.0.1"]
        self.command += ["--port", str(self.port), *options]
        for addon in addons:
            self.command += ["--addon", str(addon)]
        if stack:  # a compiled stack runs on the CPU target here (the same fixed shapes as on inf2)
            self.command += ["--stack", stack, "--target", "cpu"]
        if ray_replicas:  # the same API through Ray Serve: an ingress and this many engine replicas
            self.command += ["--ray", "--replicas", str(ray_replicas)]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    async def wait_ready(self, timeout_s: float) -> None:
        """Poll /ready until the voices are loaded and warmed; raise with the server's log if it dies,
        fails to load, or takes longer than `timeout_s`."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                self.check()
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get("/ready")
                    if answer.status_code == 200:
                        return
                    if answer.json().get("status", "").startswith("failed"):
                        raise RuntimeError(f"the server could not load its voices: {answer.text}")
                await asyncio.sleep(0.5)
        raise RuntimeError(f"the server was not ready within {timeout_s:g} s:\n{self.log_tail()}")

    def check(self) -> None:
        """Raise with the server's log if its process has ended."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def pids(self) -> list[int]:
        """The server process and all its descendants (`--processes`' servers, Ray's processes)."""
        assert self.process is not None
        parents = {}  # pid -> parent pid, of every process (a process may end while this reads)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
        return found

    def cpu_s(self) -> float:
        """CPU seconds the server's processes have used (user and system, all their threads)."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a process may end between listing and reading
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float | None:
        """The resident memory of the server's processes, summed; None once it has ended."""
        total_kb = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                match = re.search(
                    r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE
                )
                total_kb += int(match.group(1)) if match else 0
        return round(total_kb / 1024, 1) if total_kb else None


def _sample_now(server: Server, into: list[tuple[float, float]]) -> None:
    """One RSS sample; also taken at a level's start and end, so that even a short level has both."""
    rss = server.rss_mb()
    if rss is not None:
        into.append((time.perf_counter(), rss))


async def sample_rss(server: Server, interval_s: float, into: list[tuple[float, float]]) -> None:
    """Append (time, RSS in MB) of the server process every `interval_s` until cancelled."""
    while True:
        _sample_now(server, into)
        await asyncio.sleep(interval_s)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics as {(sample name, labels): value}."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0, trust_env=False) as client:
        text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def batch_histogram(before: dict[Any, float], after: dict[Any, float]) -> dict[str, Any]:
    """Per network, what the engine did between two scrapes: calls, mean real rows per call,
    mean share of dummy rows, and the cumulative count of calls with at most `le` real rows."""
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    networks: dict[str, Any] = {}
    for (name, labels), value in delta.items():
        label = dict(labels)
        if name == "tts_neuron_batch_size_count" and value > 0:
            network = label["network"]
            rows = delta[("tts_neuron_batch_size_sum", (("network", network),))]
            padding = delta.get(("tts_neuron_batch_padding_ratio_sum", (("network", network),)), 0.0)
            buckets = {
                dict(lb)["le"]: int(v)
                for (n, lb), v in delta.items()
                if n == "tts_neuron_batch_size_bucket" and dict(lb)["network"] == network
            }
            networks[network] = {
                "calls": int(value),
                "mean_rows": round(rows / value, 3),
                "mean_padding_share": round(padding / value, 3),
                "calls_with_rows_le": buckets,
            }
    return dict(sorted(networks.items()))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _p(values: Sequence[float], q: float) -> float | None:
    return _ms(percentile(values, q)) if values else None


def summarise(
    runner: str,
    streams: int,
    requests: Sequence[Request],
    wall_s: float,
    rss: Sequence[tuple[float, float]],
    start: float,
    metrics_before: dict[Any, float],
    metrics_after: dict[Any, float],
) -> dict[str, Any]:
    """One concurrency's record. Percentiles interpolate between ranks (bench_measure.percentile), so a
    few requests still give a p99; an underrun share is of requests (played streams) with any underrun."""
    ok = [r for r in requests if r.ok]
    errors: dict[str, int] = {}
    for r in requests:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    ttfa = [r.ttfa_s for r in ok]
    gaps = [g for r in ok for g in r.gaps_s]
    audio_s = sum(r.audio_s for r in requests)
    with_underrun = sum(1 for r in ok if r.underruns)
    server_underruns = metrics_after.get(("tts_neuron_underruns_total", ()), 0.0) - metrics_before.get(
        ("tts_neuron_underruns_total", ()), 0.0
    )
    record = {
        "runner": runner,
        "streams": streams,
        "wall_s": round(wall_s, 2),
        "requests": len(requests),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "ttfa_ms": {"p50": _p(ttfa, 50), "p99": _p(ttfa, 99)},
        "gap_ms": {"p50": _p(gaps, 50), "p99": _p(gaps, 99)},
        "underruns": sum(r.underruns for r in ok),
        "streams_with_underrun": with_underrun,
        "underrun_streams_by_voice": {  # which voice's streams fall behind first
            voice: sum(1 for r in ok if r.voice == voice and r.underruns)
            for voice in sorted({r.voice for r in ok})
        },
        "underruns_by_chunk": _by_chunk(r.late_chunks for r in ok),  # in a stream's start, or later
        "underrun_share": round(with_underrun / len(ok), 4) if ok else None,
        "server_underruns": int(server_underruns),
        "audio_s": round(audio_s, 2),
        "rtfx": round(audio_s / wall_s, 2) if wall_s > 0 else None,
        "voices": sorted({r.voice for r in requests}),
        "rss_mb": [[round(t - start, 1), mb] for t, mb in rss],
        "error_times_s": [[round(r.ended - start, 1), r.error] for r in requests if r.error is not None],
        "batch": batch_histogram(metrics_before, metrics_after),
        "admission": {  # what the server admits by: its budget and each voice's cost measured at start
            (dict(labels).get("voice") or "budget"): round(value, 4)
            for (name, labels), value in metrics_after.items()
            if name in ("tts_neuron_budget", "tts_neuron_voice_cost")
        },
    }
    record["meets"] = meets(record)
    return record


def meets(record: dict[str, Any]) -> bool:
    """Real-time at this concurrency: every request answered, no underrun, first audio p99 <= 500 ms."""
    p99 = record["ttfa_ms"]["p99"]
    return (
        record["ok"] > 0
        and not record["errors"]
        and record["underruns"] == 0
        and p99 is not None
        and p99 <= TTFA_LIMIT_MS
    )


def capacity(records: Sequence[dict[str, Any]]) -> int:
    """The most streams that meet the criteria at that concurrency and at every smaller one tested (one
    noisy pass above a failure does not count); 0 if even the smallest fails."""
    best = 0
    for record in sorted(records, key=lambda r: r["streams"]):
        if not record["meets"]:
            break
        best = record["streams"]
    return best


def next_probe(records: Sequence[dict[str, Any]]) -> int | None:
    """For --capacity: the concurrency halfway between the capacity and the smallest failing one tested
    above it, or None when they are adjacent (or nothing failed)."""
    lo = capacity(records)
    failing = [r["streams"] for r in records if r["streams"] > lo and not r["meets"]]
    if not failing:
        return None
    hi = min(failing)
    return (lo + hi) // 2 if hi - lo > 1 and lo > 0 else None


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was when the run began."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def run_server(args: argparse.Namespace, log: Path) -> list[dict[str, Any]]:
    """Every concurrency against one server, with one RSS sampler over the whole server's life."""
    sentences = texts(args.texts)
    records: list[dict[str, Any]] = []
    rss: list[tuple[float, float]] = []
    options = ["--max-queue", str(max(args.streams)), *args.server_options]
    with Server(args.addons, log, args.stack, args.ray_replicas, options) as server:
        sampler = asyncio.create_task(sample_rss(server, args.rss_interval, rss))
        try:
            await server.wait_ready(args.ready_timeout)
            queue = [(streams, fmt) for streams in args.streams for fmt in args.formats]
            while queue:
                streams, fmt = queue.pop(0)
                runner = "server" if fmt == "pcm" else f"server {fmt}"
                before, cpu_before = await scrape(server.url), server.cpu_s()
                client_before = time.process_time()  # the clients share the host's cores with the server
                start, first_sample = time.perf_counter(), len(rss)
                _sample_now(server, rss)
                print(f"{runner}: {streams} streams ...", file=sys.stderr, flush=True)
                gc.collect()  # this process's own full collections (~100 ms with torch loaded) would stall
                gc.freeze()  # its clients and read as the server's underruns
                requests, wall = await closed_loop(
                    server.url,
                    streams,
                    sentences,
                    args.voices,
                    args.duration,
                    args.requests,
                    args.timeout,
                    args.sample_rate,
                    args.ramp,
                    fmt,
                )
                _sample_now(server, rss)
                server.check()
                client = time.process_time() - client_before
                after, cpu = await scrape(server.url), server.cpu_s() - cpu_before
                record = summarise(runner, streams, requests, wall, rss[first_sample:], start, before, after)
                record["server_cpu_s"], record["client_cpu_s"] = round(cpu, 2), round(client, 2)
                record["cpu_ms_per_audio_s"] = (
                    round(1000 * cpu / record["audio_s"], 2) if record["audio_s"] else None
                )
                records.append(record)
                print(_line(record), file=sys.stderr, flush=True)
                mine = [r for r in records if r["runner"] == runner]
                if not queue and args.capacity and (probe := next_probe(mine)) is not None:
                    queue.append((probe, fmt))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    return records


def _line(r: dict[str, Any]) -> str:
    return (
        f"  {r['runner']} x{r['streams']}: {r['requests']} requests, TTFA p50/p99 {r['ttfa_ms']['p50']}/"
        f"{r['ttfa_ms']['p99']} ms, RTFX {r['rtfx']}, underrun streams {r['streams_with_underrun']}, "
        f"errors {r['errors'] or 0}"
    )


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def load_markdown(result: dict[str, Any]) -> str:
    """The server at each concurrency beside the Python API's one stream, with the ratio of their RTFX."""
    by = {(r["runner"], r["streams"]): r for r in result["records"]}
    streams = sorted({r["streams"] for r in result["records"]})
    runners = [r["runner"] for r in result["records"] if r["runner"] != "python"]
    runners = [
        *dict.fromkeys(runners),
        *(["python"] if any(r["runner"] == "python" for r in result["records"]) else []),
    ]
    head = ["streams"]
    for name in runners:
        head += [
            f"{name} {c}" for c in ("TTFA p50/p99 ms", "gap p50/p99 ms", "underrun streams", "RTFX", "errors")
        ]
    baseline = next((r for r in result["records"] if r["runner"] == "python"), None)
    compare = "server" in runners and baseline is not None and bool(baseline["rtfx"])
    if compare:
        head.append("RTFX server / Python API")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in streams:
        row = [str(n)]
        for name in runners:
            r = by.get((name, n))
            if r is None:
                row += ["-"] * 5
                continue
            row += [
                f"{_cell(r['ttfa_ms']['p50'])} / {_cell(r['ttfa_ms']['p99'])}",
                f"{_cell(r['gap_ms']['p50'])} / {_cell(r['gap_ms']['p99'])}",
                f"{r['streams_with_underrun']} of {r['ok']} ({r['underruns']} underruns)"
                + _by_voice(r.get("underrun_streams_by_voice", {})),
                _cell(r["rtfx"]),
                ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0",
            ]
        if compare:
            served = by.get(("server", n))
            ratio = served["rtfx"] / baseline["rtfx"] if served and served["rtfx"] and baseline else None
            row.append(f"{ratio:.2f}" if ratio is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    cpu_lines = [
        f"- {r['runner']} x{r['streams']}: {r['cpu_ms_per_audio_s']} ms; cores used over the level: server "
        f"{r['server_cpu_s'] / r['wall_s']:.2f}, load client {r['client_cpu_s'] / r['wall_s']:.2f}"
        for r in result["records"]
        if r.get("cpu_ms_per_audio_s") is not None
    ]
    admission: dict[str, float] = next((r["admission"] for r in result["records"] if r.get("admission")), {})
    batch_lines = []
    for r in result["records"]:
        if r["batch"]:
            means = ", ".join(f"{net} {v['mean_rows']}" for net, v in r["batch"].items())
            batch_lines.append(f"- {r['runner']} x{r['streams']}: {means}")
    late_lines = [
        f"- {r['runner']} x{r['streams']}: "
        + ", ".join(f"chunk {k}: {v}" for k, v in r["underruns_by_chunk"].items())
        for r in result["records"]
        if r.get("underruns_by_chunk")
    ]
    m, c = result["machine"], result["config"]
    text = [
        "# Serving load test",
        "",
        f"`{c['command']}` on {m['cpu']} ({m['cores']} cores, load average {m['load_average_at_start']} "
        f"at start), {result['date']}. Server options: {' '.join(c['server_options']) or 'defaults'}.",
        "",
        f"Texts: {c['texts']} ({c['text_count']} texts), voices {', '.join(c['voices'])}, dealt "
        "round-robin; closed loop of "
        + (f"{c['requests_each']} requests per client" if c["requests_each"] else f"{c['duration_s']:g} s")
        + " per concurrency, "
        + (
            f"first requests spread over {c['ramp_s']:g} s"
            if c["ramp_s"]
            else "every client starting at once"
        )
        + ". Client-side times from sending the request; an underrun is a chunk that arrives after the audio "
        "before it has finished playing.",
        "",
        *lines,
        "",
        "Capacity (most streams with no error, no underrun and TTFA p99 <= 500 ms, here and below): "
        + ", ".join(f"{k} {v}" for k, v in result["capacity"].items())
        + ".",
        "",
        "Admission (the server's budget in worker-seconds a second, and each voice's cost alone in "
        "worker-seconds per audio second, measured when it started): "
        + (", ".join(f"{k} {v}" for k, v in admission.items()) or "-")
        + ".",
        "",
        "Server CPU per second of audio sent (user and system time of the server's processes; what a "
        "format's encoding adds to synthesis):",
        "",
        *(cpu_lines or ["- none recorded"]),
        "",
        "Mean real rows per network call (the server's tts_neuron_batch_size):",
        "",
        *(batch_lines or ["- none recorded"]),
        "",
        "Underruns by the late chunk's index (1 to 3: a stream's first windows, made while its first "
        "chunk plays):",
        "",
        *(late_lines or ["- none"]),
        "",
    ]
    return "\n".join(text)


def _by_chunk(late: Iterable[list[int]]) -> dict[str, int]:
    """Underruns by the index of the late chunk: 1 to 3 are a stream's first windows (the first chunk
    plays while they are made), "4+" the rest."""
    counts = Counter(str(i) if i < 4 else "4+" for indices in late for i in indices)
    return {key: counts[key] for key in ("1", "2", "3", "4+") if counts[key]}


def _by_voice(counts: dict[str, int]) -> str:
    """The cell's tail ": voice n, voice m" where any stream underran, else nothing."""
    return ": " + ", ".join(f"{v} {n}" for v, n in counts.items()) if any(counts.values()) else ""


def soak_summary(record: dict[str, Any], baseline_s: float) -> dict[str, Any]:
    """Memory growth = (RSS at the end - RSS at `baseline_s`) / RSS at `baseline_s`: the first minute
    holds allocator and cache warm-up, which is not a leak."""
    rss = record["rss_mb"]
    base = next((mb for t, mb in rss if t >= baseline_s), None)
    end = rss[-1][1] if rss else None
    growth = (end - base) / base if base and end is not None else None
    return {
        "rss_baseline_mb": base,
        "rss_end_mb": end,
        "rss_max_mb": max((mb for _, mb in rss), default=None),
        "memory_growth": round(growth, 4) if growth is not None else None,
        "baseline_s": baseline_s,
    }


def soak_markdown(result: dict[str, Any]) -> str:
    """The soak's one row, then the server's RSS at each whole minute and when any error happened."""
    r, s, m = result["records"][0], result["soak"], result["machine"]
    growth = f"{s['memory_growth']:.2%}" if s["memory_growth"] is not None else "-"
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
    row = [
        r["streams"],
        f"{result['config']['duration_s'] / 60:g}",
        r["requests"],
        errors,
        f"{_cell(r['ttfa_ms']['p50'])} / {_cell(r['ttfa_ms']['p99'])}",
        f"{r['streams_with_underrun']} of {r['ok']}",
        _cell(r["rtfx"]),
        _cell(s["rss_baseline_mb"]),
        _cell(s["rss_end_mb"]),
        _cell(s["rss_max_mb"]),
        growth,
    ]
    minutes: dict[int, float] = {}
    for t, mb in r["rss_mb"]:
        minutes.setdefault(int(t // 60), mb)
    return "\n".join(
        [
            "# Serving soak",
            "",
            f"`{result['config']['command']}` on {m['cpu']} ({m['cores']} cores, load average "
            f"{m['load_average_at_start']} at start), {result['date']}. Memory growth = (RSS at the end - "
            f"RSS at {s['baseline_s']:g} s) / RSS at {s['baseline_s']:g} s, of the server process.",
            "",
            "| streams | minutes | requests | errors | TTFA p50/p99 ms | underrun streams | RTFX "
            f"| RSS at {s['baseline_s']:g} s MB | RSS at end MB | RSS max MB | memory growth |",
            "|" + "---|" * len(row),
            "| " + " | ".join(str(cell) for cell in row) + " |",
            "",
            "RSS (MB) at each minute: " + ", ".join(f"{k}: {v}" for k, v in sorted(minutes.items())) + ".",
            "",
            "Errors (seconds into the soak, what): "
            + (", ".join(f"{t}: {e}" for t, e in r["error_times_s"]) or "none")
            + ".",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    """RTFX, TTFA p99 and underrun share against streams, and the server's RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    runners = list(dict.fromkeys(r["runner"] for r in result["records"]))
    for runner in runners:
        rs = sorted((r for r in result["records"] if r["runner"] == runner), key=lambda r: r["streams"])
        x = [r["streams"] for r in rs]
        axes[0][0].plot(x, [r["rtfx"] for r in rs], "o-", label=runner)
        axes[0][1].plot(x, [r["ttfa_ms"]["p99"] for r in rs], "o-", label=runner)
        axes[1][0].plot(x, [r["underrun_share"] for r in rs], "o-", label=runner)
        times: list[float] = []
        offset = 0.0
        for r in rs:
            times += [offset + t for t, _ in r["rss_mb"]]
            offset = times[-1] if times else offset
        axes[1][1].plot(times, [mb for r in rs for _, mb in r["rss_mb"]], label=runner)
    axes[0][1].axhline(TTFA_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    titles = ("aggregate RTFX", "time to first audio p99 (ms)", "share of streams with an underrun")
    tested = sorted({r["streams"] for r in result["records"]})
    for ax, title in zip((axes[0][0], axes[0][1], axes[1][0]), titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(tested, [str(n) for n in tested])
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.legend()
    axes[1][1].set_title("server RSS (MB), concurrencies in turn")
    axes[1][1].set_xlabel("seconds of load")
    axes[1][1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_soak(result: dict[str, Any], path: Path) -> None:
    """The server's RSS over the soak, with the baseline that memory growth is measured from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rss, baseline = result["records"][0]["rss_mb"], result["soak"]["baseline_s"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([t / 60 for t, _ in rss], [mb for _, mb in rss])
    ax.axvline(baseline / 60, color="grey", linestyle="--", linewidth=1, label="baseline")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"soak: {result['records'][0]['streams']} streams")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", help="concurrencies (default 1 4 16 64; soak 16)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of closed loop per concurrency")
    parser.add_argument("--requests", type=int, help="requests per client instead of --duration")
    parser.add_argument(
        "--runners",
        nargs="+",
        choices=("server", "python"),
        default=["python", "server"],
        help="what to load (python: one stream through the Python API, the baseline of TTFA and RTFX)",
    )
    parser.add_argument(
        "--server-options",
        nargs=argparse.REMAINDER,
        default=[],
        help="the rest of the command line goes to `tts-neuron serve` (e.g. --budget 2 --threads 1)",
    )
    parser.add_argument(
        "--addons", type=Path, nargs="+", default=list(ADDONS), help="addons the server loads"
    )
    parser.add_argument(
        "--ray-replicas", type=int, default=0, help="serve through Ray Serve with this many engine replicas"
    )
    parser.add_argument(
        "--stack", help="the stack every addon runs (neuron: compiled, on the CPU target; compile it first)"
    )
    parser.add_argument("--voices", nargs="+", default=list(VOICES), help="voices dealt round-robin")
    parser.add_argument("--texts", choices=("ordinary", "hard"), default="ordinary", help="sentence set")
    parser.add_argument("--capacity", action="store_true", help="bisect between tested concurrencies")
    parser.add_argument(
        "--sample-rate", type=int, help="rate to ask for (default: the server's, OpenAI's 24 kHz for pcm)"
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=["pcm"],
        help="response formats, each at every concurrency against the same server (runner 'server <fmt>')",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="seconds over which the clients send their first requests (default 0: all at once)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take in all")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /ready")
    parser.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument(
        "--soak-minutes", type=float, help="soak mode: the server only, 32 streams, this long"
    )
    parser.add_argument(
        "--soak-baseline", type=float, default=60.0, help="seconds into the soak of the RSS baseline"
    )
    parser.add_argument("--out", type=Path, help="default benchmarks/results/serve_load (soak: .../soak)")
    args = parser.parse_args(argv)
    soak = args.soak_minutes is not None
    if soak:
        args.runners, args.duration, args.requests = ["server"], args.soak_minutes * 60, None
    args.streams = args.streams or ([SOAK_STREAMS] if soak else list(STREAMS))
    args.out = args.out or REPO / "benchmarks" / "results" / ("soak" if soak else "serve_load")
    if min(args.streams) < 1 or args.duration <= 0 or (args.requests is not None and args.requests < 1):
        parser.error("--streams, --duration and --requests must be positive")
    return args


def python_api(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline of the HTTP figures: one stream through `tts_neuron.load(...).stream` in this process,
    the same requests in the same order, for the same time (its TTFA is what HTTP adds to)."""
    import tts_neuron

    voices = {
        voice.addon.name: voice
        for voice in (tts_neuron.load(a, args.stack, "cpu" if args.stack else None) for a in args.addons)
    }
    for voice in voices.values():
        voice.synthesize("Warm up.")
    sentences, requests = texts(args.texts), []
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < args.duration if args.requests is None else k < args.requests:
        text, name = deal(k, sentences, args.voices)
        request = Request(name, time.monotonic(), status=200, sample_rate=voices[name].sample_rate)
        for chunk in voices[name].stream(text):
            request.chunks.append((time.monotonic(), len(chunk)))
        request.ended = time.monotonic()
        requests.append(request)
        k += 1
    return summarise("python", 1, requests, time.monotonic() - start, [], start, {}, {})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    soak = args.soak_minutes is not None
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "streams": args.streams,
            "duration_s": args.duration,
            "requests_each": args.requests,
            "texts": args.texts,
            "text_count": len(texts(args.texts)),
            "voices": args.voices,
            "addons": [os.path.relpath(a, REPO) for a in args.addons],
            "stack": args.stack or "default",
            "ray_replicas": args.ray_replicas,
            "request_timeout_s": args.timeout,
            "server_options": args.server_options,
            "sample_rate": args.sample_rate,
            "ramp_s": args.ramp,
        },
        "records": [],
    }
    with tempfile.TemporaryDirectory() as logs:
        for runner in args.runners:
            if runner == "python":
                result["records"].append(python_api(args))
                continue
            result["records"] += asyncio.run(run_server(args, Path(logs) / "server.log"))
    result["capacity"] = {
        runner: capacity([r for r in result["records"] if r["runner"] == runner])
        for runner in dict.fromkeys(r["runner"] for r in result["records"])
    }
    name = "soak" if soak else "results"
    if soak:
        result["soak"] = soak_summary(result["records"][0], args.soak_baseline)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(soak_markdown(result) if soak else load_markdown(result))
    if soak:
        plot_soak(result, args.out / "soak.png")
    else:
        plot(result, args.out / "serve_load.png")
    print(f"wrote {args.out / name}.json, .md and .png", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
