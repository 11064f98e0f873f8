"""Piper import: fixtures built at test time by piper-tts itself (the `piper` extra), every tensor perturbed,
exported as Piper's export script does (TorchScript exporter: `dynamo=False`), then compared with Piper's
own ONNX Runtime output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tts_neuron.cli import main
from tts_neuron.errors import AddonError
from tts_neuron.importers.piper import import_voice
from tts_neuron.models.vits import Vits

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
vits_models = pytest.importorskip("piper.train.vits.models")
phoneme_ids = pytest.importorskip("piper.phoneme_ids")

MEDIUM = {
    "resblock": "2",
    "resblock_kernel_sizes": (3, 5, 7),
    "resblock_dilation_sizes": ((1, 2), (2, 6), (3, 12)),
    "upsample_rates": (8, 8, 4),
    "upsample_initial_channel": 256,
    "upsample_kernel_sizes": (16, 16, 8),
}
HIGH = {
    "resblock": "1",
    "resblock_kernel_sizes": (3, 7, 11),
    "resblock_dilation_sizes": ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    "upsample_rates": (8, 8, 2, 2),
    "upsample_initial_channel": 512,
    "upsample_kernel_sizes": (16, 16, 4, 4),
}


def write_voice(folder: Path, generator: dict, speakers: int = 1, hidden: int = 192) -> tuple[Path, Any]:
    """A Piper voice with random, perturbed weights, written as Piper's export script writes one; returns
    the .onnx path and Piper's own (exported) SynthesizerTrn."""
    torch.manual_seed(0)
    g = vits_models.SynthesizerTrn(
        n_vocab=256, spec_channels=513, segment_size=32, inter_channels=hidden, hidden_channels=hidden,
        filter_channels=4 * hidden, n_heads=2, n_layers=6, kernel_size=3, p_dropout=0.1, n_speakers=speakers,
        gin_channels=64 if speakers > 1 else 0, use_sdp=True, **generator,
    )  # fmt: skip
    with torch.no_grad():  # library init leaves the flows as the identity: perturb every tensor
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    g.eval()
    g.dec.remove_weight_norm()

    def infer(text, text_lengths, scales, sid=None):
        audio = g.infer(
            text,
            text_lengths,
            noise_scale=scales[0],
            length_scale=scales[1],
            noise_scale_w=scales[2],
            sid=sid,
        )[0]
        return audio.unsqueeze(1)

    g.forward = infer
    onnx_path = folder / "voice.onnx"
    sid = torch.LongTensor([0]) if speakers > 1 else None
    scales = torch.FloatTensor([0.667, 1.0, 0.8])
    example = (torch.randint(0, 256, (1, 50)), torch.LongTensor([50]), scales, sid)
    torch.onnx.export(
        g, example, str(onnx_path), opset_version=15, dynamo=False,
        input_names=["input", "input_lengths", "scales", "sid"], output_names=["output"],
        dynamic_axes={"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
                      "output": {0: "batch_size", 2: "time"}},
    )  # fmt: skip
    config = {
        "audio": {"sample_rate": 22050, "quality": "medium", "hop_length": 256},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": phoneme_ids.DEFAULT_PHONEME_ID_MAP,
        "num_symbols": 256,
        "num_speakers": speakers,
        "speaker_id_map": {f"speaker{i}": i for i in range(speakers)} if speakers > 1 else {},
        "dataset": "random",
        "license": "test fixture",
    }
    (folder / "voice.onnx.json").write_text(json.dumps(config))
    return onnx_path, g


# The default suite's voice: the medium recipe's structure at small widths, so it exports in seconds.
SMALL = {**MEDIUM, "upsample_initial_channel": 64}


@pytest.fixture(scope="module")
def small_voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return write_voice(tmp_path_factory.mktemp("small"), SMALL, hidden=48)


@pytest.fixture(scope="module")
def medium(small_voice: tuple[Path, Any]) -> Path:
    return small_voice[0]


def load_imported(folder: Path) -> Vits:
    manifest = json.loads((folder / "piper-voice.json").read_text())
    model = Vits(**manifest["config"])
    model.load_state_dict(load_file(folder / manifest["parameters"]))
    return model.eval()


def piper_audio(
    onnx_path: Path, ids: list[int], length_scale: float = 1.0, sid: int | None = None
) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, length_scale, 0.0], dtype=np.float32),
    }
    if sid is not None:
        feeds["sid"] = np.array([sid], dtype=np.int64)
    return session.run(None, feeds)[0].reshape(-1)  # [1, 1, 1, S]


