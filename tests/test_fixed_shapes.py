"""The fixed-shape path: buckets, padding, splitting, executors, manifests, and compiled stacks on the CPU
target, checked against the dynamic-shape stack they must equal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.conftest import edit_addon_json, replace_parameters
from tests.test_blocks import joined, split
from tts_neuron.addon import load_addon
from tts_neuron.backends import load_executor
from tts_neuron.backends.executor import BucketTable, FixedShapeExecutor, ShapeError, TensorSpec, pad_length
from tts_neuron.backends.manifest import CompiledArtifactError
from tts_neuron.backends.neuron import DEFAULT_COMPILER_ARGS, NeuronTarget, compiler_args, visible_cores_env
from tts_neuron.blocks.fixed import PaddedDecoder
from tts_neuron.blocks.pieces import split_points
from tts_neuron.errors import StackError, TargetUnavailableError
from tts_neuron.models.fastspeech import MelDecoder
from tts_neuron.runners import TappedRunner
from tts_neuron_build.compiler import compile_addon, networks_for_stack

FITS = "The quick brown fox jumps over the lazy dog."  # fewer tokens than the tiny addon's largest bucket


@settings(max_examples=100, deadline=None)
@given(buckets=st.sets(st.integers(1, 300), min_size=1, max_size=8), size=st.integers(0, 400))
def test_bucket_table_gives_the_smallest_bucket_that_fits(buckets: set[int], size: int) -> None:
    table = BucketTable(sorted(buckets))
    fitting = [b for b in sorted(buckets) if b >= size]
    assert table.bucket_for(size) == (fitting[0] if fitting else None)


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 20), extra=st.integers(0, 20))
def test_pad_then_unpad_is_identity(length: int, extra: int) -> None:
    x = torch.randn(1, length, 3)
    padded = pad_length(x, length + extra)
    assert padded.shape == (1, length + extra, 3) and not padded[:, length:].any()
    assert torch.equal(padded[:, :length], x)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    limit=st.integers(1, 64),
    phrases=st.sets(st.integers(1, 300), max_size=20),
    words=st.sets(st.integers(1, 300), max_size=80),
)
def test_split_points_keep_pieces_within_the_limit_and_prefer_phrases(
    n: int, limit: int, phrases: set[int], words: set[int]
) -> None:
    cuts = split_points(n, limit, phrases, words)
    assert cuts[0] == 0 and cuts[-1] == n and cuts == sorted(set(cuts))
    for a, b in zip(cuts, cuts[1:-1], strict=False):  # every cut but the end of the text
        assert 0 < b - a <= limit
        window = set(range(a + 1, a + limit + 1))
        if window & phrases:
            assert b == max(window & phrases)
        elif window & words:
            assert b == max(window & words)
    assert cuts[-1] - cuts[-2] <= limit if len(cuts) > 1 else True


def at_batch_1(name: str, run: object, signatures: dict[int, tuple[TensorSpec, ...]]) -> FixedShapeExecutor:
    """An executor of one artifact per bucket at batch 1, each running `run`."""
    by_shape = {(1, bucket): signature for bucket, signature in signatures.items()}
    return FixedShapeExecutor(name, dict.fromkeys(by_shape, run), by_shape)  # type: ignore[arg-type]


def identity_executor(shapes: dict[int, tuple[TensorSpec, ...]]) -> FixedShapeExecutor:
    return at_batch_1("net", lambda *x: x[0], shapes)


def test_executor_refuses_other_shapes_and_names_them() -> None:
    executor = identity_executor({8: (TensorSpec((1, 8), "int64"),), 16: (TensorSpec((1, 16), "int64"),)})
    assert executor(torch.zeros(1, 8, dtype=torch.int64)).shape == (1, 8)
    with pytest.raises(
        ShapeError, match=r"inputs \(int64\[1, 9\]\); compiled for: int64\[1, 8\]; int64\[1, 16\]"
    ):
        executor(torch.zeros(1, 9, dtype=torch.int64))
    with pytest.raises(ShapeError, match=r"float32\[1, 8\]"):
        executor(torch.zeros(1, 8))
    with pytest.raises(ShapeError):
        executor(torch.zeros(8, dtype=torch.int64))


@pytest.fixture(scope="module")
def compiled_addon(tiny_addon_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(shutil.copytree(tiny_addon_dir, tmp_path_factory.mktemp("compiled") / "tiny"))
    report = compile_addon(root, "cpu", progress=False)
    assert len(report.compiled) == 3 + 3 + 2 + 3 and not report.reused  # encoders, decoder, vocoder
    return root


def test_a_second_compile_recompiles_only_what_changed(compiled_addon: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(compiled_addon, tmp_path / "tiny"))
    assert len(compile_addon(root, "cpu", progress=False).reused) == 11
    edit_addon_json(root, lambda c: c["networks"]["decoder"].update(buckets=[24, 40]))
    report = compile_addon(root, "cpu", progress=False)
    assert [a.file for a in report.compiled] == ["decoder.b1.40.pt2"] and len(report.reused) == 10
    assert not (root / "compiled" / "cpu" / "decoder.b1.72.pt2").exists(), "stale artifacts are removed"


def test_manifest_records_what_the_runtime_checks(compiled_addon: Path) -> None:
    manifest = json.loads((compiled_addon / "compiled" / "cpu" / "manifest.json").read_text())
    assert manifest["target"] == "cpu" and manifest["torch"] == torch.__version__
    encoder = manifest["networks"]["text_encoder"]
    assert encoder["buckets"] == [8, 16, 48] and len(encoder["parameters_sha256"]) == 64
    first = encoder["artifacts"][0]
    assert first["inputs"] == [{"shape": [1, 8], "dtype": "int32"}, {"shape": [1, 8], "dtype": "float32"}]
    assert encoder["compiler_args"] == []
    assert first["compile_seconds"] > 0 and len(first["sha256"]) == 64


def test_every_artifact_loads_before_the_first_warm_up(
    compiled_addon: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads come first, then warm-ups: on Neuron (async_load) the loads then overlap in the background."""
    from tts_neuron.backends.cpu import CpuTarget

    events: list[str] = []
    load = CpuTarget.load

    def recorded(self: CpuTarget, path: Path, device: torch.device) -> Any:
        run = load(self, path, device)
        events.append("load")
        return lambda *inputs: (events.append("call"), run(*inputs))[1]

    monkeypatch.setattr(CpuTarget, "load", recorded)
    load_executor(load_addon(compiled_addon), "decoder", "cpu", torch.device("cpu"))
    assert events == ["load"] * 2 + ["call"] * 2


