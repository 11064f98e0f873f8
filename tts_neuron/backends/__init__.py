"""Targets: where compiled, fixed-shape networks run (cpu, cuda, neuron), behind one executor.

Each target is one small module with the same interface: check that its runtime exists, compile a
network at one bucket into an artifact file (build host), and load an artifact back (production host).
Compile-side imports (torch.export, torch_neuronx.trace) happen inside `compile`, never at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from tts_neuron.backends.executor import FixedShapeExecutor, TensorSpec
from tts_neuron.backends.manifest import CompiledArtifactError, Manifest, sha256_file
from tts_neuron.backends.neuron import merge_args
from tts_neuron.errors import TargetUnavailableError
from tts_neuron.targets import TARGET_CLASSES, TARGETS

if TYPE_CHECKING:
    from tts_neuron.addon import Addon

MANIFEST_FILE = "manifest.json"


class Target(Protocol):
    name: str
    extension: str

    def check_available(self) -> None:
        """Raise TargetUnavailableError naming what is missing."""

    def compiler_version(self) -> str: ...

    def default_compiler_args(self) -> list[str]: ...

    compile_memory: int
    """Host bytes one compile job may take: caps how many run at once."""

    def compile(
        self,
        network: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        compiler_args: list[str],
        workdir: Path,
    ) -> None:
        """Compile `network` at `example_inputs` into `path`; `workdir` is an empty folder for the
        compiler's own files, removed on success and kept on failure."""

    def load(self, path: Path, device: torch.device) -> Callable[..., torch.Tensor]: ...


def get_target(name: str) -> Target:
    if name not in TARGET_CLASSES:
        raise TargetUnavailableError(f"unknown target '{name}'; one of {', '.join(TARGETS)}")
    module_name, _, cls = TARGET_CLASSES[name].partition(":")
    target: Target = getattr(importlib.import_module(module_name), cls)()
    return target


def compiled_dir(addon: Addon, target: str) -> Path:
    return addon.root / "compiled" / target


def load_executor(addon: Addon, network: str, target_name: str, device: torch.device) -> FixedShapeExecutor:
    """The compiled buckets of one network for a target, after checking they match the addon as it is now."""
    target = get_target(target_name)
    folder = compiled_dir(addon, target_name)
    recompile = f"recompile with: tts-neuron compile --addon {addon.root} --target {target_name}"
    try:
        manifest = Manifest.read(folder / MANIFEST_FILE)
    except FileNotFoundError:
        raise CompiledArtifactError(
            f"{folder}: nothing compiled for target '{target_name}'; {recompile}"
        ) from None
    spec = addon.networks[network]
    entry = manifest.networks.get(network)
    stale = None
    if manifest.target != target_name:
        stale = f"it is for target '{manifest.target}'"
    elif manifest.torch != torch.__version__:
        stale = f"it was compiled with torch {manifest.torch}, this is torch {torch.__version__}"
    elif manifest.compiler != target.compiler_version():
        stale = f"it was compiled with {manifest.compiler}, this host has {target.compiler_version()}"
    elif entry is None:
        stale = f"it has no network '{network}'"
    elif entry.buckets != spec.buckets:
        stale = f"'{network}' was compiled for buckets {entry.buckets}, addon.json now says {spec.buckets}"
    elif entry.batch_sizes != spec.batch_sizes:
        stale = (
            f"'{network}' was compiled for batch sizes {entry.batch_sizes}, "
            f"addon.json now says {spec.batch_sizes}"
        )
    elif entry.compiler_args != (
        wanted := merge_args(manifest.compiler_args, spec.compiler_args.get(target_name, []))
    ):
        stale = (
            f"'{network}' was compiled with arguments {entry.compiler_args}, addon.json now asks for {wanted}"
        )
    elif entry.parameters_sha256 != sha256_file(spec.parameters):
        stale = f"the parameters of '{network}' changed since it was compiled ({spec.parameters.name})"
    if stale:
        raise CompiledArtifactError(f"{folder / MANIFEST_FILE}: stale: {stale}; {recompile}")
    assert entry is not None
    target.check_available()
    artifacts, signatures = {}, {}
    for artifact in entry.artifacts:  # every load first: Neuron artifacts load in the background
        path = (folder / artifact.file).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise CompiledArtifactError(
                f"{folder / MANIFEST_FILE}: artifact '{artifact.file}' lies outside {folder}"
            )
        if not path.is_file() or sha256_file(path) != artifact.sha256:
            raise CompiledArtifactError(
                f"{path}: missing or corrupt (sha256 differs from the manifest); {recompile}"
            )
        shape = (artifact.batch, artifact.bucket)
        artifacts[shape] = target.load(path, device)
        signatures[shape] = tuple(artifact.inputs)
    with torch.inference_mode():  # then one warm-up call each: first calls are slow on every target
        for shape, run in artifacts.items():
            run(*(example_input(spec, device) for spec in signatures[shape]))
    return FixedShapeExecutor(f"{network} ({target_name})", artifacts, signatures)


def example_input(spec: TensorSpec, device: torch.device) -> torch.Tensor:
    return torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype), device=device)


__all__ = ["MANIFEST_FILE", "TARGETS", "Target", "TensorSpec", "compiled_dir", "get_target", "load_executor"]
