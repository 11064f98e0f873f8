"""The load test's arithmetic (underruns on hand-made arrivals, dealing, capacity selection, the batch
histogram from two scrapes) and one tiny real run against a real server. No timing thresholds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import serve_load  # noqa: E402
from serve_load import Request, capacity, deal, late_chunks, meets, next_probe  # noqa: E402

RATE = 100  # samples per second: a chunk of 100 samples plays for exactly 1 s


def test_a_chunk_exactly_at_the_deadline_is_no_underrun() -> None:
    assert late_chunks([(0.0, 100), (1.0, 100), (2.0, 100)], RATE) == []


def test_a_chunk_after_the_deadline_is_an_underrun() -> None:
    assert late_chunks([(0.0, 100), (1.001, 100)], RATE) == [1]


def test_a_chunk_before_the_deadline_is_buffered() -> None:
    assert late_chunks([(0.0, 100), (0.5, 100), (1.9, 100)], RATE) == []  # deadlines 1, 2, 3


def test_playback_resumes_at_the_late_chunk() -> None:
    # stalls at 2.0; plays the second chunk 2.0-3.0, so the third at 2.9 is in time (it would not be
    # against the original schedule, whose deadline was 2.0)
    assert late_chunks([(0.0, 100), (2.0, 100), (2.9, 100), (5.0, 100)], RATE) == [1, 3]


def test_a_single_chunk_never_underruns() -> None:
    assert late_chunks([(3.0, 100)], RATE) == []
    assert late_chunks([], RATE) == []


def test_underruns_are_counted_by_voice_and_by_the_late_chunk() -> None:
    """A stream's first windows (chunks 1 to 3) apart from the rest; a voice's streams with any stall."""
    late = Request("a", 0.0, 200, None, RATE, [(0.0, 10), (0.2, 100), (0.3, 10), (5.0, 10), (9.0, 10)])
    in_time = Request("b", 0.0, 200, None, RATE, [(0.0, 100), (0.5, 100)])
    record = serve_load.summarise("server", 2, [late, in_time], 10.0, [], 0.0, {}, {})
    assert late.late_chunks == [1, 3, 4] and late.underruns == 3
    assert record["underruns_by_chunk"] == {"1": 1, "3": 1, "4+": 1}
    assert record["underrun_streams_by_voice"] == {"a": 1, "b": 0}
    assert record["streams_with_underrun"] == 1


def test_request_figures() -> None:
    request = Request("v", sent=10.0, sample_rate=RATE, chunks=[(10.2, 50), (10.4, 100), (11.8, 50)])
    assert request.ok
    assert request.ttfa_s == pytest.approx(0.2)
    assert request.gaps_s == pytest.approx([0.2, 1.4])
    assert request.audio_s == pytest.approx(2.0)
    assert request.underruns == 1  # plays 10.2-10.7, then 10.7-11.7; the third comes at 11.8


def test_deal_mixes_voices_and_repeats_texts_in_order() -> None:
    texts, voices = ["a", "b", "c"], ["x", "y"]
    dealt = [deal(k, texts, voices) for k in range(8)]
    assert dealt == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
        ("b", "y"),
        ("c", "x"),
        ("c", "y"),
        ("a", "x"),
        ("a", "y"),
    ]


def _record(
    streams: int, p99: float | None, underruns: int = 0, errors: dict[str, int] | None = None
) -> dict[str, Any]:
    record = {
        "streams": streams,
        "ok": 0 if p99 is None else 10,
        "errors": errors or {},
        "ttfa_ms": {"p50": p99, "p99": p99},
        "underruns": underruns,
    }
    record["meets"] = meets(record)
    return record


def test_meets_needs_no_error_no_underrun_and_first_audio_within_the_limit() -> None:
    assert _record(4, 500.0)["meets"]
    assert not _record(4, 500.1)["meets"]
    assert not _record(4, 100.0, underruns=1)["meets"]
    assert not _record(4, 100.0, errors={"503": 1})["meets"]
    assert not _record(4, None)["meets"]


def test_capacity_is_the_largest_concurrency_passing_at_and_below_it() -> None:
    assert capacity([_record(1, 50.0), _record(4, 90.0), _record(16, 400.0), _record(64, 900.0)]) == 16
    assert capacity([_record(64, 900.0), _record(1, 50.0), _record(16, 400.0), _record(4, 90.0)]) == 16
    # a pass above a failure does not count
    assert capacity([_record(1, 50.0), _record(4, 90.0, underruns=2), _record(16, 400.0)]) == 1
    assert capacity([_record(1, 600.0), _record(4, 90.0)]) == 0
    assert capacity([_record(1, 50.0), _record(4, 90.0)]) == 4


def test_bisection_probes_halfway_until_adjacent() -> None:
    records = [_record(1, 50.0), _record(16, 400.0), _record(64, 900.0)]
    assert next_probe(records) == 40
    records.append(_record(40, 450.0))
    assert next_probe(records) == 52
    records.append(_record(52, 700.0))
    assert next_probe(records) == 46
    assert next_probe([_record(16, 400.0), _record(17, 900.0)]) is None
    assert next_probe([_record(1, 50.0), _record(4, 90.0)]) is None  # nothing failed
    assert next_probe([_record(1, 600.0), _record(4, 900.0)]) is None  # nothing passed


def test_batch_histogram_is_the_difference_of_two_scrapes() -> None:
    net = (("network", "vocoder"),)
    before = {("tts_neuron_batch_size_count", net): 2.0, ("tts_neuron_batch_size_sum", net): 2.0}
    after = {
        ("tts_neuron_batch_size_count", net): 6.0,
        ("tts_neuron_batch_size_sum", net): 12.0,
        ("tts_neuron_batch_padding_ratio_sum", net): 1.0,
        ("tts_neuron_batch_size_bucket", (("le", "4.0"), ("network", "vocoder"))): 3.0,
    }
    assert serve_load.batch_histogram(before, after) == {
        "vocoder": {
            "calls": 4,
            "mean_rows": 2.5,
            "mean_padding_share": 0.25,
            "calls_with_rows_le": {"4.0": 3},
        }
    }


def test_an_mp3_bodys_bytes_tell_its_audio_within_one_frame() -> None:
    """The client counts mp3 audio from bytes at the constant bit rate: the server's own encoder's output
    of 3 s holds 3 s, within one mp3 frame (1,152 samples) and the encoder's priming."""
    encoding = pytest.importorskip("tts_neuron.server.encoding")
    rate = 22050
    encoder = encoding.Encoder("mp3", rate)
    body = encoder.push(np.sin(np.arange(3 * rate) / 20).astype(np.float32) * 0.5) + encoder.finish()
    assert abs(serve_load.samples_in("mp3", len(body), rate) - 3 * rate) <= 2 * 1152
    assert (
        serve_load.samples_in("wav", 44 + 200, rate) == 100 and serve_load.samples_in("pcm", 200, rate) == 100
    )