def ids_of(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1, *(int(i) for i in rng.integers(3, 150, n)), 2]


def test_imported_voice_equals_piper_onnxruntime(medium: Path, tmp_path: Path) -> None:
    assert main(["import", "piper", str(medium), "--out", str(tmp_path / "addon")]) == 0
    model = load_imported(tmp_path / "addon")
    for n, seed, scale in [(12, 0, 1.0), (40, 1, 1.3), (3, 2, 0.7)]:
        ids = ids_of(n, seed)
        expected = piper_audio(medium, ids, scale)
        with torch.no_grad():
            ours = model.infer(torch.tensor([ids]), length_scale=scale).numpy()
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_manifest_carries_the_voice_json_and_the_sha256(medium: Path, tmp_path: Path) -> None:
    import_voice(medium, None, tmp_path)
    manifest = json.loads((tmp_path / "piper-voice.json").read_text())
    from tts_neuron.backends.manifest import sha256_file

    assert manifest["sha256"] == sha256_file(tmp_path / "vits.safetensors")
    assert manifest["license"] == "test fixture" and manifest["dataset"] == "random"
    assert manifest["espeak_voice"] == "en-us" and manifest["defaults"]["noise_w"] == 0.8


@pytest.mark.slow
@pytest.mark.parametrize(
    "generator, speakers", [(MEDIUM, 1), (HIGH, 1), (MEDIUM, 3)], ids=["medium", "high", "multi-speaker"]
)
def test_full_size_and_multi_speaker_voices_import(tmp_path: Path, generator: dict, speakers: int) -> None:
    onnx_path, _ = write_voice(tmp_path, generator, speakers)
    import_voice(onnx_path, None, tmp_path / "addon")
    model = load_imported(tmp_path / "addon")
    ids = ids_of(10, 3)
    for sid in range(speakers) if speakers > 1 else [None]:
        with torch.no_grad():
            ours = model.infer(torch.tensor([ids]), None if sid is None else torch.tensor([sid])).numpy()
        np.testing.assert_allclose(ours, piper_audio(onnx_path, ids, sid=sid), atol=1e-4, rtol=0)
    if speakers > 1:  # a speaker by name is the same speaker as by id
        from tts_neuron.importers.piper import ImportedVoice

        voice = ImportedVoice(tmp_path / "addon")
        quiet = {"noise_scale": 0.0, "noise_w": 0.0}
        by_name = voice.synthesize("Hi.", speaker="speaker2", **quiet)
        assert torch.equal(by_name, voice.synthesize("Hi.", speaker=2, **quiet))
        assert not torch.equal(by_name, voice.synthesize("Hi.", speaker=1, **quiet))
        with pytest.raises(ValueError, match="unknown speaker"):
            voice.synthesize("Hi.", speaker="speaker9")


