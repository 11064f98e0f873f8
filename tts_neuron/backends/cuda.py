"""The CUDA target: the same exported programs as the CPU target, on the GPU, replayed as CUDA graphs.

A CUDA graph freezes shapes and addresses, which is the same fixed-shape contract as Neuron's: each
bucket is captured once at load (after a warm-up on a side stream) and later calls copy their inputs
into the captured buffers and replay. NOT RUN: no GPU was available where this was written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tts_neuron.backends.cpu import CpuTarget
from tts_neuron.errors import TargetUnavailableError


class CudaGraphRunner:
    """Replays one captured CUDA graph of `module` at the shapes of its first call.

    The graph reads and writes fixed buffers, so calls from several streams' threads are serialised by a
    lock, and outputs (one tensor or a tuple, as the attention step returns) are copied out before the
    next call can overwrite them."""

    def __init__(self, module: Callable[..., Any]) -> None:
        self.module = module
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor] = []
        self.static_output: Any = None
        self.lock = threading.Lock()

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        self.static_inputs = [x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up kernels and allocator outside the graph
                self.module(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_output = self.module(*self.static_inputs)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        with self.lock:
            if self.graph is None:
                self._capture(inputs)
            for static, x in zip(self.static_inputs, inputs, strict=True):
                static.copy_(x)
            assert self.graph is not None and self.static_output is not None
            self.graph.replay()
            output = self.static_output
            return tuple(o.clone() for o in output) if isinstance(output, tuple) else output.clone()


class CudaTarget(CpuTarget):
    name = "cuda"

    def check_available(self) -> None:
        if not torch.cuda.is_available():
            raise TargetUnavailableError("target 'cuda' needs a CUDA GPU, and torch sees none on this host")

    def load(self, path: Path, device: torch.device) -> Callable[..., torch.Tensor]:
        return CudaGraphRunner(super().load(path, device))
