"""Addon validation: every malformed, incomplete or unsafe addon gets an error naming the file and field."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save

import tts_neuron
from tests.conftest import edit_addon_json, replace_parameters
from tts_neuron.addon import load_addon
from tts_neuron.errors import AddonError


def test_tiny_addon_loads_and_its_networks_load(tiny_addon_dir: Path) -> None:
    addon = load_addon(tiny_addon_dir)
    assert [n.name for n in addon.networks_with_role("encoder")] == ["text_encoder", "duration_predictor"]
    net = addon.network("decoder")
    assert not net.training
    assert addon.parameter_count("decoder") == sum(p.numel() for p in net.parameters())


def _set(path: list[str], value: Any):  # type: ignore[no-untyped-def]
    def edit(config: dict[str, Any]) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["format"], 99, "format: unsupported format 99"),
        (["name"], _DELETE, "name: missing"),
        (["trained"], "yes", "trained: expected bool"),
        (["symbols"], ["a", "b"], "symbols: the first symbol must be '<pad>'"),
        (["symbols"], [], "symbols: expected a non-empty list"),
        (["audio", "hop_length"], -1, "audio: .*hop_length"),
        (["networks"], {}, "networks: an addon declares at least one network"),
        (["networks", "decoder", "role"], "mixer", "networks.decoder.role: unknown role 'mixer'"),
        (
            ["networks", "decoder", "parameters"],
            "networks/gone.safetensors",
            "networks.decoder.parameters: network file not found",
        ),
        (
            ["networks", "decoder", "parameters"],
            "../../etc/passwd",
            "networks.decoder.parameters: must be a path inside",
        ),
        (["networks", "decoder", "inputs"], "frames", "networks.decoder.inputs: expected list"),
        (["stacks"], {"cpu": []}, "stacks: expected an object of named, non-empty stack lists"),
        (["default_stack"], "gpu", "default_stack: 'gpu' is not one of the stacks"),
    ],
)
def test_bad_fields_are_named(addon_copy: Path, path: list[str], value: Any, message: str) -> None:
    edit_addon_json(addon_copy, _set(path, value))
    with pytest.raises(AddonError, match=rf"addon\.json: {message}"):
        load_addon(addon_copy)


@pytest.mark.parametrize("text", ["", "{", '{"format": 1,', "[1, 2]", "\xff\xfe", "[" * 100_000])
def test_malformed_json(addon_copy: Path, text: str) -> None:
    (addon_copy / "addon.json").write_text(text, encoding="latin-1")
    with pytest.raises(AddonError, match="addon.json"):
        load_addon(addon_copy)


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(AddonError, match="addon folder not found"):
        load_addon(tmp_path / "nothing")
    with pytest.raises(AddonError, match="addon.json: missing"):
        load_addon(tmp_path)


def test_bad_architecture_config(addon_copy: Path) -> None:
    edit_addon_json(addon_copy, _set(["networks", "decoder", "config", "layers"], "many"))
    with pytest.raises(AddonError, match="networks.decoder: cannot build 'MelDecoder'"):
        load_addon(addon_copy).network("decoder")
    edit_addon_json(addon_copy, _set(["networks", "decoder", "architecture"], "Transformer9000"))
    with pytest.raises(AddonError, match="unknown architecture 'Transformer9000'; known: .*MelDecoder"):
        load_addon(addon_copy).network("decoder")


def test_parameters_that_do_not_match_the_config(addon_copy: Path) -> None:
    edit_addon_json(addon_copy, _set(["networks", "decoder", "config", "channels"], 32))
    with pytest.raises(AddonError, match=r"decoder.config: describes 13,616 parameters, but decoder.safe"):
        load_addon(addon_copy).network("decoder")


def test_corrupt_network_file(addon_copy: Path) -> None:
    path = addon_copy / "networks" / "decoder.safetensors"
    replace_parameters(addon_copy, "decoder", path.read_bytes()[:100])
    with pytest.raises(AddonError, match="decoder.safetensors: corrupt or not a safetensors file"):
        load_addon(addon_copy).network("decoder")


def test_flipped_bytes_are_refused_by_their_sha256(addon_copy: Path) -> None:
    """64 flipped bytes inside the tensors still parse as safetensors: only the recorded hash sees them."""
    path = addon_copy / "networks" / "decoder.safetensors"
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AddonError, match=r"decoder.safetensors: sha256 differs from networks.decoder.sha256"):
        load_addon(addon_copy).network("decoder")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.to(torch.int64), "tensor 'project_out.bias' is torch.int64; parameters are floats"),
        (lambda t: t.fill_(float("nan")), "tensor 'project_out.bias' holds NaN or infinite values"),
    ],
)
def test_integer_and_non_finite_weights_are_refused(addon_copy: Path, change: Any, message: str) -> None:
    path = addon_copy / "networks" / "decoder.safetensors"
    state = load_file(str(path))
    state["project_out.bias"] = change(state["project_out.bias"])
    replace_parameters(addon_copy, "decoder", save(state))
    with pytest.raises(AddonError, match=message):
        load_addon(addon_copy).network("decoder")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["audio", "n_mels"], 1_000_000_000, r"audio: AudioConfig.n_mels must be in \[1, 512\]"),
        (["audio", "n_fft"], 10**12, r"audio: AudioConfig.n_fft must be in"),
        (["audio", "sample_rate"], 10**12, r"audio: AudioConfig.sample_rate must be in"),
        (
            ["networks", "decoder", "config", "layers"],
            10**7,
            r"networks.decoder.config.layers: 10000000 is out",
        ),
        (
            ["networks", "decoder", "config", "channels"],
            10**9,
            r"networks.decoder.config.channels: .* out of",
        ),
        (
            ["networks", "decoder", "buckets"],
            [10**12],
            r"networks.decoder.buckets: expected a list of integers",
        ),
        (
            ["networks", "text_encoder", "config", "n_symbols"],
            7,
            r"config.n_symbols: 7 differs from len\(sym",
        ),
        (
            ["networks", "decoder", "config", "n_mels"],
            81,
            r"config.n_mels: 81 differs from audio.n_mels \(80\)",
        ),
        (["networks", "decoder", "sha256"], _DELETE, r"networks.decoder.sha256: missing"),
    ],
)
def test_sizes_are_bounded_and_consistent(
    addon_copy: Path, path: list[str], value: Any, message: str
) -> None:
    """Sizes that would exhaust memory (or write a WAV no player reads) fail at validation, named."""
    edit_addon_json(addon_copy, _set(path, value))
    with pytest.raises(AddonError, match=message):
        load_addon(addon_copy)


def test_a_config_larger_than_its_file_is_refused_before_it_is_built(addon_copy: Path) -> None:
    """Within the bounds, a config may still describe a network far larger than its file: counted on the
    meta device first, so nothing is allocated."""
    edit_addon_json(addon_copy, _set(["networks", "decoder", "config", "layers"], 2_000))
    with pytest.raises(AddonError, match=r"networks.decoder.config: describes [\d,]+ parameters, but"):
        load_addon(addon_copy).network("decoder")


def test_pickles_are_refused_by_content_and_by_name(addon_copy: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    replace_parameters(addon_copy, "decoder", buffer.getvalue())
    with pytest.raises(AddonError, match="pickled torch checkpoint"):
        load_addon(addon_copy).network("decoder")
    replace_parameters(addon_copy, "decoder", pickle.dumps({"w": 1}))
    with pytest.raises(AddonError, match="pickled"):
        load_addon(addon_copy).network("decoder")
    (addon_copy / "networks" / "decoder.pt").write_bytes(b"x")
    edit_addon_json(addon_copy, _set(["networks", "decoder", "parameters"], "networks/decoder.pt"))
    with pytest.raises(AddonError, match="pickled checkpoints run arbitrary code and are refused"):
        load_addon(addon_copy).network("decoder")


def test_without_imports_only_builtin_architectures_load(addon_copy: Path) -> None:
    """A "package.module:Class" architecture would import its module when built: code named in
    addon.json, refused where imports are not allowed (the server), as a stack's blocks are."""
    edit_addon_json(
        addon_copy,
        lambda c: c["networks"]["decoder"].update(architecture="tts_neuron.models.fastspeech:MelDecoder"),
    )
    assert load_addon(addon_copy).network("decoder") is not None  # allowed by default: same class
    with pytest.raises(AddonError, match=r"networks\.decoder\.architecture: .* imports are not allowed"):
        load_addon(addon_copy, allow_imports=False)
    with pytest.raises(AddonError, match="imports are not allowed"):
        tts_neuron.load(addon_copy, allow_imports=False)
