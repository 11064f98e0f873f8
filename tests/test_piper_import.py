"""Piper import: fixtures built at test time by piper-tts itself (the `piper` extra), every tensor perturbed,
exported as Piper's export script does (TorchScript exporter: `dynamo=False`), imported as an addon, and
spoken through its stacks: equal to Piper's own ONNX Runtime output at noise 0, streamed equal to
whole-sentence, batched equal to alone, seeded runs repeating, compiled equal to dynamic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import tts_neuron
from tts_neuron.addon import load_addon
from tts_neuron.blocks.context import BuildContext
from tts_neuron.cli import main
from tts_neuron.errors import AddonError, SettingError, UnknownSpeakerError
from tts_neuron.frontend import Sentence
from tts_neuron.importers.piper import import_voice
from tts_neuron.models import ChannelsLastConv1d
from tts_neuron.models.protocols import compiled_form
from tts_neuron.models.vits import CarriedFlow, CarriedGenerator, EncoderCpuForm, FlowCpuForm
from tts_neuron.voice import Voice

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


# The default suite's voices: the medium recipe's structure at small widths, so they export in seconds.
SMALL = {**MEDIUM, "upsample_initial_channel": 64}
QUIET: dict[str, Any] = {"noise_scale": 0.0, "noise_w": 0.0}
TEXT = "Hello there. It is 5 o'clock, and this sentence goes on for a while, so that it streams in windows!"


@pytest.fixture(scope="module")
def small_voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return write_voice(tmp_path_factory.mktemp("small"), SMALL, hidden=48)


@pytest.fixture(scope="module")
def medium(small_voice: tuple[Path, Any]) -> Path:
    return small_voice[0]


@pytest.fixture(scope="module")
def addon(medium: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("addon") / "voice"
    assert main(["import", "piper", str(medium), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def voice(addon: Path) -> Voice:
    return tts_neuron.load(addon)


def speak_ids(voice: Voice, ids: list[int], **settings: Any) -> np.ndarray:
    """The voice's stack on phoneme ids (no frontend), streamed and joined."""
    sentence = Sentence("", ["x"] * len(ids), ids, [0] * len(ids))
    features = voice.call_settings(settings).sentence(0)
    return torch.cat([c.data for c in voice.sentence_chunks(sentence, settings=features)]).numpy()


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


def test_imported_addon_equals_piper_onnxruntime(medium: Path, voice: Voice) -> None:
    for n, seed, scale in [(12, 0, 1.0), (40, 1, 1.3), (3, 2, 0.7)]:
        ids = ids_of(n, seed)
        ours = speak_ids(voice, ids, length_scale=scale, **QUIET)
        expected = piper_audio(medium, ids, scale)
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    # text: each sentence as Piper's onnxruntime speaks the same ids
    sentences = [sentence.tokens for sentence in voice.frontend.sentences(TEXT)]
    expected = np.concatenate([piper_audio(medium, tokens) for tokens in sentences])
    np.testing.assert_allclose(voice.synthesize(TEXT, **QUIET), expected, atol=1e-4, rtol=0)


def test_addon_carries_the_voice_json_and_the_sha256(addon: Path) -> None:
    from tts_neuron.backends.manifest import sha256_file

    spec = load_addon(addon)
    assert spec.name == "voice" and spec.license == "test fixture" and spec.dataset == "random"
    assert spec.frontend["type"] == "piper" and spec.frontend["espeak_voice"] == "en-us"
    assert spec.settings["noise_w"].default == 0.8 and spec.settings["noise_scale"].default == 0.667
    assert not spec.speakers
    for network in spec.networks.values():
        assert network.sha256 == sha256_file(network.parameters)
    roles = {name: (n.architecture, n.role) for name, n in spec.networks.items()}
    assert roles == {
        "encoder": ("VitsEncoder", "encoder"),
        "flow": ("VitsFlow", "decoder"),
        "generator": ("VitsGenerator", "vocoder"),
    }
    assert set(spec.stacks) == {"cpu", "neuron"}