def test_padding_does_not_change_real_positions_at_any_bucket(compiled_addon: Path) -> None:
    addon = load_addon(compiled_addon)
    for name, spec in addon.networks.items():
        network = addon.network(name)
        executor = load_executor(addon, name, "cpu", torch.device("cpu"))
        for bucket in spec.buckets:
            n = max(1, bucket - 5)
            inputs = [x.clone() for x in network.example_inputs(n)]
            inputs[0] = (
                torch.randint(1, 20, inputs[0].shape, dtype=inputs[0].dtype)
                if not inputs[0].is_floating_point()
                else torch.randn_like(inputs[0])
            )
            with torch.inference_mode():
                expected = network(*inputs)
                padded = executor(*(pad_length(x, bucket) for x in inputs))
            rows = expected.shape[1] // n  # outputs per input position: 1, or hop samples for a vocoder
            torch.testing.assert_close(padded[:, : n * rows], expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 150), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_padded_decoder_streams_what_offline_decoding_gives(length: int, sizes: list[int]) -> None:
    torch.manual_seed(0)
    net = MelDecoder(in_channels=4, channels=8, layers=2, kernel_size=5, n_mels=3).eval()  # radius 4
    windows = [12, 24]  # cores of 4 and 16 frames
    signatures = {w: (TensorSpec((1, w, 4), "float32"), TensorSpec((1, w), "float32")) for w in windows}
    log: list[tuple[TensorSpec, ...]] = []

    def recorded(*x: torch.Tensor) -> torch.Tensor:  # runs after the executor's check: it records what passed
        log.append(tuple(map(TensorSpec.of, x)))
        return net(*x)

    decoder = PaddedDecoder("decoder", at_batch_1("decoder", recorded, signatures), radius=4)
    frames = torch.randn(length, 4)
    streamed, _ = joined(decoder.stream(split(frames, sizes), {}))
    with torch.inference_mode():
        offline = net(frames[None], torch.ones(1, length))[0]
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)
    assert log and all(sig in signatures.values() for sig in log) and log[0][0].shape[1] == 12


