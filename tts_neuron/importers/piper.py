"""Piper voices (`VOICE.onnx` + `VOICE.onnx.json`) into our VITS network, stored as safetensors.

Only the ONNX file's initializers are read, never its graph: the graph draws random numbers and has
dynamic shapes, so running it is Piper's job, not ours. Most initializers keep their checkpoint names. The
exporter folds the weight-normed convolutions of the flow into anonymous constants (`onnx::Conv_N`),
names the text embedding after the graph input `sid`, and folds the duration predictor's affine flow into
`exp(-logs)`; those are recovered from the node that consumes them, whose scope is the module path
(`/flow/flows.0/enc/in_layers.0/Conv` -> `flow.flows.0.enc.in_layers.0.weight`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tts_neuron.backends.manifest import sha256_file
from tts_neuron.errors import AddonError
from tts_neuron.importers import read_json_object
from tts_neuron.models.vits import Vits

_INPUT_SLOT = {"Conv": {1: "weight", 2: "bias"}, "Gather": {0: "weight"}, "Exp": {0: "logs"}}


def read_config(path: Path) -> dict[str, Any]:
    """The voice's JSON, with the fields the importer needs checked (file and field in every error)."""
    config = read_json_object(path)
    ids = config.get("phoneme_id_map")
    if not isinstance(ids, dict) or not ids:
        raise AddonError(f"{path}: phoneme_id_map: missing or not an object")
    for phoneme, value in ids.items():
        if not (isinstance(value, list) and value and all(isinstance(i, int) and i >= 0 for i in value)):
            raise AddonError(f"{path}: phoneme_id_map.{phoneme}: expected a list of non-negative ids")
    for key in ("num_symbols", "num_speakers"):
        if key in config and not (isinstance(config[key], int) and config[key] > 0):
            raise AddonError(f"{path}: {key}: expected a positive integer")
    rate = config.get("audio", {}).get("sample_rate") if isinstance(config.get("audio"), dict) else None
    if not (isinstance(rate, int) and rate > 0):
        raise AddonError(f"{path}: audio.sample_rate: missing or not a positive integer")
    return config


Users = dict[str, list[tuple[str, str, int]]]
ConvAttributes = dict[str, dict[str, int]]