def whole_sentence(voice: Voice, text: str, **settings: Any) -> np.ndarray:
    """The reference the streamed output must equal: each sentence's frames through the flow and HiFi-GAN
    at once, with no windows."""
    from tts_neuron.blocks.vits import VitsUpsampler

    flow, generator = voice.addon.network("flow"), voice.addon.network("generator")
    call = voice.call_settings(settings)
    pipeline = voice.stack.stack[0]
    assert isinstance(pipeline, tts_neuron.StreamablePipeline)
    out = []
    for i, sentence in enumerate(voice.frontend.sentences(text)):
        features = pipeline.sequence_block(voice.features(sentence, 1.0, call.sentence(i)))
        upsampler = VitsUpsampler(first_chunk_frames=10**6, chunk_frames=10**6)
        (chunk,) = upsampler.stream(None, features)
        speaker = (features["speaker"],) if "speaker" in features else ()
        with torch.inference_mode():
            z = flow(chunk.data[None], torch.ones(1, len(chunk.data)), *speaker)
            out.append(generator(z, torch.ones(1, len(chunk.data)), *speaker)[0])
    return torch.cat(out).numpy()


STREAM_TOLERANCE = 1e-5
"""What docs/importing.md states: streamed audio equals the whole-sentence decode to float rounding."""


def test_streamed_equals_whole_sentence_and_seeded_runs_repeat(voice: Voice) -> None:
    for settings in (QUIET, {"seed": 11}, {"seed": 12, "length_scale": 1.7, "noise_w": 1.0}):
        chunks = list(voice.stream(TEXT, **settings))
        assert len(chunks) > 4  # sentences stream in several windows
        streamed = np.concatenate(chunks)
        np.testing.assert_allclose(
            streamed, whole_sentence(voice, TEXT, **settings), atol=STREAM_TOLERANCE, rtol=0
        )
    first = voice.synthesize(TEXT, seed=7)
    assert np.array_equal(first, voice.synthesize(TEXT, seed=7))  # seeded runs repeat exactly
    assert not np.array_equal(first, voice.synthesize(TEXT, seed=8))
    assert not np.array_equal(first, voice.synthesize(TEXT))  # no seed: fresh noise
    assert np.array_equal(voice.synthesize(TEXT, **QUIET), voice.synthesize(TEXT, seed=3, **QUIET))
    slow, quiet = voice.synthesize(TEXT, speed=0.5, **QUIET), voice.synthesize(TEXT, **QUIET)
    assert len(slow) > len(quiet) and len(voice.synthesize(TEXT, length_scale=2.0, **QUIET)) > len(quiet)


def test_per_call_settings_are_checked_and_kept_apart_from_the_voice(voice: Voice) -> None:
    assert voice.setting_names == ["length_scale", "noise_scale", "noise_w", "seed"]
    with pytest.raises(UnknownSpeakerError, match="has one speaker"):
        voice.synthesize("Hi.", speaker="nobody")
    with pytest.raises(SettingError, match="noise_w must be from 0 to 2"):
        voice.synthesize("Hi.", noise_w=5)
    with pytest.raises(SettingError, match="takes no setting pitch"):
        voice.synthesize("Hi.", pitch=1.0)
    seeded = voice.with_settings(seed=5, **QUIET)  # a view: the voice itself is unchanged
    assert voice.bound == {} and seeded.stack is voice.stack
    assert np.array_equal(seeded.synthesize("Hi."), voice.synthesize("Hi.", seed=5, **QUIET))