def test_padded_decoder_window_that_ends_exactly_at_the_end() -> None:
    net = MelDecoder(in_channels=4, channels=8, layers=2, kernel_size=5, n_mels=3).eval()
    sig = {24: (TensorSpec((1, 24, 4), "float32"), TensorSpec((1, 24), "float32"))}
    decoder = PaddedDecoder("decoder", at_batch_1("d", net, sig), radius=4)
    frames = torch.randn(32, 4)  # exactly two cores of 16
    out, chunks = joined(decoder.stream(split(frames, [32]), {}))
    assert [c.data.shape[0] for c in chunks] == [16, 16]
    with torch.inference_mode():
        torch.testing.assert_close(out, net(frames[None], torch.ones(1, 32))[0], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def neuron_on_cpu(compiled_addon: Path) -> tts_neuron.Voice:
    return tts_neuron.load(compiled_addon, stack="neuron", target="cpu")


def test_neuron_stack_on_cpu_equals_the_dynamic_stack(
    compiled_addon: Path, neuron_on_cpu: tts_neuron.Voice
) -> None:
    dynamic = tts_neuron.load(compiled_addon, stack="cpu")
    (sentence,) = dynamic.frontend.sentences(FITS)
    assert len(sentence.tokens) <= 48
    fixed_mel: list[np.ndarray] = []
    dynamic_mel: list[np.ndarray] = []
    fixed_audio = np.concatenate(list(neuron_on_cpu.stream(FITS, fixed_mel.append)))
    dynamic_audio = np.concatenate(list(dynamic.stream(FITS, dynamic_mel.append)))
    np.testing.assert_allclose(np.concatenate(fixed_mel), np.concatenate(dynamic_mel), rtol=0, atol=1e-5)
    assert fixed_audio.shape == dynamic_audio.shape
    np.testing.assert_allclose(fixed_audio, dynamic_audio, rtol=0, atol=1e-4)  # what the README claims


@pytest.fixture(scope="module")
def tapped_neuron_on_cpu(
    compiled_addon: Path,
) -> tuple[tts_neuron.Voice, list[tuple[str, tuple[TensorSpec, ...]]]]:
    """The fixed-shape voice with every network call recorded before the executor checks its shape."""
    log: list[tuple[str, tuple[TensorSpec, ...]]] = []
    runner = TappedRunner(lambda handle, inputs: log.append((handle.name, tuple(map(TensorSpec.of, inputs)))))
    return tts_neuron.load(compiled_addon, stack="neuron", target="cpu", runner=runner), log


@settings(max_examples=15, deadline=None)
@given(words=st.integers(1, 60))
def test_no_executor_is_called_at_an_uncompiled_shape(
    tapped_neuron_on_cpu: tuple[tts_neuron.Voice, list[tuple[str, tuple[TensorSpec, ...]]]], words: int
) -> None:
    voice, log = tapped_neuron_on_cpu
    text = " ".join(["alpha", "bravo,", "charlie", "delta"] * 15)[: words * 7] + "."
    log.clear()
    assert len(voice.synthesize(text)) > 0
    manifest = json.loads((voice.addon.root / "compiled" / "cpu" / "manifest.json").read_text())
    compiled = {
        (name, tuple(TensorSpec(tuple(t["shape"]), t["dtype"]) for t in artifact["inputs"]))
        for name, network in manifest["networks"].items()
        for artifact in network["artifacts"]
    }
    assert {name for name, _ in log} == set(voice.addon.networks)  # every network was called
    assert set(log) <= compiled


def test_long_paragraph_and_long_sentence_on_the_fixed_path(neuron_on_cpu: tts_neuron.Voice) -> None:
    paragraph = ("Fixed shapes are compiled once, and every sentence is padded to fit them. " * 45)[:3000]
    sentence = ("and the list went on with apples, pears, plums " * 14)[:599] + "."
    for text in (paragraph, sentence):
        chunks = list(neuron_on_cpu.stream(text))
        assert sum(len(c) for c in chunks) > 0


def test_stale_and_missing_artifacts_say_which_and_how_to_recompile(
    compiled_addon: Path, tmp_path: Path
) -> None:
    """Each break is undone by restoring the fixture's files (its compile), so that every check meets one
    fault alone; `test_a_second_compile_recompiles_only_what_changed` covers recompiling."""
    root = Path(shutil.copytree(compiled_addon, tmp_path / "tiny"))
    compiled = root / "compiled"
    manifest_path = compiled / "cpu" / "manifest.json"

    def restore() -> None:
        shutil.rmtree(compiled, ignore_errors=True)
        shutil.copytree(compiled_addon / "compiled", compiled)
        shutil.copy(compiled_addon / "addon.json", root / "addon.json")
        shutil.copy(compiled_addon / "networks" / "decoder.safetensors", root / "networks")

    shutil.rmtree(compiled)
    with pytest.raises(
        CompiledArtifactError, match="nothing compiled for target 'cpu'.*tts-neuron compile --addon"
    ):
        load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))
    restore()

    edit_addon_json(root, lambda c: c["networks"]["decoder"].update(buckets=[24, 40]))
    with pytest.raises(CompiledArtifactError, match="stale: 'decoder' was compiled for buckets"):
        tts_neuron.load(root, stack="neuron", target="cpu")
    restore()

    manifest = json.loads(manifest_path.read_text())
    manifest["torch"] = "2.9.0"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CompiledArtifactError, match="compiled with torch 2.9.0"):
        load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))
    restore()

    params = root / "networks" / "decoder.safetensors"
    state = tts_neuron.addon.read_parameters(params)
    state["project_out.bias"] += 1
    from safetensors.torch import save

    replace_parameters(root, "decoder", save(state))
    with pytest.raises(CompiledArtifactError, match="parameters of 'decoder' changed"):
        load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))
    restore()

    load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))  # restored: loads again
    artifact = compiled / "cpu" / "decoder.b1.24.pt2"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    with pytest.raises(CompiledArtifactError, match="decoder.b1.24.pt2: missing or corrupt"):
        load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))
    manifest_path.write_text("{}")
    with pytest.raises(CompiledArtifactError, match="unreadable manifest"):
        load_executor(load_addon(root), "decoder", "cpu", torch.device("cpu"))


