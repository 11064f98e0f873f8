"""An addon: one voice as a folder with `addon.json` and its networks.

Each network is an architecture name, its constructor arguments and a safetensors file of parameters.
We chose registered module code plus safetensors over exported graphs because safetensors cannot run
code (pickled checkpoints can, and are refused), it loads the same on torch 2.9 and 2.13 (serialised
exported programs are tied to the torch version that wrote them), and the compile host needs the module
code anyway to trace each network at every bucket.

Every error names the file and the field, e.g. `addons/x/addon.json: networks.decoder.parameters: ...`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from tts_neuron.audio import AudioConfig
from tts_neuron.backends import TARGETS
from tts_neuron.backends.manifest import sha256_file
from tts_neuron.errors import AddonError, TTSNeuronError
from tts_neuron.frontend import PAD_SYMBOL
from tts_neuron.models import create_network, is_builtin

ADDON_FILE = "addon.json"
FORMAT_VERSION = 1
NETWORK_ROLES = ("encoder", "decoder", "postnet", "vocoder")
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class NetworkSpec:
    """One network of the addon, as addon.json declares it."""

    name: str
    architecture: str
    role: str
    """"encoder" (run by Encoders, in declaration order), "decoder" or "vocoder"."""
    inputs: list[str]
    """Feature names passed positionally to forward()."""
    outputs: list[str]
    """Feature names given to forward()'s results."""
    config: dict[str, Any]
    parameters: Path
    buckets: list[int]
    """Lengths (tokens for encoders, window frames for a decoder) that fixed-shape targets compile."""
    batch_sizes: list[int]
    """Batch sizes compiled at every bucket (default [1]): the device engine runs the calls of several
    streams as one call at these sizes. 1 comes first, so a lone stream never pays for dummy rows."""
    sha256: str
    """Of the parameter file, checked when the network is loaded: a changed byte is refused, not spoken."""
    compiler_args: dict[str, list[str]] = field(default_factory=dict)
    """Compiler arguments by target name, over the target's defaults (a flag given replaces the default's):
    e.g. {"neuron": ["--auto-cast", "none"]} keeps a network in fp32 on Neuron."""