def test_soak_growth_is_relative_to_the_rss_after_the_baseline() -> None:
    record = {"rss_mb": [[0.0, 400.0], [59.0, 480.0], [61.0, 500.0], [600.0, 510.0]]}
    summary = serve_load.soak_summary(record, 60.0)
    assert summary["rss_baseline_mb"] == 500.0
    assert summary["memory_growth"] == pytest.approx(0.02)
    assert serve_load.soak_summary({"rss_mb": [[0.0, 400.0]]}, 60.0)["memory_growth"] is None


@pytest.mark.slow
def test_a_tiny_real_run_records_every_field(tmp_path: Path) -> None:
    out = tmp_path / "load"
    result = serve_load.main(
        [
            "--runners",
            "server",
            "--streams",
            "1",
            "--requests",
            "1",
            "--addons",
            str(serve_load.ADDONS[0]),
            "--voices",
            "fastspeech-en",
            "--formats",
            "pcm",
            "mp3",
            "--out",
            str(out),
        ]
    )
    assert json.loads((out / "results.json").read_text()) == result
    assert (out / "results.md").read_text().startswith("# Serving load test")
    assert (out / "serve_load.png").stat().st_size > 0
    assert set(result) == {"date", "machine", "config", "records", "capacity"}
    assert {"cpu", "cores"} <= set(result["machine"])
    record, mp3 = result["records"]
    assert mp3["runner"] == "server mp3" and mp3["ok"] == 1 and mp3["cpu_ms_per_audio_s"] > 0
    assert mp3["audio_s"] == pytest.approx(record["audio_s"], rel=0.02)  # its bytes tell its audio
    assert set(record) == {
        "runner",
        "streams",
        "wall_s",
        "requests",
        "ok",
        "errors",
        "ttfa_ms",
        "gap_ms",
        "underruns",
        "streams_with_underrun",
        "underrun_share",
        "server_underruns",
        "audio_s",
        "rtfx",
        "voices",
        "rss_mb",
        "error_times_s",
        "batch",
        "admission",
        "meets",
        "server_cpu_s",
        "client_cpu_s",
        "cpu_ms_per_audio_s",
    }
    assert (record["runner"], record["streams"], record["requests"], record["ok"]) == ("server", 1, 1, 1)
    assert record["errors"] == {} and record["audio_s"] > 0 and record["rtfx"] > 0
    assert record["ttfa_ms"]["p50"] is not None and record["ttfa_ms"]["p99"] is not None
    assert len(record["rss_mb"]) >= 2 and all(mb > 0 for _, mb in record["rss_mb"])
    assert record["batch"] and all(v["calls"] > 0 for v in record["batch"].values())
    assert result["capacity"]["server"] in (0, 1) and result["capacity"]["server mp3"] in (0, 1)