def test_batched_streams_equal_each_alone(addon: Path) -> None:
    from tts_neuron.engine import END, Engine

    engine = Engine(max_batch=8)
    try:
        voices = tts_neuron.VoiceSet(engine)
        voice = voices.add(addon)
        texts = ["Hello there.", TEXT, "Yes, it is.", "Numbers like 42 are read by espeak-ng."]
        views = [voice.with_settings(seed=i) for i in range(len(texts))]
        sinks: list[list[object]] = [[] for _ in texts]
        for view, text, sink in zip(views, texts, sinks, strict=True):
            engine.submit(view, text, sink.append, paced=False)
        deadline = time.monotonic() + 120
        while not all(sink and not isinstance(sink[-1], np.ndarray) for sink in sinks):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for view, text, sink in zip(views, texts, sinks, strict=True):
            assert sink[-1] is END
            batched = np.concatenate([x for x in sink if isinstance(x, np.ndarray)])
            alone = view.synthesize(text)
            assert batched.shape == alone.shape
            np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    finally:
        engine.close()


@pytest.mark.slow
def test_compiled_cpu_target_stack_equals_the_dynamic_one(addon: Path, tmp_path: Path) -> None:
    """`compile --target cpu` on the imported addon (one bucket a network: 15 s of worker start and
    export, so slow), then the `neuron` stack on the CPU target against the `cpu` stack, with noise."""
    import shutil

    root = Path(shutil.copytree(addon, tmp_path / "voice"))
    config = json.loads((root / "addon.json").read_text())
    config["networks"]["encoder"]["buckets"] = [128]
    config["networks"]["flow"]["buckets"] = [88]
    config["networks"]["generator"]["buckets"] = [32]
    for network in config["networks"].values():
        network["batch_sizes"] = [1]
    (root / "addon.json").write_text(json.dumps(config))
    assert main(["compile", "--addon", str(root), "--target", "cpu", "--jobs", "1"]) == 0
    fixed = tts_neuron.load(root, stack="neuron", target="cpu")
    dynamic = tts_neuron.load(root, stack="cpu")
    text = "Hello there, compiled voice. Yes!"
    for settings in (QUIET, {"seed": 4}):
        np.testing.assert_allclose(
            fixed.synthesize(text, **settings), dynamic.synthesize(text, **settings), atol=1e-5, rtol=0
        )


@pytest.mark.slow
def test_check_passes_every_network_at_every_bucket(addon: Path) -> None:
    from tts_neuron.check import check_addon

    report = check_addon(addon, progress=False)
    assert report.ok, [(c.network, c.bucket, c.error) for c in report.buckets if not c.ok]
    assert {c.network for c in report.buckets} == {"encoder", "flow", "generator"}


