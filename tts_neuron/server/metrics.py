"""The server's Prometheus metrics: one registry per server, names prefixed `tts_neuron_`, base units.

Under `serve --processes N` every process writes its metrics to files in `PROMETHEUS_MULTIPROC_DIR`
(prometheus_client's multiprocess mode, chosen by that variable when the process starts), and `/metrics`,
whichever process answers, sums them: counters and histograms over every process that has run, gauges
over the live ones."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SHARE_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.first_audio = Histogram(
            "tts_neuron_time_to_first_audio_seconds",
            "From admission to the first audio chunk",
            ["voice"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chunk_gap = Histogram(
            "tts_neuron_inter_chunk_seconds",
            "Between audio chunks of a stream",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "tts_neuron_queue_time_seconds", "Waiting for a stream slot", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "tts_neuron_batch_size",
            "Real rows per network call",
            ["network"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_padding = Histogram(
            "tts_neuron_batch_padding_ratio",
            "Share of a call's rows that are dummy rows",
            ["network"],
            buckets=SHARE_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "tts_neuron_streams_running", "Streams being synthesised", registry=r, multiprocess_mode="livesum"
        )
        self.waiting = Gauge(
            "tts_neuron_streams_waiting",
            "Requests waiting for a stream slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.budget = Gauge(
            "tts_neuron_budget",
            "Worker seconds per second the admitted streams may need",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.voice_cost = Gauge(
            "tts_neuron_voice_cost",
            "Worker seconds per second of audio of a voice alone, measured at warm-up",
            ["voice"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.budget_used = Gauge(
            "tts_neuron_budget_used",
            "Worker seconds per second the running streams need, each at its voice's cost alone",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audio_seconds = Counter(
            "tts_neuron_audio_seconds", "Audio sent; its rate is the RTFX", ["voice"], registry=r
        )
        self.underruns = Counter(
            "tts_neuron_underruns",
            "Chunks ready after the audio before them would have finished playing",
            registry=r,
        )
        self.requests = Counter(
            "tts_neuron_requests", "Speech requests by HTTP status", ["status"], registry=r
        )
        self.rejected = Counter("tts_neuron_rejected", "Requests refused", ["reason"], registry=r)
        self.cancelled = Counter(
            "tts_neuron_cancelled", "Streams cancelled before their end", ["reason"], registry=r
        )

    def exposition(self) -> bytes:
        """The text `/metrics` answers: this server's metrics, or every server process's, summed."""
        if MULTIPROCESS_DIR not in os.environ:
            return generate_latest(self.registry)
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        return generate_latest(summed)

    def batch(self, network: str, rows: int, size: int) -> None:
        """The device engine's observer of every network call."""
        self.batch_rows.labels(network).observe(rows)
        self.batch_padding.labels(network).observe((size - rows) / size)
