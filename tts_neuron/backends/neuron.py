"""The AWS Neuron target (Inferentia2), written against torch-neuronx's documented API.

NOT RUN ON INF2: the Neuron SDK cannot be installed on the machines this was written on (PyPI's
`torch-neuronx` and `neuronx-cc` are placeholders whose import raises; the real packages come from AWS's
Neuron pip repository, `pip install 'tts-neuron[neuron]' --extra-index-url
https://pip.repos.neuron.amazonaws.com`). Everything around it runs through the CPU target, which keeps
the same fixed-shape contract.

What it does, per the torch-neuronx documentation:
- compile: `torch_neuronx.trace(network, example_inputs, compiler_args=...)` per bucket, then
  `torch_neuronx.async_load` and `torch.jit.save`. A traced module only accepts the traced shapes;
  control flow and dtypes are frozen.
- load: `import torch_neuronx` (registers the Neuron op), `torch.jit.load` of every bucket (with
  async_load each returns at once and loads onto the core in the background, so the loads overlap), then
  one warm-up call per bucket (the first call is slow, and waits for its load); inputs and outputs are CPU
  tensors.
- cores: `NEURON_RT_VISIBLE_CORES` must be set before the Neuron runtime starts, or a process takes every
  core. One process per NeuronCore is the default: a process that has neither it nor `TTS_NEURON_CORES`
  (e.g. "0" or "0-1", copied into it) gets core 0. Ray sets it per replica from its `neuron_cores`
  resource; the multi-core mode is `TTS_NEURON_CORES=0-1`, whose artifacts land on the cores round-robin.

Which SDK: inf2 runs the torch-xla line of torch-neuronx, which ends at 2.9.0.2.15 (Neuron 2.31); from
Neuron 2.33 the same package name is TorchNeuron, the native backend for torch 2.13/2.14 on Trn2/Trn3
only, which has no `trace` for inf2. `check_available` reads the installed distributions' versions and
refuses anything else before importing it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from tts_neuron.errors import TargetUnavailableError
from tts_neuron.models import split_safe

DEFAULT_COMPILER_ARGS = [
    "--target", "inf2",
    # Since Neuron 2.27 the default is --auto-cast none; our networks are fp32, so ask for bf16 matmuls.
    "--auto-cast", "matmult", "--auto-cast-type", "bf16",
    "-O2",
]  # fmt: skip

_CORES = re.compile(r"^\d+(-\d+)?$")


SDK_LINE = {"torch-neuronx": "2.9.0.2.15.", "torch": "2.9.", "neuronx-cc": "2."}
"""The distributions of the torch-xla line and the version prefix each must have (the `neuron` extra)."""
_INSTALL = (
    "install torch-neuronx 2.9.0.2.15.* with torch 2.9.* and neuronx-cc 2.* "
    "(`pip install 'tts-neuron[neuron]' --extra-index-url https://pip.repos.neuron.amazonaws.com`) "
    "or start from a Neuron 2.31 (or earlier) Deep Learning AMI or pytorch-inference-neuronx 2.9 container"
)


def installed_versions() -> dict[str, str | None]:
    """The installed version of each SDK distribution, by distribution name; None where it is absent."""
    versions: dict[str, str | None] = {}
    for name in SDK_LINE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def sdk_problem(versions: dict[str, str | None]) -> str | None:
    """Why these versions cannot compile or run for inf2, as one clause; None when they can."""
    for name, prefix in SDK_LINE.items():
        version = versions.get(name)
        if version is None:
            return f"{name} is not installed"
        if not version.startswith(prefix):
            if name == "torch-neuronx" and _release(version) >= (2, 10):
                return (
                    f"torch-neuronx {version} is TorchNeuron, the native backend for Trn2/Trn3, "
                    "which cannot compile for inf2"
                )
            return f"{name} {version} is installed, inf2 needs {prefix}*"
    return None


def _import_sdk() -> object:
    problem = sdk_problem(installed_versions())
    if problem is not None:
        raise TargetUnavailableError(
            f"target 'neuron' needs the AWS Neuron SDK's torch-xla line: {problem}; {_INSTALL}"
        )
    try:
        import torch_neuronx
    except Exception as err:  # noqa: BLE001 - PyPI's placeholder raises a plain Exception on import
        raise TargetUnavailableError(
            f"target 'neuron' needs the AWS Neuron SDK; importing torch_neuronx failed: {err}; {_INSTALL}"
        ) from None
    if not hasattr(torch_neuronx, "trace"):
        raise TargetUnavailableError(f"target 'neuron': torch_neuronx has no trace(); {_INSTALL}")
    return torch_neuronx


def visible_cores_env(cores: str | None, environ: dict[str, str]) -> dict[str, str]:
    """The environment to add so the Neuron runtime uses `cores` ("N" or "A-B", default core 0: one
    process per NeuronCore); nothing if NEURON_RT_VISIBLE_CORES is set already (Ray sets it)."""
    if "NEURON_RT_VISIBLE_CORES" in environ:
        return {}
    cores = "0" if cores is None else cores
    if not _CORES.match(cores):
        raise TargetUnavailableError(
            f"TTS_NEURON_CORES must be a core index or range like 0-1, got '{cores}'"
        )
    return {"NEURON_RT_VISIBLE_CORES": cores}


def compiler_args(extra: list[str] | None = None) -> list[str]:
    """The defaults, with any flag in `extra` replacing the default of the same name."""
    return merge_args(DEFAULT_COMPILER_ARGS, extra or [])


def merge_args(base: list[str], extra: list[str]) -> list[str]:
    """`base` then `extra`, leaving out each flag of `base` (with its value) that `extra` gives again;
    one optimisation level (-O1, -O2, ...) replaces another."""
    given = {flag for flag in extra if flag.startswith("-")}
    args: list[str] = []
    i = 0
    while i < len(base):
        flag = base[i]
        takes_value = i + 1 < len(base) and not base[i + 1].startswith("-")
        is_level = flag.startswith("-O") and any(g.startswith("-O") for g in given)
        if flag not in given and not is_level:
            args += base[i : i + 1 + takes_value]
        i += 1 + takes_value
    return args + list(extra)


class NeuronTarget:
    name = "neuron"
    extension = ".neuron.pt"

    def check_available(self) -> None:
        _import_sdk()

    def compiler_version(self) -> str:
        """The torch-neuronx and neuronx-cc versions, which the manifest records and a load compares."""
        versions = installed_versions()
        return f"torch-neuronx {versions['torch-neuronx']}, neuronx-cc {versions['neuronx-cc']}"

    def default_compiler_args(self) -> list[str]:
        return compiler_args()

    compile_memory = 8 << 30
    """Host bytes one compile job may take (neuronx-cc at the largest bucket): an estimate, never measured
    here; it caps the parallel jobs on small build hosts (inf2.xlarge: 16 GiB)."""

    def compile(
        self,
        network: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        compiler_args: list[str],
        workdir: Path,
    ) -> None:
        sdk = _import_sdk()
        with split_safe():  # pytorch/xla#8640: no split of a 2-D tensor along dim 1
            traced = sdk.trace(  # type: ignore[attr-defined]
                network.eval(),
                example_inputs,
                compiler_args=compiler_args,
                compiler_workdir=str(workdir),
            )
        sdk.async_load(traced)  # type: ignore[attr-defined]  # jit.load returns at once, loads in the background
        torch.jit.save(traced, str(path))

    def load(self, path: Path, device: torch.device) -> Callable[..., torch.Tensor]:
        os.environ.update(visible_cores_env(os.environ.get("TTS_NEURON_CORES"), dict(os.environ)))
        _import_sdk()
        return torch.jit.load(str(path))
