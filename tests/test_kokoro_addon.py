"""`tts-neuron import kokoro` end to end: a Kokoro-format model (built by the kokoro package's KModel, every
tensor perturbed, with Kokoro's published vocabulary and three voice packs) imported by the CLI into an
addon that speaks every voice pack, repeats with a seed, batches, compiles and serves.

The duration head's bias is set so that tokens last about a frame, and the frame buckets are small: random
weights would give about 25 frames a token, and the whole-sentence decoder's cost grows with the frames (its
channel counts are Kokoro's own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import tts_neuron
from tts_neuron.cli import main
from tts_neuron.errors import UnknownSpeakerError

pytest.importorskip("kokoro", reason="the kokoro extra is not installed")

from tests.test_kokoro import PUBLISHED_VOCAB, REDUCED, write_model  # noqa: E402 - after the skip

PACKS = ("af_bella", "af_heart", "af_sky")
TEXT = "Hi there. How are you?"
SHORT = "Hi there."


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model imported by the CLI, with small buckets so that the compiled stack builds quickly."""
    root = tmp_path_factory.mktemp("kokoro-addon")
    write_model(
        root / "model", {**REDUCED, "vocab": PUBLISHED_VOCAB}, seed=3, voices=PACKS, frames_per_token=1.0
    )
    assert main(["import", "kokoro", "--model", str(root / "model"), "--out", str(root / "addon")]) == 0
    config = json.loads((root / "addon" / "addon.json").read_text(encoding="utf-8"))
    for name, buckets in (("encoders", [16, 32]), ("decoder", [16, 32])):
        config["networks"][name].update(buckets=buckets, batch_sizes=[1, 2])
    (root / "addon" / "addon.json").write_text(json.dumps(config), encoding="utf-8")
    return root / "addon"


@pytest.fixture(scope="module")
def voice(addon: Path) -> tts_neuron.Voice:
    return tts_neuron.load(addon)


def test_import_writes_safetensors_and_every_voice_pack_is_a_speaker(addon: Path) -> None:
    config = json.loads((addon / "addon.json").read_text(encoding="utf-8"))
    assert list(config["speakers"]) == ["af_heart", "af_bella", "af_sky"]  # Kokoro-FastAPI's default first
    assert config["frontend"] == {"type": "kokoro"} and config["license"].startswith("Apache-2.0")
    assert sorted(p.name for p in (addon / "networks").iterdir()) == [
        "decoder.safetensors",
        "encoders.safetensors",
        "voices.safetensors",
    ]
    assert not list(addon.rglob("*.pt")) and not list(addon.rglob("*.pth"))


def test_every_voice_pack_speaks_and_a_seed_repeats(voice: tts_neuron.Voice) -> None:
    spoken = {pack: voice.synthesize(SHORT, speaker=pack, seed=1) for pack in PACKS}
    for audio in spoken.values():
        assert audio.size > 0 and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert not np.array_equal(spoken["af_bella"], spoken["af_sky"])
    assert np.array_equal(voice.synthesize(SHORT, seed=1), spoken["af_heart"])  # the default speaker
    again = voice.synthesize(SHORT, speaker="af_sky", seed=1)
    assert np.array_equal(again, spoken["af_sky"])
    other_seed = voice.synthesize(SHORT, speaker="af_sky", seed=2)
    assert again.shape == other_seed.shape and not np.array_equal(again, other_seed)
    blend = voice.synthesize(SHORT, speaker="af_bella+af_sky", seed=1)
    assert blend.size > 0 and not np.array_equal(blend, spoken["af_bella"])


def test_streams_a_chunk_per_sentence_and_speed_lengthens(voice: tts_neuron.Voice) -> None:
    chunks = list(voice.stream(TEXT, seed=4))
    assert len(chunks) == 2  # each sentence decoded whole, streamed as soon as it is
    assert voice.synthesize(SHORT, speed=0.5, seed=4).size > chunks[0].size  # durations divided by speed


def test_an_unknown_voice_pack_is_refused(voice: tts_neuron.Voice) -> None:
    with pytest.raises(UnknownSpeakerError, match="has no speaker 'af_nobody'"):
        voice.synthesize(TEXT, speaker="af_nobody")
    with pytest.raises(UnknownSpeakerError, match="has no speaker 'af_nobody'"):
        voice.synthesize(TEXT, speaker="af_bella+af_nobody")


