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
import math
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
FORMAT_VERSION = 2
"""What this tts_neuron writes; it reads formats 1 and 2. Format 2 adds the optional `frontend`,
`settings`, `speakers`, `license`, `dataset` and `about` (an imported voice needs them): an older reader
refuses such an addon instead of speaking it through the wrong frontend."""
READABLE_FORMATS = (1, 2)
FRONTENDS = {
    "espeak": "tts_neuron.frontend:Frontend.for_addon",
    "piper": "tts_neuron.frontend.piper:PiperFrontend.for_addon",
    "kokoro": "tts_neuron.frontend.kokoro:KokoroFrontend.for_addon",
}
"""Frontend types an addon may declare, each with the function that makes one for an addon.
`espeak`: espeak-ng's phoneme mnemonics through `symbols` (the default); `piper`: espeak-ng IPA through a
Piper voice's `phoneme_id_map` (the `frontend` object's `espeak_voice` and `phoneme_id_map`); `kokoro`:
espeak-ng IPA in misaki's symbols, one symbol a token (tts_neuron.frontend.kokoro)."""
RESERVED_SETTINGS = ("speed", "speaker", "seed")
"""Per-call settings every voice understands without declaring them."""
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


@dataclass(frozen=True)
class Setting:
    """A per-call number a voice takes (e.g. Piper's noise_scale): its default and bounds."""

    default: float
    min: float
    max: float


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
    frontend: dict[str, Any] = field(default_factory=lambda: {"type": "espeak"})
    """How text becomes symbol ids: {"type": one of FRONTENDS, ...its fields}."""
    settings: dict[str, Setting] = field(default_factory=dict)
    """Per-call numeric settings the voice takes beyond speed, speaker and seed, by name."""
    speakers: dict[str, int] = field(default_factory=dict)
    """Speaker name -> id, for a multi-speaker voice (empty: one speaker)."""
    license: str | None = None
    dataset: str | None = None
    about: dict[str, Any] = field(default_factory=dict)
    """Anything else the voice's source says about it (informational)."""
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
    if version not in READABLE_FORMATS:
        top.fail(
            f"unsupported format {version}; this tts_neuron reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}",
            "format",
        )
    if version < 2:
        for key in ("frontend", "settings", "speakers", "license", "dataset", "about"):
            if key in top.obj:
                top.fail(f"needs format 2 (this file says {version})", key)
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
        frontend=_frontend(top, len(symbols)),
        settings=_settings(top),
        speakers=_speakers(top),
        license=top.get("license", str, None),
        dataset=top.get("dataset", str, None),
        about=top.get("about", dict, {}),
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


def _frontend(top: _Reader, n_symbols: int) -> dict[str, Any]:
    """The `frontend` (a type name, or an object with a "type" and that frontend's fields), checked: for
    "piper", every phoneme of its map is one codepoint with ids among the symbols (an error names the
    phoneme)."""
    if isinstance(top.obj.get("frontend"), str):
        kind = top.obj["frontend"]
        if kind not in FRONTENDS:
            top.fail(f"unknown frontend '{kind}'; one of {', '.join(FRONTENDS)}", "frontend")
        front = _Reader(top.file, {"type": kind}, "frontend")
    elif "frontend" not in top.obj:
        return {"type": "espeak"}
    else:
        front = top.child("frontend")
    kind = front.get("type", str)
    if kind not in FRONTENDS:
        front.fail(f"unknown frontend '{kind}'; one of {', '.join(FRONTENDS)}", "type")
    if kind == "piper":
        front.get("espeak_voice", str)
        check_phoneme_id_map(
            front.get("phoneme_id_map", dict),
            n_symbols,
            top.file,
            "frontend",
            front.get("vowel_clusters", list, []),
        )
    return dict(front.obj)


def check_phoneme_id_map(
    id_map: dict[str, Any],
    n_symbols: int | None,
    file: Path,
    field: str = "",
    clusters: list[Any] | None = None,
) -> None:
    """A Piper voice's `phoneme_id_map` (in `field` of `file`): each phoneme mapped to a non-empty list of
    ids below `n_symbols`, BOS `^`, EOS `$` and pad `_` present, and each of its `vowel_clusters` (a list of
    codepoints merged into one phoneme) a phoneme of the map. AddonError naming the file and the phoneme
    otherwise."""
    where_map = ".".join(p for p in (field, "phoneme_id_map") if p)
    if not id_map:
        raise AddonError(f"{file}: {where_map}: empty")
    for phoneme, ids in id_map.items():
        where = f"{file}: {where_map}: phoneme {phoneme!r}"
        if not phoneme:
            raise AddonError(f"{where}: a phoneme is at least one codepoint")
        if not (
            isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise AddonError(f"{where}: expected a non-empty list of ids")
        bad = [i for i in ids if i < 0 or (n_symbols is not None and i >= n_symbols)]
        if bad:
            raise AddonError(f"{where}: id {bad[0]} is outside the voice's {n_symbols} symbols")
    for symbol, role in (("^", "BOS"), ("$", "EOS"), ("_", "pad")):
        if symbol not in id_map:
            raise AddonError(f"{file}: {where_map}: has no {role} phoneme '{symbol}'")
    where_clusters = ".".join(p for p in (field, "vowel_clusters") if p)
    for cluster in clusters or []:
        if not (
            isinstance(cluster, list) and len(cluster) > 1 and all(isinstance(c, str) and c for c in cluster)
        ):
            raise AddonError(f"{file}: {where_clusters}: {cluster!r} is not a list of two or more phonemes")
        if "".join(cluster) not in id_map:
            raise AddonError(
                f"{file}: {where_clusters}: unknown phoneme {''.join(cluster)!r}: not in phoneme_id_map"
            )


_SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def _settings(top: _Reader) -> dict[str, Setting]:
    if "settings" not in top.obj:
        return {}
    settings = top.child("settings")
    found = {}
    for name in settings.obj:
        if not _SETTING_NAME.match(name) or name in RESERVED_SETTINGS:
            settings.fail(
                "a setting's name is lowercase letters, digits and _, "
                f"not one of {', '.join(RESERVED_SETTINGS)}",
                name,
            )
        entry = settings.child(name)
        values = [entry.get(key, (int, float)) for key in ("default", "min", "max")]
        if not all(math.isfinite(v) for v in values) or not values[1] <= values[0] <= values[2]:
            entry.fail(f"needs finite min <= default <= max, got {values[1]}, {values[0]}, {values[2]}")
        found[name] = Setting(float(values[0]), float(values[1]), float(values[2]))
    return found


def _speakers(top: _Reader) -> dict[str, int]:
    """`speakers`: names mapped to ids, or a list of names (ids 0, 1, ...)."""
    speakers: dict[str, Any] | list[Any] = top.get("speakers", (dict, list), {})
    if isinstance(speakers, list):
        if not all(isinstance(name, str) for name in speakers) or len(set(speakers)) != len(speakers):
            top.fail("expected a list of distinct speaker names", "speakers")
        speakers = {name: i for i, name in enumerate(speakers)}
    for name, sid in speakers.items():
        if not name or not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid <= MAX_SIZE:
            top.fail(
                f"expected speaker names mapped to ids from 0 to {MAX_SIZE}, got {name!r}: {sid!r}",
                "speakers",
            )
    if len(set(speakers.values())) != len(speakers):
        top.fail("two speakers share an id", "speakers")
    return dict(speakers)
