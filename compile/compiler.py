"""Compiles an addon's networks at every bucket for one target and writes `compiled/<target>/manifest.json`.

    tts-neuron compile --addon addons/fastspeech-en --target cpu|cuda|neuron [--stack NAME] [--jobs N]

Every bucket is compiled at every batch size the network declares, largest first. An artifact whose
parameters, shape, torch version, compiler and compiler arguments are unchanged is kept, so a second run
recompiles only what changed. Each network compiles with the target's default arguments (or --compiler-arg
ones) overridden by its own `compiler_args` in addon.json; the manifest records what each network used.

Artifacts compile in spawned worker processes (pool.py), as many as there are cores and as the host's
memory holds at the target's `compile_memory` each: torch_neuronx.trace works through process-wide
torch-xla state and can kill its process, so a failed job must fail alone. The CPU target takes the
same path. The compiler's own files go to a temporary folder per job, kept only when the job fails.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tts_neuron.addon import Addon, load_addon
from tts_neuron.backends import MANIFEST_FILE, compiled_dir, get_target
from tts_neuron.backends.executor import TensorSpec
from tts_neuron.backends.manifest import (
    Artifact,
    CompiledArtifactError,
    Manifest,
    NetworkArtifacts,
    sha256_file,
)
from tts_neuron.backends.neuron import merge_args
from tts_neuron.errors import StackError, TTSNeuronError
from tts_neuron.models.protocols import CompilableNetwork, compiled_form
from tts_neuron.registry import resolve_block
from tts_neuron_build.pool import run_jobs, worker_count


class CompileError(TTSNeuronError):
    """Some artifacts failed to compile; the message names each, why, and where its compiler files are."""


@dataclass
class CompileReport:
    manifest: Manifest
    compiled: list[Artifact]
    reused: list[Artifact]
    seconds: float


def networks_for_stack(addon: Addon, stack: Any) -> list[str]:
    """The networks that the compiled blocks of a stack (a JSON list or object) will run: each block
    declares the role of its compiled networks (`Block.compiles`)."""
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            kind = node.get("type")
            role = resolve_block(kind, str(addon.config_path)).compiles if isinstance(kind, str) else None
            if role is not None:
                named = node.get("network")
                if named is not None and named not in addon.networks:
                    raise StackError(
                        f"{addon.config_path}: stack names network '{named}', which the addon lacks"
                    )
                names.extend([named] if named else [spec.name for spec in addon.networks_with_role(role)])
            for value in node.values():
                visit(value)

    visit(stack)
    return list(dict.fromkeys(names))


def _reusable(
    previous: Manifest | None,
    manifest: Manifest,
    name: str,
    inputs: list[TensorSpec],
    folder: Path,
) -> Artifact | None:
    """The previous artifact of this network at these inputs, if nothing it was compiled from changed."""
    if previous is None or (previous.torch, previous.compiler) != (manifest.torch, manifest.compiler):
        return None
    entry, now = previous.networks.get(name), manifest.networks[name]
    if entry is None or (entry.parameters_sha256, entry.compiler_args) != (
        now.parameters_sha256,
        now.compiler_args,
    ):
        return None
    artifact = next((a for a in entry.artifacts if a.inputs == inputs), None)
    path = folder / artifact.file if artifact else None
    if artifact is None or path is None or not path.is_file() or sha256_file(path) != artifact.sha256:
        return None
    return artifact


@dataclass(frozen=True)
class Job:
    """One artifact to compile, as a worker process receives it."""

    addon: str
    target: str
    network: str
    batch: int
    bucket: int
    path: str
    compiler_args: tuple[str, ...]
    workdir: str
    """An empty temporary folder for the compiler's files: removed on success, kept on failure."""

    @property
    def name(self) -> str:
        return f"{self.network} batch {self.batch} bucket {self.bucket}"


_WORKER_ADDONS: dict[str, Addon] = {}
"""The addon a worker process loaded, by folder: each worker loads its own copy once."""


