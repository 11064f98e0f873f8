"""The AWS Neuron target (Inferentia2), written against torch-neuronx's documented API.

NOT RUN ON INF2: the Neuron SDK cannot be installed on the machines this was written on (PyPI's
`torch-neuronx` and `neuronx-cc` are placeholders whose import raises; the real packages come from AWS's
Neuron pip repository, `pip install 'tts-neuron[neuron]' --extra-index-url
https://pip.repos.neuron.amazonaws.com`). Everything around it runs through the CPU target, which keeps
the same fixed-shape contract.

What it does, per the torch-neuronx documentation:
- compile: `torch_neuronx.trace(network, example_inputs, compiler_args=...)` per bucket, then
  `torch.jit.save`. A traced module only accepts the traced shapes; control flow and dtypes are frozen.
- load: `import torch_neuronx` (registers the Neuron op), `torch.jit.load`, one warm-up call per bucket
  (the first call is slow), inputs and outputs are CPU tensors.
- cores: `NEURON_RT_VISIBLE_CORES` must be set before the Neuron runtime starts; by default a process
  takes every core. `TTS_NEURON_CORES` (e.g. "0" or "0-1") is copied into it when it is not set already.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tts_neuron.errors import TargetUnavailableError

DEFAULT_COMPILER_ARGS = [
    "--target", "inf2",
    # Since Neuron 2.27 the default is --auto-cast none; our networks are fp32, so ask for bf16 matmuls.
    "--auto-cast", "matmult", "--auto-cast-type", "bf16",
    "-O2",
]  # fmt: skip

_CORES = re.compile(r"^\d+(-\d+)?$")


def _import_sdk() -> object:
    try:
        import torch_neuronx
    except Exception as err:  # noqa: BLE001 - PyPI's placeholder raises a plain Exception on import
        raise TargetUnavailableError(
            "target 'neuron' needs the AWS Neuron SDK (torch-neuronx and neuronx-cc from AWS's Neuron pip "
            f"repository, `pip install 'tts-neuron[neuron]'`); importing torch_neuronx failed: {err}"
        ) from None
    return torch_neuronx


def visible_cores_env(cores: str | None, environ: dict[str, str]) -> dict[str, str]:
    """The environment to add so the Neuron runtime uses `cores` ("N" or "A-B"); nothing if already set."""
    if cores is None or "NEURON_RT_VISIBLE_CORES" in environ:
        return {}
    if not _CORES.match(cores):
        raise TargetUnavailableError(
            f"TTS_NEURON_CORES must be a core index or range like 0-1, got '{cores}'"
        )
    return {"NEURON_RT_VISIBLE_CORES": cores}


def compiler_args(extra: list[str] | None = None) -> list[str]:
    """The defaults, with any flag in `extra` replacing the default of the same name."""
    extra = list(extra or [])
    given = {flag for flag in extra if flag.startswith("-")}
    args: list[str] = []
    i = 0
    while i < len(DEFAULT_COMPILER_ARGS):
        flag = DEFAULT_COMPILER_ARGS[i]
        takes_value = i + 1 < len(DEFAULT_COMPILER_ARGS) and not DEFAULT_COMPILER_ARGS[i + 1].startswith("-")
        is_level = flag.startswith("-O") and any(g.startswith("-O") for g in given)
        if flag not in given and not is_level:
            args += DEFAULT_COMPILER_ARGS[i : i + 1 + takes_value]
        i += 1 + takes_value
    return args + extra


class NeuronTarget:
    name = "neuron"
    extension = ".neuron.pt"

    def check_available(self) -> None:
        _import_sdk()

    def compiler_version(self) -> str:
        sdk = _import_sdk()
        try:
            import neuronx_cc

            cc = getattr(neuronx_cc, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - as above, a placeholder raises on import
            cc = "missing"
        return f"torch-neuronx {getattr(sdk, '__version__', 'unknown')}, neuronx-cc {cc}"

    def default_compiler_args(self) -> list[str]:
        return compiler_args()

    def compile(
        self,
        network: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        compiler_args: list[str],
    ) -> None:
        sdk = _import_sdk()
        traced = sdk.trace(  # type: ignore[attr-defined]
            network.eval(),
            example_inputs,
            compiler_args=compiler_args,
            compiler_workdir=str(path.with_suffix(".workdir")),
        )
        torch.jit.save(traced, str(path))

    def load(self, path: Path, device: torch.device) -> Callable[..., torch.Tensor]:
        os.environ.update(visible_cores_env(os.environ.get("TTS_NEURON_CORES"), dict(os.environ)))
        _import_sdk()
        return torch.jit.load(str(path))