def test_a_model_without_voice_packs_or_with_a_foreign_pth_is_one_line_and_exit_2(
    addon: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**REDUCED, "vocab": PUBLISHED_VOCAB}), encoding="utf-8")
    torch.save({}, model / "kokoro-v1_0.pth")
    assert main(["import", "kokoro", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        "voices: no voice packs (*.pt); Kokoro's layout has voices/NAME.pt"
    )
    (model / "voices").mkdir()
    torch.save(torch.zeros(510, 1, 256), model / "voices" / "af_sky.pt")
    assert main(["import", "kokoro", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "kokoro-v1_0.pth: expected a dict of state dicts" in err


def test_batched_streams_equal_each_alone(addon: Path) -> None:
    """Streams on one device engine each equal the same call alone: two of one pack and text with other
    seeds (equal durations, so their decoder calls meet at one shape and batch, which the engine's
    observer shows) and one of another pack and text."""
    from tests.test_engine import Sink
    from tts_neuron.engine import END, Engine

    calls: list[tuple[str, int]] = []
    engine = Engine(max_batch=4, workers=1, observer=lambda name, real, run: calls.append((name, real)))
    try:
        voices = tts_neuron.VoiceSet(engine)
        voices.add(addon)
        jobs = [
            ("kokoro:af_sky", SHORT, 1),
            ("kokoro:af_sky", SHORT, 2),
            ("kokoro:af_bella", "How are you?", 3),
        ]
        sinks = []
        with engine._cond:  # the engine takes arrivals under this lock: all three in one turn
            for name, text, seed in jobs:
                sinks.append(Sink())
                engine.submit(voices[name].with_settings(seed=seed), text, sinks[-1], paced=False)
        for sink, (name, text, seed) in zip(sinks, jobs, strict=True):
            assert sink.done.wait(120) and sink.items[-1] is END, sink.items[-1]
            batched = np.concatenate([x for x in sink.items if isinstance(x, np.ndarray)])
            alone = voices[name].synthesize(text, seed=seed)
            assert batched.shape == alone.shape and np.abs(batched - alone).max() < 1e-4
        assert any(real > 1 for name, real in calls if name.endswith("decoder")), calls
    finally:
        engine.close()


def test_served_over_the_openai_endpoint(addon: Path) -> None:
    """Every voice pack is a served voice, `kokoro:PACK`, and so is a blend `kokoro:A+B`; an unknown pack is
    a 400 naming `voice`."""
    from tests.test_server import in_process_server
    from tts_neuron.server import Engine

    engine = Engine([addon])
    try:
        assert engine.load(), engine.load_error
        with in_process_server(engine) as url:
            voices = httpx.get(url + "/v1/audio/voices", timeout=10).json()
            assert {f"kokoro:{pack}" for pack in PACKS} <= {entry["id"] for entry in voices["voices"]}
            body = {"model": "tts-1", "input": SHORT, "voice": "kokoro:af_sky", "response_format": "pcm"}
            response = httpx.post(url + "/v1/audio/speech", json=body, timeout=120)
            assert response.status_code == 200 and len(response.content) > 0
            blend = httpx.post(
                url + "/v1/audio/speech", json={**body, "voice": "kokoro:af_bella+af_sky"}, timeout=60
            )
            assert blend.status_code == 200 and blend.content != response.content
            bad = httpx.post(url + "/v1/audio/speech", json={**body, "voice": "kokoro:af_nobody"}, timeout=30)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "voice"
    finally:
        engine.close()


@pytest.fixture(scope="module")
def compiled(addon: Path) -> Iterator[Path]:
    """The addon's fixed-shape networks compiled for the CPU target."""
    assert main(["compile", "--addon", str(addon), "--target", "cpu"]) == 0
    yield addon


@pytest.mark.slow
def test_compiled_stack_equals_the_dynamic_one(compiled: Path, voice: tts_neuron.Voice) -> None:
    fixed = tts_neuron.load(compiled, stack="neuron", target="cpu")
    for pack in ("af_heart", "af_sky"):
        want = voice.synthesize(TEXT, speaker=pack, seed=5)
        got = fixed.synthesize(TEXT, speaker=pack, seed=5)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_check_passes_every_network_at_every_bucket(addon: Path) -> None:
    from tts_neuron.check import check_addon

    report = check_addon(addon, progress=False)
    assert report.ok, [(c.network, c.bucket, c.error) for c in report.buckets if not c.ok]
    assert {(c.network, c.bucket) for c in report.buckets} == {
        ("encoders", 16),
        ("encoders", 32),
        ("decoder", 16),
        ("decoder", 32),
    }
