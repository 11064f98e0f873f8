"""Kokoro import: our networks against the kokoro package's own KModel on the same (perturbed) weights.

The fixture is built by KModel itself from a written config (the package ships none and downloads its
weights; an empty state dict keeps it offline), every tensor perturbed so that a mapping error cannot hide
behind library init (zeros, ones), and written in Kokoro's layout: config.json, the .pth of per-submodule
state dicts (`module.`-prefixed, as the published file), voices/*.pt. The default suite uses a reduced
text side (the decoder's channel counts are fixed by Kokoro's code); the full 82M shape is `slow`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tts_neuron.blocks.acoustic import upsample
from tts_neuron.errors import AddonError
from tts_neuron.importers.kokoro import SUBMODULES, load_voice, load_weights, read_config
from tts_neuron.models.kokoro import (
    HARMONICS,
    KokoroConfig,
    KokoroDecoder,
    KokoroEncoders,
    KokoroVoices,
    source_noise,
)

Networks = tuple[KokoroEncoders, KokoroDecoder]

kokoro = pytest.importorskip("kokoro", reason="the kokoro extra is not installed")

VOCAB = {c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ,.!?ˈˌːəɪʊ")}
ISTFTNET = {
    "upsample_kernel_sizes": [20, 12],
    "upsample_rates": [10, 6],
    "gen_istft_hop_size": 5,
    "gen_istft_n_fft": 20,
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "resblock_kernel_sizes": [3, 7, 11],
    "upsample_initial_channel": 512,
}
FULL: dict[str, Any] = {  # Kokoro-82M's published config.json, vocab aside
    "istftnet": ISTFTNET,
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
    "vocab": VOCAB,
}
PUBLISHED_VOCAB = json.loads(
    r"""{";": 1, ":": 2, ",": 3, ".": 4, "!": 5, "?": 6, "\u2014": 9, "\u2026": 10, "\"": 11, "(": 12,
    ")": 13, "\u201c": 14, "\u201d": 15, " ": 16, "\u0303": 17, "\u02a3": 18, "\u02a5": 19, "\u02a6": 20,
    "\u02a8": 21, "\u1d5d": 22, "\uab67": 23, "A": 24, "I": 25, "O": 31, "Q": 33, "S": 35, "T": 36,
    "W": 39, "Y": 41, "\u1d4a": 42, "a": 43, "b": 44, "c": 45, "d": 46, "e": 47, "f": 48, "h": 50,
    "i": 51, "j": 52, "k": 53, "l": 54, "m": 55, "n": 56, "o": 57, "p": 58, "q": 59, "r": 60, "s": 61,
    "t": 62, "u": 63, "v": 64, "w": 65, "x": 66, "y": 67, "z": 68, "\u0251": 69, "\u0250": 70,
    "\u0252": 71, "\u00e6": 72, "\u03b2": 75, "\u0254": 76, "\u0255": 77, "\u00e7": 78, "\u0256": 80,
    "\u00f0": 81, "\u02a4": 82, "\u0259": 83, "\u025a": 85, "\u025b": 86, "\u025c": 87, "\u025f": 90,
    "\u0261": 92, "\u0265": 99, "\u0268": 101, "\u026a": 102, "\u029d": 103, "\u026f": 110,
    "\u0270": 111, "\u014b": 112, "\u0273": 113, "\u0272": 114, "\u0274": 115, "\u00f8": 116,
    "\u0278": 118, "\u03b8": 119, "\u0153": 120, "\u0279": 123, "\u027e": 125, "\u027b": 126,
    "\u0281": 128, "\u027d": 129, "\u0282": 130, "\u0283": 131, "\u0288": 132, "\u02a7": 133,
    "\u028a": 135, "\u028b": 136, "\u028c": 138, "\u0263": 139, "\u0264": 140, "\u03c7": 142,
    "\u028e": 143, "\u0292": 147, "\u0294": 148, "\u02c8": 156, "\u02cc": 157, "\u02d0": 158,
    "\u02b0": 162, "\u02b2": 164, "\u2193": 169, "\u2192": 171, "\u2197": 172, "\u2198": 173,
    "\u1d7b": 177}"""
)
"""Kokoro-82M v1.0's `vocab` (config.json): misaki's symbols to token ids."""
REDUCED = {  # a narrow text side; the decoder's channel counts are fixed by Kokoro's code
    **FULL,
    "n_layer": 1,
    "plbert": {
        **FULL["plbert"],
        "hidden_size": 64,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
    },
}
IDS = torch.tensor([[0, 5, 9, 12, 3, 27, 30, 8, 1, 14, 0]])


def write_model(
    root: Path,
    config: dict[str, Any],
    seed: int = 0,
    voices: tuple[str, ...] = ("af_test",),
    frames_per_token: float | None = None,
) -> Any:
    """KModel from `config`, every tensor perturbed, written in Kokoro's layout under root. With
    `frames_per_token`, the duration head's bias is set so that tokens last about that long (random
    weights give about 25 frames a token; the frame side's cost grows with the frames)."""
    from kokoro import KModel

    root.mkdir(parents=True, exist_ok=True)
    torch.save({}, root / "empty.pth")
    torch.manual_seed(seed)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(root / "empty.pth")).eval()
    (root / "empty.pth").unlink()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
            if p.dim() == 1 or "alpha" in name:  # gains, biases, norms, Snake's alpha: away from 0 and 1
                p.add_(torch.rand(p.shape, generator=g) * 0.2 - 0.1)
        if frames_per_token is not None:
            share = frames_per_token / config["max_dur"]  # each of max_dur sigmoids
            model.predictor.duration_proj.linear_layer.bias.fill_(math.log(share / (1 - share)))
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.save(
        {k: {f"module.{n}": v for n, v in getattr(model, k).state_dict().items()} for k in SUBMODULES},
        root / "kokoro-v1_0.pth",
    )
    (root / "voices").mkdir(exist_ok=True)
    for name in voices:
        torch.save(torch.randn(510, 1, 256, generator=g), root / "voices" / f"{name}.pt")
    return model