def compile_inputs(
    addon: Addon, name: str, batch: int, bucket: int
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A network in the form it is compiled in (the vocoder's real-only inverse STFT, where a network has
    one) and its example inputs at one batch size and bucket: the inputs the runtime pads to."""
    network = compiled_form(addon.network(name))
    if not isinstance(network, CompilableNetwork):
        raise StackError(f"{addon.config_path}: network '{name}' has no example_inputs(bucket) to compile at")
    one = network.example_inputs(bucket)
    return network, tuple(x.expand(batch, *x.shape[1:]).contiguous() for x in one)  # batch is dim 0


def compile_job(job: Job) -> Artifact:
    """Compile one artifact (in a worker process)."""
    addon = _WORKER_ADDONS.get(job.addon)
    if addon is None:
        addon = _WORKER_ADDONS[job.addon] = load_addon(job.addon)
    target = get_target(job.target)
    network, inputs = compile_inputs(addon, job.network, job.batch, job.bucket)
    path = Path(job.path)
    t0 = time.perf_counter()
    target.compile(network, inputs, path, list(job.compiler_args), Path(job.workdir))
    seconds = time.perf_counter() - t0
    return Artifact(
        job.batch, job.bucket, path.name, sha256_file(path), [TensorSpec.of(x) for x in inputs], seconds
    )


def compile_addon(
    addon_dir: str | Path,
    target_name: str,
    stack: str | None = None,
    jobs: int | None = None,
    compiler_args: list[str] | None = None,
    progress: bool = True,
) -> CompileReport:
    """Compile every bucket of every network (of `stack`, or all) in worker processes; a job that fails
    is reported by name with its kept workdir, after the others have finished and been recorded."""
    started = time.perf_counter()
    addon = load_addon(addon_dir)
    target = get_target(target_name)
    target.check_available()
    if stack is not None and stack not in addon.stacks:
        raise StackError(f"{addon.config_path}: stacks: no stack '{stack}'; it has {sorted(addon.stacks)}")
    wanted = networks_for_stack(addon, addon.stacks[stack]) if stack else list(addon.networks)
    names = [name for name in wanted if addon.networks[name].buckets]
    if stack and len(names) < len(wanted):
        missing = sorted(set(wanted) - set(names))
        raise StackError(
            f"{addon.config_path}: networks {missing} run compiled in stack '{stack}' but declare no buckets"
        )
    if not names:
        raise StackError(f"{addon.config_path}: no network declares buckets, so there is nothing to compile")

    folder = compiled_dir(addon, target_name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        previous: Manifest | None = Manifest.read(folder / MANIFEST_FILE)
    except (FileNotFoundError, CompiledArtifactError):
        previous = None
    args = compiler_args if compiler_args is not None else target.default_compiler_args()
    manifest = Manifest(target_name, torch.__version__, target.compiler_version(), args)

    todo: list[Job] = []
    reused: list[Artifact] = []
    for name in names:
        spec = addon.networks[name]
        network_args = merge_args(args, spec.compiler_args.get(target_name, []))
        manifest.networks[name] = NetworkArtifacts(
            sha256_file(spec.parameters), spec.buckets, spec.batch_sizes, network_args
        )
        # largest first: it is the one most likely to fail
        for batch, bucket in sorted(((b, n) for b in spec.batch_sizes for n in spec.buckets), reverse=True):
            inputs = [TensorSpec.of(x) for x in compile_inputs(addon, name, batch, bucket)[1]]
            kept = _reusable(previous, manifest, name, inputs, folder)
            if kept:
                reused.append(kept)
                manifest.networks[name].artifacts.append(kept)
            else:
                path = folder / f"{name}.b{batch}.{bucket}{target.extension}"
                workdir = tempfile.mkdtemp(prefix=f"tts-neuron-{name}.b{batch}.{bucket}-")
                todo.append(
                    Job(
                        str(addon.root),
                        target_name,
                        name,
                        batch,
                        bucket,
                        str(path),
                        tuple(network_args),
                        workdir,
                    )
                )

    workers = worker_count(jobs, len(todo), target.compile_memory)
    outcomes = run_jobs(todo, compile_job, workers, desc=f"compile {target_name}", progress=progress)
    compiled: list[Artifact] = []
    failed: list[str] = []
    for outcome in outcomes:
        job = outcome.job
        if outcome.result is None:
            failed.append(f"{job.name}: {outcome.error} (compiler files kept in {job.workdir})")
            continue
        shutil.rmtree(job.workdir, ignore_errors=True)
        compiled.append(outcome.result)
        manifest.networks[job.network].artifacts.append(outcome.result)
    for entry in manifest.networks.values():
        entry.artifacts.sort(key=lambda a: (a.batch, a.bucket))

    tmp = folder / (MANIFEST_FILE + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(folder / MANIFEST_FILE)
    kept_files = {a.file for entry in manifest.networks.values() for a in entry.artifacts}
    for stale in folder.glob(f"*{target.extension}"):
        if stale.name not in kept_files:
            stale.unlink()
    if failed:
        raise CompileError(
            f"{len(failed)} of {len(todo)} artifacts failed to compile (the others are saved; run again "
            "to retry only these): " + "; ".join(failed)
        )
    return CompileReport(manifest, compiled, reused, time.perf_counter() - started)
