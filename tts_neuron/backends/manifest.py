"""The manifest of an addon's compiled artifacts for one target (`compiled/<target>/manifest.json`).

It carries everything the runtime needs to trust an artifact: the input signature it was compiled for, the
sha256 of the parameters it came from and of the artifact itself, the torch and compiler versions and the
compiler arguments. A production host checks all of it against the addon before loading anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tts_neuron.backends.executor import TensorSpec
from tts_neuron.errors import AddonError

MANIFEST_FORMAT = 3
"""2: every artifact records its batch size as well as its bucket; 3: every network its compiler
arguments (addon.json's per network over the target's defaults)."""
DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "bool")


class CompiledArtifactError(AddonError):
    """Compiled artifacts are missing, corrupt, or stale for the addon they are loaded with."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    batch: int
    bucket: int
    file: str
    """Relative to the manifest's folder."""
    sha256: str
    inputs: list[TensorSpec]
    compile_seconds: float


@dataclass
class NetworkArtifacts:
    parameters_sha256: str
    buckets: list[int]
    batch_sizes: list[int]
    compiler_args: list[str]
    """What its artifacts were compiled with."""
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass
class Manifest:
    target: str
    torch: str
    compiler: str
    """The compiler's name and version(s), e.g. "torch-neuronx 2.9.0.2.15.32035, neuronx-cc 2.27.5334.0"."""
    compiler_args: list[str]
    """The arguments every network starts from (the target's defaults, or the command line's)."""
    networks: dict[str, NetworkArtifacts] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
                raise CompiledArtifactError(
                    f"{path}: manifest format {raw.get('format')}, this tts_neuron reads {MANIFEST_FORMAT}; "
                    "recompile"
                )
            networks = {
                name: NetworkArtifacts(
                    parameters_sha256=net["parameters_sha256"],
                    buckets=list(net["buckets"]),
                    batch_sizes=list(net["batch_sizes"]),
                    compiler_args=[str(a) for a in net["compiler_args"]],
                    artifacts=[
                        Artifact(
                            batch=int(a["batch"]),
                            bucket=int(a["bucket"]),
                            file=str(a["file"]),
                            sha256=str(a["sha256"]),
                            inputs=[TensorSpec(tuple(t["shape"]), str(t["dtype"])) for t in a["inputs"]],
                            compile_seconds=float(a["compile_seconds"]),
                        )
                        for a in net["artifacts"]
                    ],
                )
                for name, net in raw["networks"].items()
            }
            manifest = cls(
                target=str(raw["target"]),
                torch=str(raw["torch"]),
                compiler=str(raw["compiler"]),
                compiler_args=[str(a) for a in raw["compiler_args"]],
                networks=networks,
                format=int(raw["format"]),
            )
        except (FileNotFoundError, CompiledArtifactError):
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CompiledArtifactError(
                f"{path}: unreadable manifest ({type(err).__name__}: {err})"
            ) from None
        bad = {t.dtype for net in networks.values() for a in net.artifacts for t in a.inputs} - set(DTYPES)
        if bad:
            raise CompiledArtifactError(f"{path}: unknown input dtypes {sorted(bad)}")
        return manifest