def test_bad_files_get_one_line_errors(medium: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(medium.read_bytes()[:5000])
    (tmp_path / "truncated.onnx.json").write_text((medium.parent / "voice.onnx.json").read_text())
    with pytest.raises(AddonError, match="truncated.onnx"):
        import_voice(truncated, None, tmp_path / "out")
    foreign = tmp_path / "foreign.onnx"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(foreign))
    config = json.loads((medium.parent / "voice.onnx.json").read_text())
    (tmp_path / "foreign.onnx.json").write_text(json.dumps(config))
    with pytest.raises(AddonError, match="foreign.onnx: graph.initializer: .*Piper VITS"):
        import_voice(foreign, None, tmp_path / "out")
    mismatched = tmp_path / "mismatch.json"
    mismatched.write_text(json.dumps({**config, "num_speakers": 4}))
    with pytest.raises(AddonError, match="num_speakers is 4"):
        import_voice(medium, mismatched, tmp_path / "out")
    bad_map = tmp_path / "badmap.json"
    bad_map.write_text(json.dumps({**config, "phoneme_id_map": {"a": "x"}}))
    assert main(["import", "piper", str(medium), "--config", str(bad_map), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "badmap.json: phoneme_id_map.a" in err and "\n" not in err


def test_durations_equal_piper_before_rounding(small_voice: tuple[Path, Any], tmp_path: Path) -> None:
    onnx_path, piper_model = small_voice
    import_voice(onnx_path, None, tmp_path)
    model = load_imported(tmp_path)
    ids = torch.tensor([ids_of(30, 4)])
    with torch.no_grad():
        x, _, _, x_mask = piper_model.enc_p(ids, torch.tensor([ids.shape[1]]))
        expected = piper_model.dp(x, x_mask, reverse=True, noise_scale=0.0)[0, 0]  # log w [N]
        _, _, logw = model.encode(ids, torch.ones(1, ids.shape[1]), torch.zeros(1, 2, ids.shape[1]))
    torch.testing.assert_close(logw[0], expected, atol=1e-5, rtol=0)


def test_padded_encode_equals_unpadded_and_windows_equal_whole(medium: Path, tmp_path: Path) -> None:
    """The fixed-shape contract: a bucket's padding changes nothing at real positions (the where-spline
    and the offset-table attention), and the frame side decodes exactly in windows with 43 frames of
    context (the flow's 32 plus HiFi-GAN's)."""
    import_voice(medium, None, tmp_path)
    model = load_imported(tmp_path)
    n, bucket = 17, 32
    ids = torch.tensor([ids_of(n - 2, 5)])
    noise = torch.randn(1, 2, bucket) * 0.8
    with torch.no_grad():
        alone = model.encode(ids, torch.ones(1, n), noise[:, :, :n])
        padded_ids = torch.nn.functional.pad(ids, (0, bucket - n))
        mask = (torch.arange(bucket) < n).float()[None]
        padded = model.encode(padded_ids, mask, noise)
        for a, p in zip(alone, padded, strict=True):
            torch.testing.assert_close(p[:, :n], a, atol=1e-5, rtol=0)
        frames, radius, window = 150, 43, 40
        m, logs = (
            torch.randn(1, frames, model.inter_channels),
            torch.randn(1, frames, model.inter_channels) * 0.1,
        )
        eps = torch.randn(1, frames, model.inter_channels) * 0.667
        whole = model.decode(m, logs, eps, torch.ones(1, frames))[0]
        pieces = []
        for start in range(0, frames, window):
            lo, hi = max(0, start - radius), min(frames, start + window + radius)
            audio = model.decode(m[:, lo:hi], logs[:, lo:hi], eps[:, lo:hi], torch.ones(1, hi - lo))[0]
            first = (start - lo) * model.hop_length
            pieces.append(audio[first : first + min(window, frames - start) * model.hop_length])
    torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-4, rtol=0)


def test_encoder_exports_at_a_fixed_shape_without_random_ops(medium: Path, tmp_path: Path) -> None:
    import_voice(medium, None, tmp_path)
    model = load_imported(tmp_path)

    class Encode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> tuple:
            return self.model.encode(tokens, mask, noise)

    program = torch.export.export(
        Encode(), (torch.zeros(1, 32, dtype=torch.int64), torch.ones(1, 32), torch.zeros(1, 2, 32))
    )
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not [op for op in ops if "rand" in op or "normal" in op or "nonzero" in op], ops


def test_imported_voice_speaks_with_piper_settings_and_seeds(medium: Path, tmp_path: Path) -> None:
    from tts_neuron.importers.piper import ImportedVoice

    import_voice(medium, None, tmp_path)
    voice = ImportedVoice(tmp_path)
    text = "Hello there. It is 5 o'clock!"
    first = voice.synthesize(text, seed=7)
    assert torch.equal(first, voice.synthesize(text, seed=7))  # seeded runs repeat exactly
    assert not torch.equal(first, voice.synthesize(text, seed=8))
    quiet = voice.synthesize(text, noise_scale=0.0, noise_w=0.0)
    assert torch.equal(
        quiet, voice.synthesize(text, noise_scale=0.0, noise_w=0.0, seed=3)
    )  # no noise: no seed
    # at noise 0 the voice speaks each sentence as Piper's onnxruntime does on the same ids
    ids = list(voice.frontend.sentences(text))
    expected = np.concatenate([piper_audio(medium, sentence) for sentence in ids])
    np.testing.assert_allclose(quiet.numpy(), expected, atol=1e-4, rtol=0)
    slow = voice.synthesize(text, noise_scale=0.0, noise_w=0.0, speed=0.5)
    assert len(slow) > len(quiet)
    with pytest.raises(ValueError, match="one speaker"):
        voice.synthesize(text, speaker="nobody")
    (tmp_path / "vits.safetensors").write_bytes(b"x" + (tmp_path / "vits.safetensors").read_bytes()[1:])
    with pytest.raises(AddonError, match="sha256"):
        ImportedVoice(tmp_path)
