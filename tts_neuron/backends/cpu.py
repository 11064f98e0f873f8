"""The CPU target: each bucket exported with torch.export at static shapes.

It exists so that everything around the Neuron target (buckets, padding, splitting, manifests, the
fixed-shape contract) runs in CI on any machine. An exported program fails loudly if called at another
shape, and our executor refuses other shapes before that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tts_neuron.backends.manifest import CompiledArtifactError


class CpuTarget:
    name = "cpu"
    extension = ".pt2"

    def check_available(self) -> None:
        """torch is all it needs."""

    def compiler_version(self) -> str:
        return f"torch.export {torch.__version__}"

    def default_compiler_args(self) -> list[str]:
        return []

    compile_memory = 1 << 30
    """Host bytes one compile job may take: a worker process with torch and one voice loaded."""

    def compile(
        self,
        network: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        compiler_args: list[str],
        workdir: Path,
    ) -> None:
        program = torch.export.export(network.eval(), example_inputs, strict=False)
        torch.export.save(program, str(path))

    def load(self, path: Path, device: torch.device) -> Callable[..., torch.Tensor]:
        try:
            module = torch.export.load(str(path)).module()
        except Exception as err:  # noqa: BLE001 - any failure to deserialise means an unusable artifact
            raise CompiledArtifactError(f"{path}: cannot load exported program: {err}") from None
        return module.to(device)