def test_networks_for_stack(tiny_addon_dir: Path) -> None:
    addon = load_addon(tiny_addon_dir)
    assert networks_for_stack(addon, addon.stacks["neuron"]) == [
        "text_encoder",
        "duration_predictor",
        "decoder",
        "vocoder",
    ]
    assert networks_for_stack(addon, addon.stacks["cpu"]) == []
    with pytest.raises(StackError, match="network 'vocoder9'"):
        networks_for_stack(addon, [{"type": "PaddedDecoder", "network": "vocoder9"}])


def test_neuron_compiler_arguments() -> None:
    assert compiler_args() == DEFAULT_COMPILER_ARGS
    assert "--auto-cast" in DEFAULT_COMPILER_ARGS and "matmult" in DEFAULT_COMPILER_ARGS
    assert compiler_args(["-O1"]) == [
        "--target",
        "inf2",
        "--auto-cast",
        "matmult",
        "--auto-cast-type",
        "bf16",
        "-O1",
    ]
    overridden = compiler_args(["--auto-cast", "none"])
    assert overridden.count("--auto-cast") == 1 and overridden[-2:] == ["--auto-cast", "none"]
    assert "--auto-cast-type" in overridden


def test_neuron_cores_environment() -> None:
    assert visible_cores_env("0-1", {}) == {"NEURON_RT_VISIBLE_CORES": "0-1"}
    assert visible_cores_env("3", {"NEURON_RT_VISIBLE_CORES": "0"}) == {}
    assert visible_cores_env(None, {}) == {"NEURON_RT_VISIBLE_CORES": "0"}  # one process per core
    with pytest.raises(TargetUnavailableError, match="core index or range"):
        visible_cores_env("all", {})


def _neuron_sdk_present() -> bool:
    try:
        import torch_neuronx  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.skipif(_neuron_sdk_present(), reason="the Neuron SDK is installed here")
def test_neuron_target_without_the_sdk(tiny_addon_dir: Path) -> None:
    with pytest.raises(TargetUnavailableError, match="AWS Neuron SDK"):
        NeuronTarget().check_available()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tts_neuron.cli",
            "compile",
            "--addon",
            str(tiny_addon_dir),
            "--target",
            "neuron",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("tts-neuron: error: target 'neuron' needs the AWS Neuron SDK")
    assert not (tiny_addon_dir / "compiled" / "neuron").exists()


def test_a_decoder_window_too_small_for_its_halo() -> None:
    sig = {8: (TensorSpec((1, 8, 4), "float32"), TensorSpec((1, 8), "float32"))}
    with pytest.raises(ValueError, match="leaves no core"):
        PaddedDecoder("d", at_batch_1("d", lambda *x: x[0], sig), radius=4)
