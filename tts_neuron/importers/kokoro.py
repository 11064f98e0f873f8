"""Kokoro-82M models (`config.json`, the `.pth` weights, `voices/*.pt`) into our Kokoro network.

The `.pth` is a torch pickle of one state dict per submodule (`bert`, `bert_encoder`, `predictor`,
`text_encoder`, `decoder`), keys sometimes prefixed `module.` (saved from DataParallel); each voice pack is
a pickled tensor [510, 1, 256] of style vectors, row n-1 for a sentence of n phonemes. Pickles run code,
so both are read only with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers. Weight norm is folded here (weight = g * v / |v|), and each bidirectional LSTM's `_reverse`
parameters go to the backward half of our pack-free `BiLSTM`.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from tts_neuron.errors import AddonError
from tts_neuron.importers import read_json_object
from tts_neuron.models.kokoro import Kokoro, KokoroConfig

SUBMODULES = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
_LSTM_KEY = re.compile(r"^(.*\.)?((?:weight|bias)_(?:ih|hh)_l0)(_reverse)?$")
_UNUSED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")  # ALBERT's pooler, and a buffer


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
    ):
        raise AddonError(f"{path}: vocab: expected an object of single symbols to ids in 1..n_token-1")
    return config


def _load_pickle(path: Path) -> Any:
    """torch.load with weights_only=True; any failure (code in the pickle, a broken file) is one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AddonError(f"{path}: refused: not plain tensors ({first})") from None
    except Exception as err:  # zipfile, EOF, OSError, ... from a truncated or foreign file
        raise AddonError(f"{path}: not a readable torch file: {type(err).__name__}: {err}") from None


def _fold(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold weight norm (`X.weight_g`, `X.weight_v`) into `X.weight` and map LSTM parameter names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("weight_v"):
            continue
        if key.endswith("weight_g"):
            stem = key[: -len("weight_g")]
            v = state[stem + "weight_v"]
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))  # over all dims but 0
            out[stem + "weight"] = value * v / norm
            continue
        match = _LSTM_KEY.match(key)
        if match:
            prefix, name, reverse = match.groups()
            key = f"{prefix or ''}{'backward_lstm' if reverse else 'forward_lstm'}.{name}"
        out[key] = value
    return out


def load_weights(path: Path, config: KokoroConfig) -> Kokoro:
    """Our network with the checkpoint's parameters; a missing, extra or misshapen tensor is one line."""
    checkpoint = _load_pickle(path)
    if not isinstance(checkpoint, dict) or not set(SUBMODULES) <= set(checkpoint):
        raise AddonError(f"{path}: expected a dict of state dicts for {', '.join(SUBMODULES)}")
    model = Kokoro(config)
    for name in SUBMODULES:
        state = checkpoint[name]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AddonError(f"{path}: {name}: expected a state dict of tensors")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v.float() for k, v in _fold(state).items() if not _UNUSED.match(k)}
        target = getattr(model, name).state_dict()
        missing, extra = sorted(set(target) - set(state)), sorted(set(state) - set(target))
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            raise AddonError(f"{path}: {name}: {what} ({len(missing)} missing, {len(extra)} unexpected)")
        for key, value in state.items():
            if value.shape != target[key].shape:
                raise AddonError(
                    f"{path}: {name}.{key}: shape {list(value.shape)}, expected {list(target[key].shape)}"
                )
        getattr(model, name).load_state_dict(state)
    return model.eval()


def load_voice(path: Path, style_dim: int) -> torch.Tensor:
    """A voice pack: style rows [rows, 2 * style_dim] (Kokoro's [rows, 1, 256] squeezed)."""
    pack = _load_pickle(path)
    if not isinstance(pack, torch.Tensor) or pack.dim() not in (2, 3) or pack.shape[-1] != 2 * style_dim:
        shape = list(pack.shape) if isinstance(pack, torch.Tensor) else type(pack).__name__
        raise AddonError(f"{path}: expected a voice pack tensor [rows, 1, {2 * style_dim}], got {shape}")
    return pack.reshape(pack.shape[0], -1).float()
