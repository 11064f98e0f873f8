"""Timing and memory primitives of the benchmark: one stream timed chunk by chunk, time to first audio
alone, concurrent streams on threads, percentiles, and the peak resident memory of one measurement; and
what the benchmarks share besides: the host's CPU model and the hard sentences."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import platform
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Stream = Callable[[str], Iterator[np.ndarray]]
"""Text in, float32 audio chunks out, each as soon as it is ready (`Voice.stream` and our peers)."""


HARD_SENTENCES = Path(__file__).resolve().parent / "hard_sentences.txt"


def read_hard_sentences(path: Path = HARD_SENTENCES) -> list[tuple[str, str]]:
    """(category, sentence) for every sentence line; '## name' lines start a category."""
    category, sentences = "uncategorised", []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("## "):
            category = line[3:].strip()
        elif line and not line.startswith("#"):
            sentences.append((category, line))
    return sentences


def cpu_model() -> str:
    """The CPU's model name where Linux says it (figures depend on it more than on anything else)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating linearly between the closest ranks (numpy's default), so that
    a handful of repeats still gives a defined p99 (it lies between the two largest values)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lo = math.floor(position)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


@dataclass(frozen=True)
class Run:
    """One stream, timed on the wall clock: when it started, when each chunk arrived, when it ended."""

    start: float
    arrivals: list[float]
    end: float
    samples: int

    @property
    def ttfa_s(self) -> float:
        return self.arrivals[0] - self.start

    @property
    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def total_s(self) -> float:
        return self.end - self.start


def run_stream(stream: Stream, text: str) -> Run:
    """Pull every chunk of one text as fast as they come; the clock starts before the text is handed over,
    so time to first audio includes sentence splitting and phonemisation."""
    start = time.perf_counter()
    arrivals: list[float] = []
    samples = 0
    for chunk in stream(text):
        arrivals.append(time.perf_counter())
        samples += len(chunk)
    end = time.perf_counter()
    if not arrivals:
        raise RuntimeError(f"the stream gave no audio for a text of {len(text)} characters")
    return Run(start, arrivals, end, samples)


def first_audio_s(stream: Stream, text: str) -> float:
    """Time to the first chunk alone, then the stream is closed: streams are pull-based, so the rest of a
    long text is never computed. This makes many time-to-first-audio samples of a long text affordable."""
    start = time.perf_counter()
    chunks = stream(text)
    next(chunks)
    elapsed = time.perf_counter() - start
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return elapsed


def run_concurrent(stream: Stream, texts: Sequence[str]) -> list[Run]:
    """One thread per text, released together, each streaming its own text to the end."""
    barrier = threading.Barrier(len(texts))
    runs: list[Run | None] = [None] * len(texts)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            runs[i] = run_stream(stream, texts[i])
        except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,), name=f"stream-{i}") for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [run for run in runs if run is not None]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summarise(
    walls_s: Sequence[float],
    audio_s: float,
    ttfa_s: Sequence[float],
    gaps_s: Sequence[float],
    chunks: int,
) -> dict[str, Any]:
    """The figures of one record: medians and spreads over repeats, in milliseconds where they are times.

    `walls_s` holds one wall time per complete repeat (all streams of it, for concurrent runs) and
    `audio_s` the seconds of audio one repeat produces.
    """
    total = statistics.median(walls_s)
    return {
        "ttfa_ms": {f"p{q}": _ms(percentile(ttfa_s, q)) for q in (50, 90, 99)},
        "gap_ms": {
            "p50": _ms(percentile(gaps_s, 50)) if gaps_s else None,
            "p90": _ms(percentile(gaps_s, 90)) if gaps_s else None,
            "max": _ms(max(gaps_s)) if gaps_s else None,
        },
        "total_ms": _ms(total),
        "total_ms_range": [_ms(min(walls_s)), _ms(max(walls_s))],
        "audio_s": round(audio_s, 3),
        "rtf": round(total / audio_s, 6),
        "rtfx": round(audio_s / total, 2),
        "chunks": chunks,
        "repeats": len(walls_s),
        "ttfa_samples": len(ttfa_s),
    }


def _malloc_trim() -> None:
    """Return glibc's free heap to the system (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRss:
    """Resident-set high-water mark of this process over one measurement.

    On Linux the kernel's own mark (VmHWM) is reset before each measurement by writing 5 to
    /proc/self/clear_refs, so every record gets its own peak, sampled by the kernel at page granularity,
    not by a polling thread that could miss a short spike. Elsewhere it falls back to getrusage's
    ru_maxrss, which cannot be reset and so is the peak of the whole run up to that record.
    """

    STATUS = Path("/proc/self/status")
    CLEAR_REFS = Path("/proc/self/clear_refs")

    def __init__(self) -> None:
        self.resettable = self._try_reset()
        self.method = (
            "VmHWM from /proc/self/status, reset per record via /proc/self/clear_refs"
            if self.resettable
            else "getrusage ru_maxrss (not resettable: the peak of the run so far)"
        )

    def _try_reset(self) -> bool:
        try:
            self.CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return self._status_kb("VmHWM") is not None

    def _status_kb(self, key: str) -> int | None:
        try:
            match = re.search(rf"^{key}:\s+(\d+) kB", self.STATUS.read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def reset(self) -> float:
        """Start a measurement; returns the resident memory now, in MB. Memory freed by the measurement
        before is handed back to the system first, so that it does not count as this one's peak."""
        gc.collect()
        _malloc_trim()
        if self.resettable:
            self.CLEAR_REFS.write_text("5")
        return round((self._status_kb("VmRSS") or 0) / 1024, 1)

    def peak_mb(self) -> float:
        if self.resettable:
            return round((self._status_kb("VmHWM") or 0) / 1024, 1)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS
