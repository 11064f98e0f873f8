"""The benchmark's own code on tiny inputs: percentile and padding arithmetic, the ONNX export round trip,
unavailable targets reported as skipped, and the record schema of a tiny run. No timing thresholds."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_neuron.backends.cuda import CudaTarget
from tts_neuron.backends.executor import FixedShapeExecutor, TensorSpec
from tts_neuron.backends.neuron import NeuronTarget
from tts_neuron.errors import TargetUnavailableError
from tts_neuron.models.fastspeech import MelDecoder, TextEncoder
from tts_neuron.runners import TappedRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # run.py's own folder

import run  # noqa: E402
from bench_backends import PaddingCounter, export_onnx, onnx_feed, onnx_session, padding_share, voice_config  # noqa: E402
from bench_measure import Run, percentile, summarise  # noqa: E402


def test_percentile_of_known_values() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0 and percentile([3.0, 1.0, 2.0], 100) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=40),
    q=st.floats(0, 100),
)
def test_percentile_interpolates_as_numpy_does(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_summary_arithmetic() -> None:
    runs = [Run(0.0, [0.1, 0.3, 0.6], 1.0, 22050), Run(10.0, [10.2, 10.4, 10.5], 12.0, 22050)]
    figures = summarise(
        [r.total_s for r in runs], 1.0, [r.ttfa_s for r in runs], [g for r in runs for g in r.gaps_s], 3
    )
    assert figures["ttfa_ms"] == {"p50": 150.0, "p90": 190.0, "p99": 199.0}
    assert figures["gap_ms"]["max"] == 300.0 and figures["gap_ms"]["p50"] == 200.0
    assert figures["total_ms"] == 1500.0 and figures["total_ms_range"] == [1000.0, 2000.0]
    assert figures["rtf"] == 1.5 and figures["rtfx"] == 0.67 and figures["repeats"] == 2
    single = summarise([0.5], 2.0, [0.5], [], 1)
    assert single["gap_ms"] == {"p50": None, "p90": None, "max": None} and single["rtfx"] == 4.0


def test_padding_share_and_counter() -> None:
    assert padding_share(5, 8) == 0.375 and padding_share(0, 0) == 0.0 and padding_share(8, 8) == 0.0
    with pytest.raises(ValueError):
        padding_share(9, 8)
    signatures = {(1, b): (TensorSpec((1, b), "int64"), TensorSpec((1, b), "float32")) for b in (8, 16)}
    executor = FixedShapeExecutor("enc", {shape: (lambda *x: x[0]) for shape in signatures}, signatures)
    counter = PaddingCounter({"enc": ["tokens", "token_mask"]})
    encoder = TappedRunner(counter.tap).handle("enc", executor)
    for real, bucket in ((5, 8), (16, 16), (9, 16)):
        mask = torch.zeros(1, bucket)
        mask[0, :real] = 1
        encoder(torch.zeros(1, bucket, dtype=torch.int64), mask)
    assert counter.summary() == {"enc": {"real": 30, "computed": 40, "share": 0.25}}
    counter.reset()
    assert counter.summary()["enc"]["computed"] == 0


@pytest.mark.parametrize(
    "network",
    [
        TextEncoder(n_symbols=12, channels=8, layers=1),
        MelDecoder(in_channels=4, channels=8, layers=2, kernel_size=5, n_mels=3),
    ],
    ids=["text_encoder", "decoder"],
)
def test_onnx_export_round_trip_equals_torch(network: torch.nn.Module, tmp_path: Path) -> None:
    network.eval()
    path = tmp_path / "net.onnx"
    export_onnx(network, ["x", "mask"], ["y"], path)
    session = onnx_session(path, threads=1)
    for length in (3, 29):  # neither is the export's example length: the axis is dynamic
        x, mask = network.example_inputs(length)  # type: ignore[operator]
        x = torch.randn_like(x) if x.is_floating_point() else torch.randint(1, 12, x.shape, dtype=x.dtype)
        (got,) = session.run(None, onnx_feed(session, [x, mask]))
        with torch.inference_mode():
            np.testing.assert_allclose(got, network(x, mask).numpy(), rtol=1e-4, atol=1e-5)


def test_unavailable_targets_and_missing_stacks_are_skipped_with_the_reason(
    tiny_addon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def absent(self: object) -> None:
        raise TargetUnavailableError(f"{type(self).__name__} is absent in this test")

    monkeypatch.setattr(CudaTarget, "check_available", absent)
    monkeypatch.setattr(NeuronTarget, "check_available", absent)
    for stack, target, compile_for in (
        ("cpu", "cuda", None),
        ("neuron", "cuda", "cuda"),
        ("neuron", "neuron", "neuron"),
    ):
        config, voice = voice_config(tiny_addon_dir, stack, target, "x", compile_for=compile_for)
        assert voice is None and config.stream is None
        assert config.skipped is not None and "is absent in this test" in config.skipped
    config, _ = voice_config(tiny_addon_dir, "cuda", "cpu", "x")
    assert config.skipped is not None and "no stack 'cuda'" in config.skipped
    assert not (tiny_addon_dir / "compiled").exists(), "nothing was compiled into the addon"


def test_texts_start_with_the_same_sentence_and_come_near_their_length() -> None:
    assert run.build_text(40) == run.PARAGRAPH[0] and len(run.PARAGRAPH[0]) == 40
    for chars in (200, 1000, 5000):
        text = run.build_text(chars)
        assert text.startswith(run.PARAGRAPH[0]) and abs(len(text) - chars) < 50
    assert run.build_text(40, first=3) == run.PARAGRAPH[3]


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "addon": str,
    "stack": str,
    "target": str,
    "backend": str,
    "text_chars": int,
    "streams": int,
    "ttfa_ms": dict,
    "total_ms": float,
    "audio_s": float,
    "rtf": float,
    "rtfx": float,
    "gap_ms": dict,
    "peak_rss_mb": float,
    "repeats": int,
    "machine": dict,
}


@pytest.fixture(scope="module")
def tiny_run(tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--addons", str(tiny_addon_dir), "--out", str(out), "--sizes", "40", "--repeats", "1"]
    assert run.main([*argv, "--streams", "1", "2", "--threads", "1"]) == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_tiny_run_records_have_every_field_with_its_type(tiny_run: tuple[Path, list[Any]]) -> None:
    out, records = tiny_run
    measured = [r for r in records if r["status"] == "measured"]
    backends = {r["backend"] for r in measured}
    assert {"torch-eager", "torch-export-fixed", "onnxruntime", "naive-whole-text"} <= backends
    for record in measured:
        for key, kind in REQUIRED.items():
            assert isinstance(record[key], kind), (key, record[key])
        assert set(record["ttfa_ms"]) == {"p50", "p90", "p99"} and set(record["gap_ms"]) == {
            "p50",
            "p90",
            "max",
        }
        assert all(isinstance(v, float) for v in record["ttfa_ms"].values())
        assert all(v is None or isinstance(v, float) for v in record["gap_ms"].values())
        assert record["ttfa_ms"]["p50"] <= record["ttfa_ms"]["p90"] <= record["ttfa_ms"]["p99"]
        assert record["rtf"] == pytest.approx(record["total_ms"] / 1000 / record["audio_s"], rel=0.01)
        assert record["audio_s"] > 0 and record["repeats"] == 1
        assert {"cpu", "cores", "torch", "onnxruntime", "git_revision", "date"} <= set(record["machine"])
    naive = next(r for r in measured if r["backend"] == "naive-whole-text")
    assert naive["ttfa_ms"]["p50"] == naive["total_ms"] and naive["gap_ms"]["max"] is None
    fixed = next(r for r in measured if r["backend"] == "torch-export-fixed")
    assert {"text_encoder", "decoder", "vocoder"} <= set(fixed["padding"])
    assert all(0 <= p["share"] < 1 for p in fixed["padding"].values())
    assert all(isinstance(s, float) for s in fixed["compile_s"].values())
    assert {r["streams"] for r in measured if r["kind"] == "throughput"} == {1, 2}
    for name in ("results.md", "ttfa_vs_length.png", "rtf_by_backend.png", "throughput.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_tiny_run_lists_absent_targets_as_skipped(tiny_run: tuple[Path, list[Any]]) -> None:
    _, records = tiny_run
    skipped = {r["target"]: r["skip_reason"] for r in records if r["status"] == "skipped"}
    if not torch.cuda.is_available():
        assert "CUDA GPU" in skipped["cuda"]
    try:
        import torch_neuronx  # noqa: F401
    except Exception:  # noqa: BLE001 - PyPI's placeholder raises a plain Exception on import
        assert "Neuron SDK" in skipped["neuron"]
    assert "## Skipped" in (tiny_run[0] / "results.md").read_text()


def test_conv_layout_compares_the_forms_of_every_convolutional_network() -> None:
    """One round at one length: a row per network with a convolution, every form agreeing with the stored
    one (the script raises where one does not), a time and a ratio for each."""
    from conv_layout import compare

    rows = compare(Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en", [12], 1, 1)
    names = [row.split(" | ")[1] for row in rows]
    assert names == ["text_encoder", "duration_predictor", "decoder", "vocoder"]
    for row in rows:
        ratios = [float(ratio) for ratio in re.findall(r"\((\d+\.\d+)\)", row)]  # channels-last, CPU form
        assert len(ratios) == 2 and all(ratio > 0 for ratio in ratios), row


def test_window_growth_times_both_schedules_and_they_agree() -> None:
    """One round of two sentences: the held and grown windows both spoken (the script raises where their
    audio differs), and the module's growth put back."""
    from window_growth import compare

    from tts_neuron.blocks import acoustic
    from tts_neuron.blocks.windows import CONTINUING_GROWTH

    ((held, grown),) = compare(Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en", 2, 1, 1)
    assert held > 0 and grown > 0
    assert acoustic.CONTINUING_GROWTH == CONTINUING_GROWTH


def test_carried_forms_are_timed_against_windows_and_agree() -> None:
    """One round of two sentences of each voice in both forms (the script raises where their audio
    differs): a time for every windowed network, and the carried form given fewer frames."""
    from carried_forms import compare

    from tts_neuron.blocks.context import BuildContext

    carried = BuildContext.carried

    addons = Path(__file__).resolve().parent.parent / "addons"
    windowed = {"fastspeech-en": ("decoder", "vocoder"), "tacotron-en": ("postnet", "vocoder")}
    for addon, networks in windowed.items():
        results = compare(addons / addon, "engine", 1, 1, lines=2)
        for name in networks:
            assert results["windowed"][name][0] > 0 and results["carried"][name][0] > 0
            assert 1 <= results["carried"][f"frames/{name}"][0] < results["windowed"][f"frames/{name}"][0]
    assert BuildContext.carried is carried  # put back after the windowed voices were built


def test_window_shapes_runs_each_setting_in_its_own_process() -> None:
    """Two sentences timed after one of warm-up, a child process per setting (exact, then rounded: the
    benchmark's own order repeats the pair), each speaking the same audio; the sentences all differ."""
    from window_shapes import ORDER, compare, word_salad

    salad = word_salad(50)
    assert len(set(salad)) == 50 and all(6 <= len(s.split()) <= 30 for s in salad)
    order = ORDER[:2]
    results = compare(Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en", 1, 2, 1, order)
    assert [multiple for multiple, _ in results] == list(order) and order[0] != order[1]
    assert all(row["seconds"] > 0 and row["refused"] == 0 for _, row in results)
    assert len({row["audio_seconds"] for _, row in results}) == 1
