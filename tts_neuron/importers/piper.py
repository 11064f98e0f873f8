"""Piper voices (`VOICE.onnx` + `VOICE.onnx.json`) into an addon: our VITS networks, stored as safetensors,
and an `addon.json` whose stacks stream, batch and compile them like any voice (docs/importing.md).

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
import unicodedata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tts_neuron.addon import ADDON_FILE, FORMAT_VERSION, check_phoneme_id_map, load_addon
from tts_neuron.backends.manifest import sha256_file
from tts_neuron.errors import AddonError
from tts_neuron.frontend.piper import symbol_table
from tts_neuron.importers import read_json_object
from tts_neuron.models.vits import Vits, generator_radius, network_configs, split_state

_INPUT_SLOT = {"Conv": {1: "weight", 2: "bias"}, "Gather": {0: "weight"}, "Exp": {0: "logs"}}


def read_config(path: Path) -> dict[str, Any]:
    """The voice's JSON, with the fields the importer needs checked (file and field in every error; the
    phoneme map again against the graph's symbol count once the graph is read)."""
    config = read_json_object(path)
    ids = config.get("phoneme_id_map")
    if not isinstance(ids, dict) or not ids:
        raise AddonError(f"{path}: phoneme_id_map: missing or not an object")
    check_phoneme_id_map(ids, None, path, "", _clusters(config, path))
    phoneme_type = config.get("phoneme_type", "espeak")
    if phoneme_type != "espeak":
        raise AddonError(
            f"{path}: phoneme_type: '{phoneme_type}' is not supported; only espeak-ng voices import"
        )
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


TOKEN_BUCKETS = [32, 64, 128, 256, 512]
"""Phoneme ids per sentence piece compiled for the encoder: Piper's layout is about two ids a phoneme, so
512 holds a sentence of about 250 phonemes; longer ones are encoded in pieces cut at a pause or a word."""
FIRST_AUDIO_FRAMES = 8
"""Frames of HiFi-GAN's first window of a sentence (93 ms of audio at 22,050 Hz): the first audio waits
for the encoder, one flow window and this one."""
FLOW_BUCKETS = [88, 128, 192]
"""Window frames of the flow (receptive field 32 each side): a first core of 24 frames (the generator's
first 8 plus its 12 of right context), then 48, 96 and 128 (each in the smallest bucket that holds it)."""
GENERATOR_CORES = [FIRST_AUDIO_FRAMES, 32, 64, 128]
"""Core frames of HiFi-GAN's windows; each bucket is a core plus the generator's receptive field twice
(a core of 16 rides in the 32-frame core's bucket)."""
BATCH_SIZES = [1, 2, 4, 8]
FP32 = {"neuron": ["--auto-cast", "none"]}
"""Every imported network stays fp32 on Neuron until a parity run on inf2 says bf16 keeps Piper's audio."""
SETTING_BOUNDS = {"length_scale": (0.1, 10.0), "noise_scale": (0.0, 2.0), "noise_w": (0.0, 2.0)}
PIPER_DEFAULTS = {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8}


def voice_name(onnx_path: Path) -> str:
    """The addon's name: the voice file's name without `.onnx` (`en_US-lessac-medium`)."""
    name = onnx_path.name.removesuffix(".onnx")
    return re.sub(r"[^\w.+-]", "-", unicodedata.normalize("NFC", name)) or "piper-voice"