def _initializers(path: Path) -> tuple[dict[str, torch.Tensor], Users, ConvAttributes]:
    """Initializers by name; for each, its consumers as (op type, node name, input slot); and the dilation
    and stride of every convolution weight (hyper-parameters that do not show in the weights' shapes)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, ... for a bad file
        raise AddonError(
            f"{path}: not a readable ONNX file: {str(err).splitlines()[0] if str(err) else err}"
        ) from None
    tensors = {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in model.graph.initializer
    }
    if not tensors:
        raise AddonError(f"{path}: graph.initializer: no weights in this ONNX file")
    users: Users = {}
    conv: ConvAttributes = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if name in tensors:
                users.setdefault(name, []).append((node.op_type, node.name, slot))
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            conv[node.input[1]] = {
                a.name: a.ints[0] for a in node.attribute if a.name in ("dilations", "strides")
            }
    return tensors, users, conv


def _module_path(node_name: str) -> str:
    """'/flow/flows.0/enc/in_layers.0/Conv' -> 'flow.flows.0.enc.in_layers.0'."""
    return ".".join(node_name.strip("/").split("/")[:-1])


def hyperparameters(
    tensors: dict[str, torch.Tensor], conv: ConvAttributes, config: dict[str, Any], path: Path
) -> dict[str, Any]:
    """The Vits constructor arguments, read from the weights' shapes (the JSON does not hold them)."""

    def need(name: str) -> torch.Tensor:
        if name not in tensors:
            raise AddonError(f"{path}: graph.initializer: '{name}' not found; is this a Piper VITS voice?")
        return tensors[name]

    ups = sorted(
        (int(name.split(".")[2]), t)
        for name, t in tensors.items()
        if name.startswith("dec.ups.") and name.endswith(".weight")
    )
    if not ups:
        raise AddonError(f"{path}: graph.initializer: no 'dec.ups.*.weight'; is this a Piper VITS voice?")
    kernels = [t.shape[2] for _, t in ups]
    hop = config.get("audio", {}).get("hop_length")
    blocks = {n for n in tensors if n.startswith("dec.resblocks.")}
    n_kernels = max(1, len({n.split(".")[2] for n in blocks}) // len(ups))
    kind = "1" if any(".convs1." in n for n in blocks) else "2"
    convs = "convs1" if kind == "1" else "convs"
    resblock_kernels = [need(f"dec.resblocks.{j}.{convs}.0.weight").shape[2] for j in range(n_kernels)]
    # Dilations do not show in the shapes: each comes from the attribute of the Conv node using the weight.
    per_block = [
        sum(1 for n in blocks if re.fullmatch(rf"dec\.resblocks\.{j}\.{convs}\.\d+\.weight", n))
        for j in range(n_kernels)
    ]
    dilations = [
        [conv.get(f"dec.resblocks.{j}.{convs}.{i}.weight", {}).get("dilations", 1) for i in range(count)]
        for j, count in enumerate(per_block)
    ]
    rates = [conv.get(f"dec.ups.{i}.weight", {}).get("strides", k // 2) for i, k in enumerate(kernels)]
    if isinstance(hop, int) and math.prod(rates) != hop:
        raise AddonError(f"{path}: audio.hop_length {hop} does not match the generator's upsampling {rates}")
    emb = need("sid") if "sid" in tensors and "enc_p.emb.weight" not in tensors else need("enc_p.emb.weight")
    n_speakers = int(config.get("num_speakers", 1))
    gin = tensors["emb_g.weight"].shape[1] if "emb_g.weight" in tensors else 0
    if (n_speakers > 1) != bool(gin):
        raise AddonError(
            f"{path}: num_speakers is {n_speakers} but the graph has {'a' if gin else 'no'} speaker embedding"
        )
    if "num_symbols" in config and config["num_symbols"] != emb.shape[0]:
        raise AddonError(
            f"{path}: num_symbols is {config['num_symbols']} but the graph embeds {emb.shape[0]} symbols"
        )
    return {
        "n_vocab": emb.shape[0],
        "n_speakers": n_speakers,
        "gin_channels": gin,
        "inter_channels": need("enc_p.proj.weight").shape[0] // 2,
        "hidden_channels": emb.shape[1],
        "filter_channels": need("enc_p.encoder.ffn_layers.0.conv_1.weight").shape[0],
        "n_heads": emb.shape[1] // need("enc_p.encoder.attn_layers.0.emb_rel_k").shape[2],
        "n_layers": len({n.split(".")[3] for n in tensors if n.startswith("enc_p.encoder.attn_layers.")}),
        "kernel_size": need("enc_p.encoder.ffn_layers.0.conv_1.weight").shape[2],
        "resblock": kind,
        "resblock_kernel_sizes": resblock_kernels,
        "resblock_dilation_sizes": dilations,
        "upsample_rates": rates,
        "upsample_initial_channel": need("dec.conv_pre.weight").shape[0],
        "upsample_kernel_sizes": kernels,
    }


def state_dict(
    onnx_path: Path,
    tensors: dict[str, torch.Tensor],
    users: dict[str, list[tuple[str, str, int]]],
    model: Vits,
) -> dict[str, torch.Tensor]:
    """Our network's parameters from the ONNX initializers: by name, else by the consuming node's scope."""
    wanted = model.state_dict()
    found: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name in wanted:
            found[name] = tensor
            continue
        for op, node, slot in users.get(name, []):
            attr = _INPUT_SLOT.get(op, {}).get(slot)
            if attr is None:
                continue
            key = f"{_module_path(node)}.{attr}"
            # the affine flow's constant is -logs (the exporter folded exp(-logs)'s negation)
            found[key] = -tensor if op == "Exp" else tensor
    missing = [k for k in wanted if k not in found]
    if missing:
        raise AddonError(
            f"{onnx_path}: graph.initializer: cannot map {len(missing)} parameters by name or node scope "
            f"(first: {', '.join(missing[:3])}); "
            "voices exported without node scopes (torch 1.x) are not supported"
        )
    bad = [k for k in wanted if found[k].shape != wanted[k].shape]
    if bad:
        k = bad[0]
        raise AddonError(
            f"{onnx_path}: {k}: shape {list(found[k].shape)} where {list(wanted[k].shape)} was expected"
        )
    return {k: found[k].to(torch.float32).contiguous() for k in wanted}


def import_voice(onnx_path: Path, config_path: Path | None, out: Path) -> Path:
    """Write `out/vits.safetensors` and `out/piper-voice.json`; returns the JSON's path."""
    config_path = config_path or onnx_path.with_name(onnx_path.name + ".json")
    config = read_config(config_path)
    tensors, users, conv = _initializers(onnx_path)
    hyper = hyperparameters(tensors, conv, config, onnx_path)
    model = Vits(**hyper)
    params = state_dict(onnx_path, tensors, users, model)
    for name, tensor in params.items():
        if not torch.isfinite(tensor).all():
            raise AddonError(f"{onnx_path}: {name}: holds NaN or infinity")
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "vits.safetensors"
    save_file(params, str(weights))
    inference = config.get("inference", {})
    manifest = {
        "architecture": "Vits",
        "config": hyper,
        "parameters": weights.name,
        "sha256": sha256_file(weights),
        "sample_rate": config["audio"]["sample_rate"],
        "espeak_voice": config.get("espeak", {}).get("voice"),
        "language": config.get("language", {}),
        "dataset": config.get("dataset"),
        "license": config.get("license"),
        "speakers": config.get("speaker_id_map", {}),
        "phoneme_id_map": config["phoneme_id_map"],
        "defaults": {
            "noise_scale": float(inference.get("noise_scale", 0.667)),
            "length_scale": float(inference.get("length_scale", 1.0)),
            "noise_w": float(inference.get("noise_w", 0.8)),
        },
        "source": onnx_path.name,
    }
    path = out / "piper-voice.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


class ImportedVoice:
    """An imported Piper voice, spoken a whole sentence at a time with Piper's per-call settings.

    Noise is drawn per call from `seed` (or from fresh entropy without one), outside the networks, so a
    seeded call repeats exactly."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        from tts_neuron.frontend.piper import PiperFrontend

        folder = Path(folder)
        path = folder / "piper-voice.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            weights = folder / manifest["parameters"]
            config, digest = manifest["config"], manifest["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AddonError(f"{path}: not an imported Piper voice: {err}") from None
        if not weights.is_file() or sha256_file(weights) != digest:
            raise AddonError(f"{weights}: missing, or its sha256 differs from {path.name}'s sha256")
        self.model = Vits(**config).eval()
        self.model.load_state_dict(load_file(str(weights)))
        self.manifest = manifest
        self.sample_rate: int = manifest["sample_rate"]
        self.speakers: dict[str, int] = manifest.get("speakers") or {}
        self.frontend = PiperFrontend(
            manifest.get("espeak_voice") or "en-us", manifest["phoneme_id_map"], str(path)
        )

    def speaker_id(self, speaker: str | int | None) -> torch.Tensor | None:
        """A speaker by name or id ([1] int64), None for a single-speaker voice; ValueError otherwise."""
        if self.model.n_speakers <= 1:
            if speaker not in (None, 0):
                raise ValueError("this voice has one speaker")
            return None
        sid = (
            self.speakers.get(speaker, -1)
            if isinstance(speaker, str)
            else (0 if speaker is None else speaker)
        )
        if not 0 <= sid < self.model.n_speakers:
            raise ValueError(
                f"unknown speaker {speaker!r}; known: {', '.join(self.speakers) or self.model.n_speakers}"
            )
        return torch.tensor([sid])

    def synthesize(
        self, text: str, *, length_scale: float | None = None, noise_scale: float | None = None,
        noise_w: float | None = None, speed: float = 1.0, speaker: str | int | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Audio [S] in [-1, 1] for `text`; unset settings take the voice JSON's defaults."""
        defaults = self.manifest["defaults"]
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        scale = (defaults["length_scale"] if length_scale is None else length_scale) / speed
        generator = torch.Generator()
        generator.manual_seed(seed) if seed is not None else generator.seed()
        sid = self.speaker_id(speaker)
        pieces = []
        with torch.inference_mode():
            for ids in self.frontend.sentences(text):
                pieces.append(
                    self.model.infer(
                        torch.tensor([ids]),
                        sid,
                        scale,
                        defaults["noise_scale"] if noise_scale is None else noise_scale,
                        defaults["noise_w"] if noise_w is None else noise_w,
                        generator,
                    )  # fmt: skip
                )
        return torch.cat(pieces)
