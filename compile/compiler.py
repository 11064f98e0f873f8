"""Compiles an addon's networks at every bucket for one target and writes `compiled/<target>/manifest.json`.

    tts-neuron compile --addon addons/fastspeech-en --target cpu|cuda|neuron [--stack NAME] [--jobs N]

Every bucket is compiled at every batch size the network declares, largest first. An artifact whose
parameters, shape, torch version, compiler and compiler arguments are unchanged is kept, so a second run
recompiles only what changed. The Neuron compiler is single-threaded, so its artifacts compile in
parallel; torch.export runs one at a time.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

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
from tts_neuron.errors import StackError

COMPILED_BLOCKS = {
    "NeuronEncoders": "encoder",
    "PaddedDecoder": "decoder",
    "PaddedAttentionDecoder": "decoder",
    "PaddedVocoder": "vocoder",
}
"""Blocks that run compiled networks, and the network role each uses unless its entry names a network."""


@dataclass
class CompileReport:
    manifest: Manifest
    compiled: list[Artifact]
    reused: list[Artifact]
    seconds: float


def networks_for_stack(addon: Addon, stack: Any) -> list[str]:
    """The networks that the compiled blocks of a stack (a JSON list or object) will run."""
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            role = COMPILED_BLOCKS.get(node.get("type", ""))
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
    previous: Manifest | None, manifest: Manifest, name: str, shape: tuple[int, int], folder: Path
) -> Artifact | None:
    if previous is None or (previous.torch, previous.compiler, previous.compiler_args) != (
        manifest.torch,
        manifest.compiler,
        manifest.compiler_args,
    ):
        return None
    entry = previous.networks.get(name)
    if entry is None or entry.parameters_sha256 != manifest.networks[name].parameters_sha256:
        return None
    artifact = next((a for a in entry.artifacts if (a.batch, a.bucket) == shape), None)
    path = folder / artifact.file if artifact else None
    if artifact is None or path is None or not path.is_file() or sha256_file(path) != artifact.sha256:
        return None
    return artifact


def compile_addon(
    addon_dir: str | Path,
    target_name: str,
    stack: str | None = None,
    jobs: int | None = None,
    compiler_args: list[str] | None = None,
    progress: bool = True,
) -> CompileReport:
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

    todo: list[tuple[str, tuple[int, int]]] = []
    reused: list[Artifact] = []
    for name in names:
        spec = addon.networks[name]
        manifest.networks[name] = NetworkArtifacts(
            sha256_file(spec.parameters), spec.buckets, spec.batch_sizes
        )
        # largest first: it is the one most likely to fail
        for shape in sorted(((b, n) for b in spec.batch_sizes for n in spec.buckets), reverse=True):
            kept = _reusable(previous, manifest, name, shape, folder)
            if kept:
                reused.append(kept)
                manifest.networks[name].artifacts.append(kept)
            else:
                todo.append((name, shape))

    def compile_one(job: tuple[str, tuple[int, int]]) -> tuple[str, Artifact]:
        name, (batch, bucket) = job
        network = addon.network(name)
        # A network with a form for compiled targets (the vocoder's real-only inverse STFT) is compiled in it.
        compiled_form = getattr(network, "compiled_form", None)
        network = compiled_form() if compiled_form else network
        one = network.example_inputs(bucket)  # type: ignore[operator]  # the same inputs the runtime pads to
        inputs = tuple(x.expand(batch, *x.shape[1:]).contiguous() for x in one)  # batch is dim 0 of each
        path = folder / f"{name}.b{batch}.{bucket}{target.extension}"
        t0 = time.perf_counter()
        target.compile(network, inputs, path, args)
        seconds = time.perf_counter() - t0
        return name, Artifact(
            batch, bucket, path.name, sha256_file(path), [TensorSpec.of(x) for x in inputs], seconds
        )

    workers = jobs or ((os.cpu_count() or 1) if target_name == "neuron" else 1)
    compiled: list[Artifact] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(compile_one, todo)
        for name, artifact in tqdm(
            results, total=len(todo), desc=f"compile {target_name}", disable=not progress
        ):
            compiled.append(artifact)
            manifest.networks[name].artifacts.append(artifact)
    for entry in manifest.networks.values():
        entry.artifacts.sort(key=lambda a: (a.batch, a.bucket))

    tmp = folder / (MANIFEST_FILE + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(folder / MANIFEST_FILE)
    kept_files = {a.file for entry in manifest.networks.values() for a in entry.artifacts}
    for stale in folder.glob(f"*{target.extension}"):
        if stale.name not in kept_files:
            stale.unlink()
    return CompileReport(manifest, compiled, reused, time.perf_counter() - started)