def import_voice(
    onnx_path: Path,
    config_path: Path | None,
    out: Path,
    name: str | None = None,
    token_buckets: list[int] | None = None,
    batch_sizes: list[int] | None = None,
) -> Path:
    """Write an addon for a Piper voice to `out` (networks/*.safetensors and addon.json); returns the
    addon.json's path. `token_buckets` and `batch_sizes` are what `compile` builds."""
    config_path = config_path or onnx_path.with_name(onnx_path.name + ".json")
    config = read_config(config_path)
    tensors, users, conv = _initializers(onnx_path)
    hyper = hyperparameters(tensors, conv, config, onnx_path)
    id_map = config["phoneme_id_map"]
    clusters = _clusters(config, config_path)
    check_phoneme_id_map(id_map, hyper["n_vocab"], config_path, "", clusters)
    model = Vits(**hyper)
    params = state_dict(onnx_path, tensors, users, model)
    for key, tensor in params.items():
        if not torch.isfinite(tensor).all():
            raise AddonError(f"{onnx_path}: {key}: holds NaN or infinity")
    configs = network_configs(hyper)
    parts = split_state(params)
    sizes = batch_sizes or BATCH_SIZES
    multi = hyper["n_speakers"] > 1
    speaker = ["speaker"] if multi else []
    radius = generator_radius(
        hyper["resblock"], hyper["resblock_kernel_sizes"], hyper["resblock_dilation_sizes"],
        hyper["upsample_rates"], hyper["upsample_kernel_sizes"],
    )  # fmt: skip
    specs = {
        "encoder": ("VitsEncoder", "encoder", ["tokens", "token_mask", "duration_noise", *speaker],
                    ["prior", "log_durations"], token_buckets or TOKEN_BUCKETS),
        "flow": ("VitsFlow", "decoder", ["frames", "frame_mask", *speaker], ["latent"], FLOW_BUCKETS),
        "generator": ("VitsGenerator", "vocoder", ["latent", "frame_mask", *speaker], ["audio"],
                      [core + 2 * radius for core in GENERATOR_CORES]),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "networks").mkdir(exist_ok=True)
    networks = {}
    for net, (architecture, role, inputs, outputs, buckets) in specs.items():
        path = out / "networks" / f"{net}.safetensors"
        save_file({k: v.contiguous() for k, v in parts[net].items()}, str(path))
        networks[net] = {
            "architecture": architecture,
            "role": role,
            "inputs": inputs,
            "outputs": outputs,
            "config": configs[net],
            "parameters": f"networks/{path.name}",
            "sha256": sha256_file(path),
            "buckets": buckets,
            "batch_sizes": sizes,
            "compiler_args": FP32,
        }
    inference = config.get("inference", {}) if isinstance(config.get("inference"), dict) else {}
    settings = {}
    for key, (low, high) in SETTING_BOUNDS.items():
        value = inference.get(key, PIPER_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise AddonError(f"{config_path}: inference.{key}: expected a number from {low} to {high}")
        settings[key] = {"default": float(value), "min": low, "max": high}
    speakers = _speakers(config, hyper["n_speakers"], config_path) if multi else {}
    audio = config["audio"]
    rate = audio["sample_rate"]
    symbols = symbol_table(id_map)
    symbols += [f"<unused {i}>" for i in range(len(symbols), hyper["n_vocab"])]
    espeak_voice = config.get("espeak", {}).get("voice") if isinstance(config.get("espeak"), dict) else None
    if not isinstance(espeak_voice, str) or not espeak_voice:
        raise AddonError(
            f"{config_path}: espeak.voice: missing; the frontend needs the voice's espeak-ng voice"
        )
    addon = {
        "format": FORMAT_VERSION,
        "name": name or voice_name(onnx_path),
        "description": (
            f"Piper voice {onnx_path.name} ({audio.get('quality', 'unknown quality')}, "
            f"{hyper['n_speakers']} speaker{'s' if multi else ''}), imported by tts-neuron import piper"
        ),
        "trained": True,
        "language": espeak_voice,
        "license": str(config.get("license") or "unknown: check the voice's model card"),
        "dataset": str(config.get("dataset") or "unknown"),
        "about": {
            "source": onnx_path.name,
            "language": config.get("language", {}),
            "quality": audio.get("quality"),
            "piper_version": config.get("piper_version"),
        },
        "audio": {
            "sample_rate": rate,
            "n_fft": 4 * math.prod(hyper["upsample_rates"]),
            "hop_length": math.prod(hyper["upsample_rates"]),
            "win_length": 4 * math.prod(hyper["upsample_rates"]),
            "n_mels": 80,
            "f_min": 0.0,
            "f_max": rate / 2,
            "log_floor": 1e-5,
        },
        "symbols": symbols,
        "frontend": {
            "type": "piper",
            "espeak_voice": espeak_voice,
            "phoneme_id_map": id_map,
            **({"vowel_clusters": clusters} if clusters else {}),
        },
        "settings": settings,
        **({"speakers": speakers} if speakers else {}),
        "networks": networks,
        "stacks": stacks(settings),
        "default_stack": "cpu",
    }
    path = out / ADDON_FILE
    path.write_text(json.dumps(addon, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_addon(out)  # what we wrote must read back
    return path


def _clusters(config: dict[str, Any], path: Path) -> list[Any]:
    clusters = config.get("vowel_clusters") or []
    if not isinstance(clusters, list):
        raise AddonError(f"{path}: vowel_clusters: expected a list of phoneme lists")
    return clusters


def _speakers(config: dict[str, Any], n_speakers: int, path: Path) -> dict[str, int]:
    """Speaker names to ids from `speaker_id_map`; ids it does not name are named by their number."""
    named = config.get("speaker_id_map") or {}
    if not isinstance(named, dict) or not all(
        isinstance(k, str) and k and isinstance(v, int) and 0 <= v < n_speakers for k, v in named.items()
    ):
        raise AddonError(
            f"{path}: speaker_id_map: expected names mapped to ids below num_speakers ({n_speakers})"
        )
    speakers = dict(named)
    for sid in sorted(set(range(n_speakers)) - set(named.values())):
        speakers.setdefault(str(sid), sid)
    return speakers


def stacks(settings: dict[str, dict[str, float]]) -> dict[str, list[dict[str, Any]]]:
    """The dynamic stack (`cpu`, which `--target cuda` runs too) and the fixed-shape one (`neuron`, or
    any target's compiled networks): noise drawn from the sentence's seed, the encoder, Piper's
    durations, the flow in windows with its 32 frames of context each side, then HiFi-GAN in windows
    with its own. The first
    upsampled chunk (56 frames) is the flow's first core (24) plus its right context (32); flow and
    HiFi-GAN are two networks because each then recomputes only its own context (measured: 30% less
    time than one flow+HiFi-GAN network with 44 frames of context, and earlier first audio)."""
    defaults = {key: value["default"] for key, value in settings.items()}

    def stack(encoders: str, decoder: dict[str, Any], vocoder: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "type": "StreamablePipeline",
                "sequence_block": {
                    "type": "SequenceBlockContainer",
                    "blocks": [{"type": "DurationNoise", "noise_w": defaults["noise_w"]}, {"type": encoders}],
                },
                "streamable_block": {
                    "type": "StreamableStack",
                    "stack": [
                        {
                            "type": "VitsUpsampler",
                            "length_scale": defaults["length_scale"],
                            "noise_scale": defaults["noise_scale"],
                            "first_chunk_frames": 56,
                            "chunk_frames": 128,
                        },
                        decoder,
                    ],
                },
            },
            vocoder,
        ]

    dynamic = stack(
        "Encoders",
        {"type": "Decoder", "first_chunk_frames": 24, "chunk_frames": 128},
        {"type": "Vocoder", "first_chunk_frames": FIRST_AUDIO_FRAMES, "chunk_frames": 128},
    )
    return {
        "cpu": dynamic,  # also the stack of --target cuda: the same blocks on another device
        "neuron": stack("NeuronEncoders", {"type": "PaddedDecoder"}, {"type": "PaddedVocoder"}),
    }
