"""Kokoro-82M models (`config.json`, the `.pth` weights, `voices/*.pt`) into an addon of our Kokoro networks.

The `.pth` is a torch pickle of one state dict per submodule (`bert`, `bert_encoder`, `predictor`,
`text_encoder`, `decoder`), keys sometimes prefixed `module.` (saved from DataParallel); each voice pack is
a pickled tensor [510, 1, 256] of style vectors, row n-1 for a sentence of n phonemes. Pickles run code,
so both are read only with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers. Weight norm is folded here (weight = g * v / |v|), each bidirectional LSTM's `_reverse`
parameters go to the backward cell of our pack-free `BiLSTM`, and the parameters are split between the
two networks the toolkit runs (`KokoroEncoders`, `KokoroDecoder`); the voice packs become a third
(`KokoroVoices`). The addon (docs/importing.md) holds safetensors only.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tts_neuron.addon import ADDON_FILE, FORMAT_VERSION, load_addon
from tts_neuron.backends.manifest import sha256_file
from tts_neuron.errors import AddonError
from tts_neuron.importers import read_json_object
from tts_neuron.models.kokoro import (
    SAMPLE_RATE,
    KokoroConfig,
    KokoroDecoder,
    KokoroEncoders,
    KokoroVoices,
    samples_per_frame,
)

SUBMODULES = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
_LSTM_KEY = re.compile(r"^(.*\.)?(weight|bias)_(ih|hh)_l0(_reverse)?$")
_UNUSED = re.compile(r"^bert\.(pooler\.|embeddings\.position_ids$)")  # ALBERT's pooler, and a buffer
PAD_SYMBOL = "<pad>"
TOKEN_BUCKETS = [32, 64, 128, 256, 512]
"""Token buckets (Kokoro's two 0 ids included): ALBERT's 512 positions are Kokoro's own limit."""
FRAME_BUCKETS = [64, 128, 256, 512, 1024, 2048]
"""Frame-count buckets of the whole-sentence decoder (40 frames a second): up to 51 s per piece."""
BATCH_SIZES = [1, 2, 4, 8]
PREFERRED_DEFAULT = "af_heart"
"""Kokoro-FastAPI's default voice, the addon's default speaker when it has that pack."""


def read_config(path: Path) -> dict[str, Any]:
    """Kokoro's config.json, with the fields the network is built from checked."""
    config = read_json_object(path)
    for name in ("n_token", "hidden_dim", "style_dim", "n_layer", "max_dur", "text_encoder_kernel_size"):
        if not (isinstance(config.get(name), int) and config[name] > 0):
            raise AddonError(f"{path}: {name}: missing or not a positive integer")
    for name in ("plbert", "istftnet"):
        if not isinstance(config.get(name), dict):
            raise AddonError(f"{path}: {name}: missing or not an object")
    vocab = config.get("vocab")
    if not (
        isinstance(vocab, dict)
        and vocab
        and all(isinstance(k, str) and len(k) == 1 for k in vocab)
        and all(isinstance(v, int) and 0 < v < config["n_token"] for v in vocab.values())
        and len(set(vocab.values())) == len(vocab)
    ):
        raise AddonError(f"{path}: vocab: expected single symbols mapped to distinct ids in 1..n_token-1")
    return config


def _load_pickle(path: Path) -> Any:
    """torch.load with weights_only=True; any failure (code in the pickle, a broken file) is one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AddonError(f"{path}: refused: not plain tensors ({first})") from None
    except Exception as err:  # noqa: BLE001 - zipfile, EOF, OSError, ... from a truncated or foreign file
        raise AddonError(f"{path}: not a readable torch file: {type(err).__name__}: {err}") from None


def _fold(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold weight norm (`X.weight_g`, `X.weight_v`) into `X.weight` and map LSTM parameter names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("weight_v"):
            continue
        if key.endswith("weight_g"):
            stem = key[: -len("weight_g")]
            v = state.get(stem + "weight_v")
            if v is None or v.dim() != value.dim():
                raise ValueError(f"{key} has no matching {stem}weight_v")
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))  # over all dims but 0
            out[stem + "weight"] = value * v / norm
            continue
        match = _LSTM_KEY.match(key)
        if match:
            prefix, kind, which, reverse = match.groups()
            key = f"{prefix or ''}{'backward_cell' if reverse else 'forward_cell'}.{kind}_{which}"
        out[key] = value
    return out


def load_weights(path: Path, config: KokoroConfig) -> tuple[KokoroEncoders, KokoroDecoder]:
    """Our two networks with the checkpoint's parameters; a missing, extra or misshapen tensor is one line
    naming the file, the submodule and the key."""
    checkpoint = _load_pickle(path)
    if not isinstance(checkpoint, dict) or not set(SUBMODULES) <= set(checkpoint):
        raise AddonError(f"{path}: expected a dict of state dicts for {', '.join(SUBMODULES)}")
    networks = (KokoroEncoders(**config.encoder_config()), KokoroDecoder(**config.decoder_config()))
    targets = {key: value for network in networks for key, value in network.state_dict().items()}
    flat: dict[str, torch.Tensor] = {}
    for name in SUBMODULES:
        state = checkpoint[name]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AddonError(f"{path}: {name}: expected a state dict of tensors")
        try:
            folded = _fold({str(k).removeprefix("module."): v for k, v in state.items()})
        except ValueError as err:
            raise AddonError(f"{path}: {name}: {err}") from None
        state = {f"{name}.{k}": v.float() for k, v in folded.items()}
        state = {k: v for k, v in state.items() if not _UNUSED.match(k)}
        wanted = {k for k in targets if k.startswith(f"{name}.")}
        missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            what = what.replace(f" {name}.", " ", 1)
            raise AddonError(f"{path}: {name}: {what} ({len(missing)} missing, {len(extra)} unexpected)")
        for key, value in state.items():
            if value.shape != targets[key].shape:
                raise AddonError(
                    f"{path}: {key}: shape {list(value.shape)}, expected {list(targets[key].shape)}"
                )
            if not bool(torch.isfinite(value).all()):
                raise AddonError(f"{path}: {key}: holds NaN or infinity")
        flat.update(state)
    for network in networks:
        network.load_state_dict({k: flat[k] for k in network.state_dict()})
    return networks[0].eval(), networks[1].eval()


def load_voice(path: Path, style_dim: int) -> torch.Tensor:
    """A voice pack: style rows [rows, 2 * style_dim] (Kokoro's [rows, 1, 256] squeezed)."""
    pack = _load_pickle(path)
    if (
        not isinstance(pack, torch.Tensor)
        or pack.dim() not in (2, 3)
        or pack.shape[-1] != 2 * style_dim
        or (pack.dim() == 3 and pack.shape[1] != 1)
        or pack.shape[0] < 1
    ):
        shape = list(pack.shape) if isinstance(pack, torch.Tensor) else type(pack).__name__
        raise AddonError(f"{path}: expected a voice pack tensor [rows, 1, {2 * style_dim}], got {shape}")
    pack = pack.reshape(pack.shape[0], -1).float()
    if not bool(torch.isfinite(pack).all()):
        raise AddonError(f"{path}: holds NaN or infinity")
    return pack


def symbols(vocab: dict[str, int], n_token: int) -> list[str]:
    """The addon's symbol table: Kokoro's id i is symbols[i]; 0 is the pad (and Kokoro's boundary), ids
    the vocab does not use are unique placeholders."""
    table = [PAD_SYMBOL, *(f"<unused {i}>" for i in range(1, n_token))]
    for symbol, i in vocab.items():
        table[i] = symbol
    return table


def _weights_file(model: Path) -> Path:
    found = sorted(model.glob("*.pth"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise AddonError(f"{model}: expected one .pth weights file (Kokoro's layout), found {names}")
    return found[0]


def _voice_packs(model: Path, style_dim: int, default: str | None) -> tuple[list[str], torch.Tensor]:
    """Every voices/*.pt as (names, packs [V, rows, 2S]), the default speaker first."""
    files = sorted((model / "voices").glob("*.pt"))
    if not files:
        raise AddonError(f"{model / 'voices'}: no voice packs (*.pt); Kokoro's layout has voices/NAME.pt")
    packs = {path.stem: load_voice(path, style_dim) for path in files}
    for name in packs:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise AddonError(f"{model / 'voices' / name}.pt: a voice name is letters, digits and _.- only")
    rows = {name: pack.shape[0] for name, pack in packs.items()}
    if len(set(rows.values())) != 1:
        raise AddonError(f"{model / 'voices'}: voice packs have different row counts: {rows}")
    default = default or (PREFERRED_DEFAULT if PREFERRED_DEFAULT in packs else next(iter(packs)))
    if default not in packs:
        raise AddonError(f"{model / 'voices'}: no voice pack '{default}'; it has {', '.join(packs)}")
    names = [default, *(name for name in packs if name != default)]
    return names, torch.stack([packs[name] for name in names])


def _save(network: nn.Module, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return sha256_file(path)


def import_model(
    model: Path,
    out: Path,
    name: str = "kokoro",
    default_voice: str | None = None,
    language: str = "en-us",
    token_buckets: list[int] | None = None,
    frame_buckets: list[int] | None = None,
    batch_sizes: list[int] | None = None,
) -> Path:
    """Write an addon for the Kokoro model in folder `model` to `out`; returns its addon.json. Every voice
    pack becomes a speaker (the default one first); the buckets and batch sizes are what `compile` builds."""
    raw = read_config(model / "config.json")
    try:
        config = KokoroConfig.from_json(raw)
    except (KeyError, TypeError) as err:
        raise AddonError(f"{model / 'config.json'}: {err}") from None
    speakers, packs = _voice_packs(model, config.style_dim, default_voice)  # small files first
    encoders, decoder = load_weights(_weights_file(model), config)
    voices = KokoroVoices(len(speakers), packs.shape[1], config.style_dim)
    voices.packs.data.copy_(packs)
    sizes = batch_sizes or BATCH_SIZES
    hop = samples_per_frame(config.istftnet)
    networks = {
        "encoders": {
            "architecture": "KokoroEncoders",
            "role": "encoder",
            "inputs": ["tokens", "token_mask", "style"],
            "outputs": ["durations", "prosody", "text_features"],
            "config": config.encoder_config(),
            "parameters": "networks/encoders.safetensors",
            "sha256": _save(encoders, out / "networks" / "encoders.safetensors"),
            "buckets": token_buckets or TOKEN_BUCKETS,
            "batch_sizes": sizes,
        },
        "decoder": {
            "architecture": "KokoroDecoder",
            "role": "decoder",
            "inputs": ["frame_mask", "prosody", "text_features", "style", "phase0", "noise"],
            "outputs": ["audio"],
            "config": config.decoder_config(),
            "parameters": "networks/decoder.safetensors",
            "sha256": _save(decoder, out / "networks" / "decoder.safetensors"),
            "buckets": frame_buckets or FRAME_BUCKETS,
            "batch_sizes": sizes,
            "compiler_args": {"neuron": ["--auto-cast", "none"]},
        },
        "voices": {
            "architecture": "KokoroVoices",
            "role": "encoder",
            "inputs": ["speaker", "phonemes"],
            "outputs": ["style"],
            "config": {"voices": len(speakers), "rows": packs.shape[1], "style_dim": config.style_dim},
            "parameters": "networks/voices.safetensors",
            "sha256": _save(voices, out / "networks" / "voices.safetensors"),
        },
    }

    def stack(encoders_block: str, decoder_block: str) -> list[dict[str, Any]]:
        return [
            {
                "type": "StreamablePipeline",
                "sequence_block": {"type": encoders_block, "network": "encoders"},
                "streamable_block": {"type": decoder_block, "network": "decoder"},
            }
        ]

    addon = {
        "format": FORMAT_VERSION,
        "name": name,
        "description": f"Kokoro model imported from {model.name} ({len(speakers)} voice packs)",
        "trained": True,
        "language": language,
        "frontend": {"type": "kokoro"},
        "license": "Apache-2.0 (Kokoro-82M's weights; check the model card of what you imported)",
        "speakers": {speaker: i for i, speaker in enumerate(speakers)},
        "audio": {
            "sample_rate": SAMPLE_RATE,
            "n_fft": 4 * hop,
            "hop_length": hop,
            "win_length": 4 * hop,
            "n_mels": 80,
            "f_min": 0.0,
            "f_max": SAMPLE_RATE / 2,
            "log_floor": 1e-5,
        },
        "symbols": symbols(raw["vocab"], config.n_token),
        "networks": networks,
        "stacks": {
            "cpu": stack("StyledEncoders", "SentenceDecoder"),
            "neuron": stack("NeuronStyledEncoders", "PaddedSentenceDecoder"),
        },
        "default_stack": "cpu",
    }
    path = out / ADDON_FILE
    path.write_text(json.dumps(addon, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_addon(out)  # what we wrote must read back
    return path