@dataclass
class Addon:
    """A validated addon. Networks are loaded on first use and cached."""

    root: Path
    name: str
    description: str
    trained: bool
    language: str
    audio: AudioConfig
    symbols: list[str]
    networks: dict[str, NetworkSpec]
    stacks: dict[str, Any]
    default_stack: str
    _loaded: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    @property
    def config_path(self) -> Path:
        return self.root / ADDON_FILE

    def networks_with_role(self, role: str) -> list[NetworkSpec]:
        return [spec for spec in self.networks.values() if spec.role == role]

    def network(self, name: str) -> nn.Module:
        """The network in eval mode with its parameters loaded (on CPU; blocks move it where they run)."""
        if name not in self._loaded:
            if name not in self.networks:
                raise AddonError(
                    f"{self.config_path}: networks: no network '{name}'; has {sorted(self.networks)}"
                )
            self._loaded[name] = self._load_network(self.networks[name])
        return self._loaded[name]

    def _load_network(self, spec: NetworkSpec) -> nn.Module:
        """Check the parameter file (safetensors, its recorded sha256, finite floating-point tensors),
        count what the config describes on the meta device (so a config far larger than its file is
        refused before anything is allocated), then build the network and load it strictly."""
        where = f"{self.config_path}: networks.{spec.name}"
        state = read_parameters(spec.parameters)  # refuses pickles and unreadable files first
        if sha256_file(spec.parameters) != spec.sha256:
            raise AddonError(
                f"{spec.parameters}: sha256 differs from networks.{spec.name}.sha256 in {ADDON_FILE}: "
                "the file changed or is corrupt"
            )
        for key, tensor in state.items():
            if not tensor.is_floating_point():
                raise AddonError(
                    f"{spec.parameters}: tensor '{key}' is {tensor.dtype}; parameters are floats"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise AddonError(f"{spec.parameters}: tensor '{key}' holds NaN or infinite values")
        in_file = sum(tensor.numel() for tensor in state.values())
        try:
            with torch.device("meta"):
                declared = sum(t.numel() for t in _build(spec).state_dict().values())
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
            raise AddonError(f"{where}: cannot build '{spec.architecture}' from its config: {err}") from None
        if declared != in_file:
            raise AddonError(
                f"{where}.config: describes {declared:,} parameters, "
                f"but {spec.parameters.name} holds {in_file:,}"
            )
        module = _build(spec)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            summary = " ".join(str(err).split())[:300]
            raise AddonError(
                f"{spec.parameters}: parameters do not match networks.{spec.name}: {summary}"
            ) from None
        return module.eval()

    def parameter_count(self, name: str) -> int:
        """Parameters in a network's file, read from the safetensors header without loading it."""
        path = self.networks[name].parameters
        try:
            with safe_open(str(path), framework="pt") as f:
                return sum(_numel(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise AddonError(f"{path}: not a readable safetensors file: {err}") from None


def _build(spec: NetworkSpec) -> nn.Module:
    return create_network(spec.architecture, spec.config)


def _numel(shape: list[int]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def read_json(path: Path, error: type[TTSNeuronError]) -> Any:
    """Parse a JSON file; any failure becomes `error` naming the file (and the line, for bad JSON)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read") from None


def read_parameters(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; anything else (a pickle above all) is refused with a clear error."""
    if path.suffix in _PICKLE_SUFFIXES:
        raise AddonError(f"{path}: pickled checkpoints run arbitrary code and are refused; use safetensors")
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise AddonError(f"{path}: network file not found") from None
    except OSError as err:
        raise AddonError(f"{path}: cannot read network file: {err}") from None
    # A safetensors file starts with its header's length (8 bytes, which may begin with 0x80) and "{".
    if head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise AddonError(
            f"{path}: this is a pickled torch checkpoint, refused because it runs arbitrary code"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AddonError(f"{path}: corrupt or not a safetensors file: {err}") from None


class _Reader:
    """Typed access to a JSON object that reports the file and field path of whatever is wrong."""

    def __init__(self, file: Path, obj: Any, path: str = "") -> None:
        self.file, self.obj, self.path = file, obj, path
        if not isinstance(obj, dict):
            self.fail(f"expected an object, got {type(obj).__name__}")

    def fail(self, message: str, key: str | None = None) -> None:
        where = ".".join(p for p in (self.path, key) if p) or "(top level)"
        raise AddonError(f"{self.file}: {where}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.obj:
            if default is ...:
                self.fail("missing", key)
            return default
        value = self.obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(f"expected {names}, got {type(value).__name__} {json.dumps(value)[:60]}", key)
        return value

    def child(self, key: str) -> _Reader:
        return _Reader(self.file, self.get(key, dict), ".".join(p for p in (self.path, key) if p))

    def strings(self, key: str) -> list[str]:
        values = self.get(key, list)
        if not values or not all(isinstance(v, str) and v for v in values):
            self.fail("expected a non-empty list of non-empty strings", key)
        return list(values)


MAX_SIZE = 1 << 16
"""Bound on every integer of a network's config and on every bucket: far above what a voice needs, far
below what exhausts a host's memory (a config is checked against its file's size before it is built)."""


def _buckets(net: _Reader) -> list[int]:
    buckets = net.get("buckets", list, [])
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= MAX_SIZE for b in buckets):
        net.fail(f"expected a list of integers from 1 to {MAX_SIZE}", "buckets")
    if buckets != sorted(set(buckets)):
        net.fail(f"must be increasing without repeats, got {buckets}", "buckets")
    return list(buckets)


MAX_BATCH = 256
"""Bound on a compiled batch size: a row is one stream's window, and no host serves more streams."""


def _batch_sizes(net: _Reader) -> list[int]:
    sizes = net.get("batch_sizes", list, [1])
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= MAX_BATCH for b in sizes):
        net.fail(f"expected a list of integers from 1 to {MAX_BATCH}", "batch_sizes")
    if sizes != sorted(set(sizes)) or sizes[:1] != [1]:
        net.fail(f"must start at 1 and increase without repeats, got {sizes}", "batch_sizes")
    return list(sizes)


_COMPILER_ARG = re.compile(r"^[A-Za-z0-9_.,:=+/-]{1,100}$")


def _compiler_args(net: _Reader) -> dict[str, list[str]]:
    by_target: dict[str, Any] = net.get("compiler_args", dict, {})
    for target, args in by_target.items():
        if target not in TARGETS:
            net.fail(f"unknown target '{target}'; one of {', '.join(TARGETS)}", "compiler_args")
        if not isinstance(args, list) or not all(isinstance(a, str) and _COMPILER_ARG.match(a) for a in args):
            net.fail(
                "expected a list of flags and values (letters, digits and _.,:=+/-, at most 100 each)",
                f"compiler_args.{target}",
            )
    return {target: list(args) for target, args in by_target.items()}


def _network_config(net: _Reader, n_symbols: int, audio: AudioConfig) -> dict[str, Any]:
    """A network's constructor arguments, bounded, and agreeing with the addon's symbols and mel bands."""
    config: dict[str, Any] = net.get("config", dict, {})
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and not -MAX_SIZE <= value <= MAX_SIZE:
            net.fail(f"{value} is out of range (at most {MAX_SIZE})", f"config.{key}")
    for key, expected, what in (
        ("n_symbols", n_symbols, "len(symbols)"),
        ("n_mels", audio.n_mels, "audio.n_mels"),
    ):
        if key in config and config[key] != expected:
            net.fail(f"{config[key]} differs from {what} ({expected})", f"config.{key}")
    return config


def load_addon(root: str | Path, allow_imports: bool = True) -> Addon:
    """Read and validate `root/addon.json`; network files are checked to exist, and loaded on first use.
    With `allow_imports=False`, a network's architecture must be a built-in one: a "package.module:Class"
    would import its module when the network is built."""
    root = Path(root)
    file = root / ADDON_FILE
    if not root.is_dir():
        raise AddonError(f"{root}: addon folder not found")
    if not file.is_file():
        raise AddonError(f"{file}: missing; an addon folder holds an {ADDON_FILE}")
    raw = read_json(file, AddonError)

    top = _Reader(file, raw)
    version = top.get("format", int)
    if version != FORMAT_VERSION:
        top.fail(f"unsupported format {version}; this tts_neuron reads format {FORMAT_VERSION}", "format")
    try:
        audio = AudioConfig.from_dict(top.get("audio", dict))
    except (TypeError, ValueError) as err:
        raise AddonError(f"{file}: audio: {err}") from None
    symbols = top.strings("symbols")
    if symbols[0] != PAD_SYMBOL:
        top.fail(f"the first symbol must be '{PAD_SYMBOL}'", "symbols")
    if len(set(symbols)) != len(symbols):
        top.fail("symbols repeat", "symbols")

    networks_obj = top.child("networks")
    networks: dict[str, NetworkSpec] = {}
    for name in networks_obj.obj:
        net = networks_obj.child(name)
        role = net.get("role", str)
        if role not in NETWORK_ROLES:
            net.fail(f"unknown role '{role}'; one of {', '.join(NETWORK_ROLES)}", "role")
        params_file = (root / net.get("parameters", str)).resolve()
        if not params_file.is_relative_to(root.resolve()):
            net.fail("must be a path inside the addon folder", "parameters")
        if not params_file.is_file():
            net.fail(f"network file not found: {params_file}", "parameters")
        architecture = net.get("architecture", str)
        if not allow_imports and not is_builtin(architecture):
            net.fail(
                f"'{architecture}' is not a built-in architecture, and imports are not allowed",
                "architecture",
            )
        networks[name] = NetworkSpec(
            name=name,
            architecture=architecture,
            role=role,
            inputs=net.strings("inputs"),
            outputs=net.strings("outputs"),
            config=_network_config(net, len(symbols), audio),
            parameters=params_file,
            buckets=_buckets(net),
            batch_sizes=_batch_sizes(net),
            sha256=net.get("sha256", str),
            compiler_args=_compiler_args(net),
        )
    if not networks:
        networks_obj.fail("an addon declares at least one network")

    stacks = top.get("stacks", dict)
    if not stacks or not all(isinstance(s, list) and s for s in stacks.values()):
        top.fail("expected an object of named, non-empty stack lists", "stacks")
    default_stack = top.get("default_stack", str)
    if default_stack not in stacks:
        top.fail(f"'{default_stack}' is not one of the stacks {sorted(stacks)}", "default_stack")

    return Addon(
        root=root,
        name=top.get("name", str),
        description=top.get("description", str, ""),
        trained=top.get("trained", bool),
        language=top.get("language", str, "en-us"),
        audio=audio,
        symbols=symbols,
        networks=networks,
        stacks=stacks,
        default_stack=default_stack,
    )
