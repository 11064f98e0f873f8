"""Addon validation: every malformed, incomplete or unsafe addon gets an error naming the file and field."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import edit_addon_json
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


@pytest.mark.parametrize("text", ["", "{", '{"format": 1,', "[1, 2]", "\xff\xfe"])
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
    with pytest.raises(AddonError, match="decoder.safetensors: parameters do not match networks.decoder"):
        load_addon(addon_copy).network("decoder")


def test_corrupt_network_file(addon_copy: Path) -> None:
    path = addon_copy / "networks" / "decoder.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AddonError, match="decoder.safetensors: corrupt or not a safetensors file"):
        load_addon(addon_copy).network("decoder")


def test_pickles_are_refused_by_content_and_by_name(addon_copy: Path) -> None:
    path = addon_copy / "networks" / "decoder.safetensors"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(AddonError, match="pickled torch checkpoint"):
        load_addon(addon_copy).network("decoder")
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(AddonError, match="pickled"):
        load_addon(addon_copy).network("decoder")
    (addon_copy / "networks" / "decoder.pt").write_bytes(b"x")
    edit_addon_json(addon_copy, _set(["networks", "decoder", "parameters"], "networks/decoder.pt"))
    with pytest.raises(AddonError, match="pickled checkpoints run arbitrary code and are refused"):
        load_addon(addon_copy).network("decoder")