@pytest.fixture(scope="module")
def multi_addon(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("multi")
    onnx_path, _ = write_voice(folder, SMALL, speakers=3, hidden=48)
    import_voice(onnx_path, None, folder / "addon", name="multi")
    return onnx_path, folder / "addon"


def test_multi_speaker_voice_speaks_by_name_and_id(multi_addon: tuple[Path, Path]) -> None:
    onnx_path, root = multi_addon
    voice = tts_neuron.load(root)
    assert voice.addon.speakers == {"speaker0": 0, "speaker1": 1, "speaker2": 2}
    text = "Hello, speakers."
    ids = next(iter(voice.frontend.sentences(text))).tokens
    by_name = voice.synthesize(text, speaker="speaker2", **QUIET)
    assert np.array_equal(by_name, voice.synthesize(text, speaker=2, **QUIET))
    assert not np.array_equal(by_name, voice.synthesize(text, speaker=1, **QUIET))
    np.testing.assert_allclose(by_name, piper_audio(onnx_path, ids, sid=2), atol=1e-4, rtol=0)
    with pytest.raises(UnknownSpeakerError, match="no speaker 'speaker9'; its speakers: speaker0"):
        voice.synthesize(text, speaker="speaker9")
    with pytest.raises(UnknownSpeakerError):
        voice.synthesize(text, speaker=3)
    wav = root.parent / "speaker.wav"
    command = ["synthesize", "--addon", str(root), "--text", text, "--out", str(wav)]
    assert main([*command, "--speaker", "speaker2", "--set", "noise_scale=0", "--set", "noise_w=0"]) == 0
    assert wav.stat().st_size == 44 + 2 * len(by_name)
    assert (
        main(["synthesize", "--addon", str(root), "--text", text, "--out", str(wav), "--speaker", "x"]) == 2
    )
    voices = tts_neuron.VoiceSet()
    voices.add(root)
    assert sorted(voices.voices) == ["multi", "multi:speaker0", "multi:speaker1", "multi:speaker2"]
    assert np.array_equal(voices["multi:speaker2"].synthesize(text, **QUIET), by_name)
    assert np.array_equal(voices["multi:2"].synthesize(text, **QUIET), by_name)
    with pytest.raises(UnknownSpeakerError):
        voices["multi:nobody"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "generator, speakers", [(MEDIUM, 1), (HIGH, 1), (MEDIUM, 3)], ids=["medium", "high", "multi-speaker"]
)
def test_full_size_voices_import_stream_and_equal_piper(
    tmp_path: Path, generator: dict, speakers: int
) -> None:
    onnx_path, _ = write_voice(tmp_path, generator, speakers)
    import_voice(onnx_path, None, tmp_path / "addon")
    voice = tts_neuron.load(tmp_path / "addon")
    ids = ids_of(10, 3)
    for sid in range(speakers) if speakers > 1 else [None]:
        quiet: dict[str, Any] = {**QUIET, **({"speaker": sid} if sid is not None else {})}
        np.testing.assert_allclose(
            speak_ids(voice, ids, **quiet), piper_audio(onnx_path, ids, sid=sid), atol=1e-4, rtol=0
        )
    settings: dict[str, Any] = {"seed": 1, **({"speaker": 1} if speakers > 1 else {})}
    np.testing.assert_allclose(
        np.concatenate(list(voice.stream(TEXT, **settings))),
        whole_sentence(voice, TEXT, **settings),
        atol=STREAM_TOLERANCE,
        rtol=0,
    )


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
    cases = {
        "num_speakers.json": ({**config, "num_speakers": 4}, "num_speakers is 4"),
        "badmap.json": ({**config, "phoneme_id_map": {"a": "x"}}, "badmap.json: phoneme_id_map: phoneme 'a'"),
        "range.json": (
            {**config, "phoneme_id_map": {**config["phoneme_id_map"], "ʘ": [300]}},
            "range.json: phoneme_id_map: phoneme 'ʘ': id 300 is outside the voice's 256 symbols",
        ),
        "cluster.json": (
            {**config, "vowel_clusters": [["ʘ", "ɪ"]]},
            "cluster.json: vowel_clusters: unknown phoneme 'ʘɪ': not in phoneme_id_map",
        ),
        "nobos.json": (
            {**config, "phoneme_id_map": {k: v for k, v in config["phoneme_id_map"].items() if k != "^"}},
            "nobos.json: phoneme_id_map: has no BOS phoneme",
        ),
    }
    for name, (bad, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(bad))
        out = tmp_path / name.replace(".json", "")
        assert (
            main(["import", "piper", str(medium), "--config", str(tmp_path / name), "--out", str(out)]) == 2
        )
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_unknown_phonemes_at_synthesis_are_skipped_not_fatal(
    voice: Voice, caplog: pytest.LogCaptureFixture
) -> None:
    """A phoneme espeak-ng makes that the voice's map lacks is skipped with a warning (as Piper does):
    user text never crashes synthesis."""
    from tts_neuron.frontend.piper import PiperFrontend

    id_map = {k: v for k, v in voice.addon.frontend["phoneme_id_map"].items() if k != "ə"}
    frontend = PiperFrontend("en-us", id_map, "trimmed.json")
    (sentence,) = frontend.sentences("Hello, 🙂 the ☃ banana.")
    assert sentence.tokens and "ə" not in sentence.phonemes
    assert "trimmed.json: phoneme_id_map has no 'ə'" in caplog.text


def test_durations_equal_piper_before_rounding(small_voice: tuple[Path, Any], voice: Voice) -> None:
    _, piper_model = small_voice
    encoder = voice.addon.network("encoder")
    ids = torch.tensor([ids_of(30, 4)])
    with torch.no_grad():
        x, _, _, x_mask = piper_model.enc_p(ids, torch.tensor([ids.shape[1]]))
        expected = piper_model.dp(x, x_mask, reverse=True, noise_scale=0.0)[0, 0]  # log w [N]
        _, logw = encoder(ids, torch.ones(1, ids.shape[1]), torch.zeros(1, ids.shape[1], 2))
    torch.testing.assert_close(logw[0], expected, atol=1e-5, rtol=0)


def test_padded_windows_and_tokens_equal_unpadded(voice: Voice) -> None:
    """The fixed-shape contract: a bucket's padding changes nothing at real positions (the where-spline,
    the banded relative attention, the generator masked at every rate)."""
    encoder, generator = voice.addon.network("encoder"), compiled_form(voice.addon.network("generator"))
    n, bucket = 17, 32
    ids = torch.tensor([ids_of(n - 2, 5)])
    noise = torch.randn(1, bucket, 2) * 0.8
    with torch.no_grad():
        alone = encoder(ids, torch.ones(1, n), noise[:, :n])
        mask = (torch.arange(bucket) < n).float()[None]
        padded = encoder(torch.nn.functional.pad(ids, (0, bucket - n)), mask, noise)
        for a, p in zip(alone, padded, strict=True):
            torch.testing.assert_close(p[:, :n], a, atol=1e-5, rtol=0)
        z = torch.randn(1, 20, 48)
        hop, left = int(generator.hop), 5  # type: ignore[arg-type]
        window = torch.zeros(1, 40, 48)
        window[:, left : left + 20] = z
        frame_mask = torch.zeros(1, 40)
        frame_mask[:, left : left + 20] = 1
        audio = generator(window, frame_mask)[0, left * hop : (left + 20) * hop]  # type: ignore[operator]
        torch.testing.assert_close(audio, generator(z, torch.ones(1, 20))[0], atol=1e-5, rtol=0)


def test_dynamic_networks_on_cpu_run_their_cpu_forms(voice: Voice) -> None:
    """The generator's, the flow's and the encoder's CPU forms (tests/test_channels_last.py) are what a CPU
    stack calls (the generator's and the flow's carried forms, in the stack's Vocoder and Decoder blocks);
    the addon's own networks, which are compiled and checked, keep their plain convolutions."""
    ctx = BuildContext(voice.addon, torch.device("cpu"), "test")
    plain = ctx.network("generator")
    generator = plain.network
    assert isinstance(generator, torch.nn.Module)
    assert any(isinstance(m, ChannelsLastConv1d) for m in generator.modules())
    assert not any(isinstance(m, ChannelsLastConv1d) for m in voice.addon.network("generator").modules())
    carried = ctx.carried(plain)
    assert carried is not None and isinstance(carried.network, CarriedGenerator)
    assert carried.network.generator is generator  # the CPU form itself: its convolutions, not copies
    flow = ctx.network("flow").network
    assert isinstance(flow, FlowCpuForm) and flow.flow is voice.addon.network("flow")
    plain = ctx.network("flow")
    carried = ctx.carried(plain)  # what the stacks' Decoder block asks for
    assert carried is not None and isinstance(carried.network, CarriedFlow)
    assert carried.network.form is plain.network  # the CPU form's matrices, not a second copy
    encoder = ctx.network("encoder").network
    assert isinstance(encoder, EncoderCpuForm) and encoder.encoder is voice.addon.network("encoder")


def test_networks_export_at_a_fixed_shape_without_random_ops(voice: Voice) -> None:
    for name in ("encoder", "flow", "generator"):
        network = compiled_form(voice.addon.network(name))
        program = torch.export.export(network, network.example_inputs(32))  # type: ignore[operator]
        ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
        assert not [op for op in ops if "rand" in op or "normal" in op or "nonzero" in op], (name, ops)


def test_the_http_server_speaks_imported_voices_and_their_speakers(
    multi_addon: tuple[Path, Path], tmp_path: Path
) -> None:
    """`tts-neuron serve --addon` on an imported multi-speaker voice (noise defaults set to 0 in its
    addon.json, so the server's audio can be compared with the Python API's): each speaker is a voice
    `VOICE:SPEAKER`, `VOICE:ID` finds it by id, and an unknown speaker is a 400."""
    import shutil

    from tests.test_server import assert_same_pcm, server, speech
    from tts_neuron.server.encoding import pcm16

    root = Path(shutil.copytree(multi_addon[1], tmp_path / "multi"))
    config = json.loads((root / "addon.json").read_text())
    for key in ("noise_scale", "noise_w"):
        config["settings"][key]["default"] = 0.0
    (root / "addon.json").write_text(json.dumps(config))
    text = "Hello from an imported voice."
    voice = tts_neuron.load(root)
    with server("--addon", str(root)) as url:
        listed = {v["id"]: v for v in httpx.get(url + "/v1/audio/voices").json()["data"]}
        assert {"multi", "multi:speaker0", "multi:speaker1", "multi:speaker2"} <= set(listed)
        assert listed["multi"]["speakers"] == {"speaker0": 0, "speaker1": 1, "speaker2": 2}
        assert listed["multi:speaker1"]["speaker"] == "speaker1"
        assert listed["multi"]["license"] == "test fixture"
        for name, speaker in (("multi", "speaker0"), ("multi:speaker1", "speaker1"), ("multi:2", 2)):
            want = np.frombuffer(pcm16(voice.synthesize(text, speaker=speaker)), dtype="<i2")
            got = speech(url, voice=name, input=text, response_format="pcm", sample_rate=voice.sample_rate)
            assert got.status_code == 200, got.text
            assert_same_pcm(got.content, want)
        refused = speech(url, voice="multi:nobody", input=text)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == "unknown_speaker" and "has no speaker 'nobody'" in error["message"]
        # Piper's settings per request, listed with their ranges; a seeded request repeats exactly
        assert listed["multi:speaker1"]["settings"]["noise_w"] == {"default": 0.0, "min": 0.0, "max": 2.0}
        noisy = {"noise_scale": 0.5, "noise_w": 0.8, "length_scale": 1.2, "seed": 7}
        pcm = {"response_format": "pcm", "sample_rate": voice.sample_rate}
        want = np.frombuffer(pcm16(voice.synthesize(text, speaker="speaker1", **noisy)), dtype="<i2")
        for _ in range(2):
            got = speech(url, voice="multi:speaker1", input=text, **pcm, **noisy)
            assert got.status_code == 200, got.text
            assert_same_pcm(got.content, want)
        plain = speech(url, voice="multi:speaker1", input=text, **pcm)
        assert len(plain.content) != len(got.content)  # length_scale 1.2 speaks longer
        for bad in ({"noise_w": 11}, {"seed": 1.5}, {"noise_scale": "x"}):
            error = speech(url, voice="multi", input=text, **bad).json()["error"]
            assert error["param"] == next(iter(bad)), error


def test_the_benchmark_compares_on_equal_audio(medium: Path, addon: Path) -> None:
    """benchmarks/piper_compare.py's comparison on the small fixture and two sentences (its plumbing, not
    its figures): both runtimes make the same number of samples for every sentence."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "piper_compare.py"
    spec = importlib.util.spec_from_file_location("piper_compare", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.compare(medium, addon, 2, 1, 0.0)
    assert result["sentences"] == 2 and result["audio_seconds"] > 0
    assert "| tts_neuron_addon |" in module.markdown(result)