def reference_noise(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws KModel's SineGen makes after torch.manual_seed(seed), as our inputs: the overtones'
    initial phases, and the additive noise (randn_like of a channel-strided [1, L, 9] tensor)."""
    torch.manual_seed(seed)
    phase0 = torch.rand(1, HARMONICS)[:, 1:]
    noise = torch.empty(1, HARMONICS, frames * 600).transpose(1, 2).normal_().transpose(1, 2)
    return phase0, noise


def decode(
    decoder: KokoroDecoder,
    durations: torch.Tensor,
    prosody: torch.Tensor,
    text: torch.Tensor,
    style: torch.Tensor,
    phase0: torch.Tensor,
    noise: torch.Tensor,
    frames: int | None = None,
) -> torch.Tensor:
    """The frame side of rows padded to `frames` (default: the longest row): durations [B, N] (0 past a
    row's tokens), prosody [B, N, C + S], text [B, N, C] -> audio [B, frames * 600]."""
    frames = frames or int(durations.sum(-1).max())
    rows = []
    for i in range(durations.shape[0]):
        ends = durations[i].cumsum(0)
        total = int(ends[-1])
        mask = (torch.arange(frames) < total).float()
        aligned = [torch.zeros(frames, x.shape[-1]) for x in (prosody, text)]
        aligned[0][:total], aligned[1][:total] = (upsample(x[i], ends, 0, total) for x in (prosody, text))
        rows.append((mask, *aligned))
    inputs = [torch.stack(column) for column in zip(*rows, strict=True)]
    with torch.no_grad():
        return decoder(*inputs, style, phase0, noise)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Networks, Path]:
    root = tmp_path_factory.mktemp("kokoro")
    reference = write_model(root, REDUCED)
    ours = load_weights(root / "kokoro-v1_0.pth", KokoroConfig.from_json(read_config(root / "config.json")))
    return reference, ours, root


def _reference_durations(reference: Any, ids: torch.Tensor, ref_s: torch.Tensor) -> torch.Tensor:
    n = ids.shape[1]
    lengths, text_mask = torch.tensor([n]), torch.zeros(1, n, dtype=torch.bool)
    d_en = reference.bert_encoder(reference.bert(ids, attention_mask=(~text_mask).int())).transpose(-1, -2)
    d = reference.predictor.text_encoder(d_en, ref_s[:, 128:], lengths, text_mask)
    x, _ = reference.predictor.lstm(d)
    return torch.sigmoid(reference.predictor.duration_proj(x)).sum(-1)


def _assert_equal_to_kmodel(reference: Any, ours: Networks, ref_s: torch.Tensor, speed: float) -> None:
    encoders, decoder = ours
    with torch.no_grad():
        expected = _reference_durations(reference, IDS, ref_s)
        durations, d, t_en = encoders(IDS, torch.ones_like(IDS, dtype=torch.float32), ref_s)
        assert torch.allclose(durations, expected, atol=1e-4, rtol=1e-5)  # before rounding
        # The library's source STFT is torch.stft, whose angle at exactly-symmetric frames is +-pi by the
        # sign of rounding noise; ours is the same modulo 2 pi (test_source_spectrum), so the library runs
        # with our real-only spectrum here and everything else its own.
        generator = reference.decoder.generator
        generator.stft.transform = lambda x: decoder.decoder.generator.spectrum(x).split(11, dim=1)
        torch.manual_seed(7)
        audio, pred_dur = reference.forward_with_tokens(IDS, ref_s, speed)
        del generator.stft.transform
        rounded = torch.round(durations[0] / speed).clamp(min=1).long()
        assert torch.equal(rounded, pred_dur)
        frames = int(rounded.sum())
        phase0, noise = reference_noise(frames, 7)
        ours_audio = decode(decoder, rounded[None], d, t_en, ref_s, phase0, noise)[0]
    assert ours_audio.shape == audio.shape == (frames * 600,)
    assert (ours_audio - audio).abs().max() < 1e-4


def test_import_equals_kmodel(reduced: tuple[Any, Networks, Path]) -> None:
    reference, ours, root = reduced
    style = load_voice(root / "voices" / "af_test.pt", 128)
    _assert_equal_to_kmodel(reference, ours, style[IDS.shape[1] - 3 : IDS.shape[1] - 2], speed=8.0)


def test_padded_tokens_equal_unpadded(reduced: tuple[Any, Networks, Path]) -> None:
    """Two sentences of different lengths in one padded batch equal each alone (masked bi-LSTMs, ALBERT)."""
    encoders = reduced[1][0]
    ref_s = torch.randn(2, 256, generator=torch.Generator().manual_seed(3))
    short = IDS[:, :6]
    batch = torch.zeros(2, IDS.shape[1], dtype=torch.long)
    batch[0], batch[1, :6] = IDS[0], short[0]
    mask = (torch.arange(IDS.shape[1]) < torch.tensor([[IDS.shape[1]], [6]])).float()
    with torch.no_grad():
        dur_b, d_b, t_b = encoders(batch, mask, ref_s)
        for row, ids in ((0, IDS), (1, short)):
            n = ids.shape[1]
            dur, d, t_en = encoders(ids, torch.ones(1, n), ref_s[row : row + 1])
            torch.testing.assert_close(dur_b[row, :n], dur[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(d_b[row, :n], d[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(t_b[row, :n], t_en[0], atol=1e-5, rtol=1e-5)
        assert torch.all(dur_b[1, 6:] == 0)


def test_source_spectrum_and_inverse_stft(reduced: tuple[Any, Networks, Path]) -> None:
    """The real-only STFT equals torch.stft (angle modulo 2 pi), the real-only iSTFT torch.istft."""
    generator = reduced[1][1].decoder.generator
    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(4))
    window = torch.hann_window(20)
    spec = torch.stft(x, 20, 5, 20, window=window, return_complex=True)
    ours = generator.spectrum(x)
    torch.testing.assert_close(ours[:, :11], spec.abs(), atol=1e-5, rtol=1e-5)
    wrapped = torch.remainder(ours[:, 11:] - spec.angle() + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-4
    magnitude, phase = torch.rand(2, 11, 40) * 3, torch.randn(2, 11, 40)
    expected = torch.istft(magnitude * torch.exp(1j * phase), 20, 5, 20, window=window)
    real, imag = (magnitude * phase.cos()).transpose(1, 2), (magnitude * phase.sin()).transpose(1, 2)
    audio = generator.istft(real, imag, torch.ones(2, 40))[:, :-5]
    assert (audio - expected).abs().max() < 1e-5


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    path = tmp_path / "kokoro-v1_0.pth"
    torch.save({"bert": Payload()}, path)
    with pytest.raises(AddonError, match=rf"^{path}: refused: not plain tensors") as err:
        load_weights(path, KokoroConfig.from_json(REDUCED))
    assert "\n" not in str(err.value) and not marker.exists()


def test_wrong_shape_and_missing_tensor(reduced: tuple[Any, Networks, Path], tmp_path: Path) -> None:
    root = reduced[2]
    checkpoint = torch.load(root / "kokoro-v1_0.pth", weights_only=True)
    checkpoint["bert_encoder"]["module.weight"] = torch.zeros(3, 3)
    torch.save(checkpoint, tmp_path / "shape.pth")
    with pytest.raises(
        AddonError, match=r"shape.pth: bert_encoder.weight: shape \[3, 3\], expected \[512, 64\]$"
    ):
        load_weights(tmp_path / "shape.pth", KokoroConfig.from_json(REDUCED))
    del checkpoint["bert_encoder"]["module.weight"]
    torch.save(checkpoint, tmp_path / "missing.pth")
    with pytest.raises(
        AddonError, match=r"missing.pth: bert_encoder: missing weight \(1 missing, 0 unexpected\)$"
    ):
        load_weights(tmp_path / "missing.pth", KokoroConfig.from_json(REDUCED))


def test_bad_voice_packs(tmp_path: Path) -> None:
    with pytest.raises(AddonError, match=r"af_none.pt: not a readable torch file: FileNotFoundError"):
        load_voice(tmp_path / "af_none.pt", 128)
    torch.save(torch.zeros(510, 1, 100), tmp_path / "af_bad.pt")
    with pytest.raises(AddonError, match=r"af_bad.pt: expected a voice pack tensor \[rows, 1, 256\], got"):
        load_voice(tmp_path / "af_bad.pt", 128)


@pytest.mark.slow
def test_full_82m_import_equals_kmodel(tmp_path: Path) -> None:
    reference = write_model(tmp_path, FULL, seed=2)
    ours = load_weights(tmp_path / "kokoro-v1_0.pth", KokoroConfig.from_json(FULL))
    assert sum(p.numel() for network in ours for p in network.parameters()) == sum(
        p.numel()
        for k in SUBMODULES
        for n, p in getattr(reference, k).named_parameters()
        if "pooler" not in n
    ) - sum(p.numel() for n, p in reference.named_parameters() if n.endswith("weight_g"))
    style = load_voice(tmp_path / "voices" / "af_test.pt", 128)
    _assert_equal_to_kmodel(reference, ours, style[IDS.shape[1] - 3 : IDS.shape[1] - 2], speed=8.0)


def _sentence(encoders: KokoroEncoders, ids: torch.Tensor, ref_s: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        durations, d, t_en = encoders(ids, torch.ones_like(ids, dtype=torch.float32), ref_s)
    return torch.round(durations / 8.0).clamp(min=1).long(), d, t_en


def test_frame_bucket_batch_equals_alone(reduced: tuple[Any, Networks, Path]) -> None:
    """Two sentences padded to one frame bucket in one batch each equal their own unpadded decode (masked
    instance norms and LSTM, the source's phase held and its STFT reflected at each row's end)."""
    encoders, decoder = reduced[1]
    ref_s = torch.randn(2, 256, generator=torch.Generator().manual_seed(5))
    rows = [_sentence(encoders, ids, ref_s[i : i + 1]) for i, ids in enumerate((IDS, IDS[:, :5]))]
    bucket, n = 40, IDS.shape[1]
    frames = [int(r[0].sum()) for r in rows]
    assert max(frames) < bucket
    alone, noises = [], []
    for (dur, d, t_en), f, row in zip(rows, frames, range(2), strict=True):
        phase0, noise = source_noise(f, 600, torch.Generator().manual_seed(row))
        noises.append((phase0, torch.nn.functional.pad(noise, (0, (bucket - f) * 600))))
        alone.append(decode(decoder, dur, d, t_en, ref_s[row : row + 1], phase0, noise)[0])
    d_b = torch.zeros(2, n, rows[0][1].shape[-1])
    t_b = torch.zeros(2, n, rows[0][2].shape[-1])
    dur_b = torch.zeros(2, n, dtype=torch.long)
    for i, (dur, d, t_en) in enumerate(rows):
        d_b[i, : d.shape[1]], t_b[i, : t_en.shape[1]], dur_b[i, : dur.shape[1]] = d[0], t_en[0], dur[0]
    phase0 = torch.cat([p for p, _ in noises])
    noise = torch.cat([z for _, z in noises])
    batch = decode(decoder, dur_b, d_b, t_b, ref_s, phase0, noise, bucket)
    for i, f in enumerate(frames):
        assert (batch[i, : f * 600] - alone[i]).abs().max() < 1e-4
        assert torch.all(batch[i, f * 600 :] == 0)


def test_seeded_runs_repeat(reduced: tuple[Any, Networks, Path]) -> None:
    encoders, decoder = reduced[1]
    ref_s = torch.randn(1, 256, generator=torch.Generator().manual_seed(6))
    dur, d, t_en = _sentence(encoders, IDS[:, :4], ref_s)
    f = int(dur.sum())
    runs = []
    for seed in (11, 11, 12):
        phase0, noise = source_noise(f, 600, torch.Generator().manual_seed(seed))
        runs.append(decode(decoder, dur, d, t_en, ref_s, phase0, noise))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.slow
def test_networks_export_for_neuron(reduced: tuple[Any, Networks, Path]) -> None:
    """Both networks export at fixed buckets (in the split-safe form Neuron's trace records) with no
    rejected, random or complex operator."""
    from tts_neuron.check import check_network

    for name, network, bucket in (("encoders", reduced[1][0], 8), ("decoder", reduced[1][1], 8)):
        check = check_network(name, network, bucket, analyze=False)
        assert check.error is None and check.ok, (
            name,
            [o for o in check.operators if o.status == "rejected"],
        )
        assert not any(
            o.name.startswith(("aten::rand", "aten::normal", "aten::bernoulli")) for o in check.operators
        )


def test_voice_style_rows_and_blends() -> None:
    """A pack's row by phoneme count (the last past its end), a blend the packs' mean."""
    voices = KokoroVoices(2, 510, 128)
    voices.packs.data.normal_(generator=torch.Generator().manual_seed(8))
    bella, sky = voices.packs.data
    torch.testing.assert_close(voices(torch.tensor([1.0, 0.0]), 12), bella[11:12])
    torch.testing.assert_close(voices(torch.tensor([1.0, 0.0]), 900), bella[509:510])
    torch.testing.assert_close(voices(torch.tensor([0.5, 0.5]), 30), (bella[29:30] + sky[29:30]) / 2)
