"""The call boundary between blocks and networks.

Blocks get their networks from the build context as handles and call them with one stream's inputs at
batch 1, pull-based, knowing nothing of other streams. A runner decides how each call runs:

- `DirectRunner` calls the network at once, in the caller's thread (the CLI and the Python API).
- `tts_neuron.engine.Engine` pauses the calling stream and runs the waiting calls of many streams at one
  network and input signature (`batch_key`) as one call (`run_batch`). Rows are independent in every
  network, so a stream's output does not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from tts_neuron.backends.executor import BucketTable, FixedShapeExecutor, TensorSpec, pad_length
from tts_neuron.models.protocols import LengthAxes

T = TypeVar("T")

Outputs = Any
"""What a network returns: a tensor, or a tuple of tensors, each with the batch on dim 0."""


class NetworkHandle:
    """One network as a block sees it: call it with one stream's inputs, get that stream's outputs."""

    def __init__(
        self,
        name: str,
        network: Callable[..., Outputs],
        runner: Runner,
        length_axes: LengthAxes | None = None,
    ) -> None:
        self.name, self.network, self.runner = name, network, runner
        self.length_axes = length_axes
        """Where the network declares them (LengthPaddedNetwork), the axes along which calls at different
        lengths are padded to run as one; None: calls batch only at equal shapes."""
        executor = network if isinstance(network, FixedShapeExecutor) else None
        self.batch_sizes: list[int] | None = executor.batch_sizes if executor else None
        """The batch sizes the network can run at; None for a dynamic network, which runs at any."""
        self.table: BucketTable | None = executor.table if executor else None
        """The lengths the network can run at; None for a dynamic network, which runs at any."""

    @property
    def compiled(self) -> bool:
        return self.batch_sizes is not None

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        return self.runner.run(self, inputs)

    def __repr__(self) -> str:
        return f"NetworkHandle({self.name!r}, {type(self.network).__name__})"


class Runner:
    """Runs the calls of the handles it made."""

    def shares(self) -> bool:
        """Whether a call made now may meet other streams' calls in one batch: dynamic blocks pad their
        inputs to shared shapes only then (padding a lone stream's call is work for nothing)."""
        return False

    def paces(self) -> bool:
        """Whether streams are paced to a horizon of queued audio and share the host (an engine). Then a
        call's later sentences keep small first chunks: the audio before them is at most the horizon, and
        under load a full window may not be ready when it runs out (measured: most streams underran at 80
        where small first chunks kept most in time). A direct run makes audio as fast as its consumer pulls,
        so later sentences start at full size (the CONTINUES feature) and recompute less context."""
        return False

    def handle(
        self, name: str, network: Callable[..., Outputs], length_axes: LengthAxes | None = None
    ) -> NetworkHandle:
        return NetworkHandle(name, network, self, length_axes)

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        raise NotImplementedError

    def ahead(self, items: Iterable[T]) -> Iterator[T]:
        """The items (a frontend's sentences) in order; a scheduling runner computes each next one while
        the stream works on the one before."""
        return iter(items)


class DirectRunner(Runner):
    """Each call runs at once in the caller's thread: today's behaviour, one stream at a time."""

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        with torch.inference_mode():
            return handle.network(*inputs)


Tap = Callable[[NetworkHandle, tuple[torch.Tensor, ...]], None]


class TappedRunner(DirectRunner):
    """A direct runner that shows every call to `tap` before it runs (before any shape check): for
    tests and benchmarks that count padding or record the shapes networks are called at."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def run(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> Outputs:
        self.tap(handle, inputs)
        return super().run(handle, inputs)


def batch_key(
    handle: NetworkHandle, inputs: tuple[torch.Tensor, ...], across_lengths: bool
) -> tuple[TensorSpec, ...]:
    """The input signature calls share to run as one batch: their shapes, `across_lengths` less the length
    axes where the network declares them (those calls run at the longest length among them, `run_batch`)."""
    specs = tuple(TensorSpec.of(x) for x in inputs)
    if handle.length_axes is None or not across_lengths:
        return specs
    return tuple(
        spec if axis is None else TensorSpec((*spec.shape[:axis], -1, *spec.shape[axis + 1 :]), spec.dtype)
        for spec, axis in zip(specs, handle.length_axes[0], strict=True)
    )


def run_batch(handle: NetworkHandle, calls: list[tuple[torch.Tensor, ...]]) -> tuple[list[Outputs], int]:
    """Run the calls of several streams at one input signature (`batch_key`) as one call: each stream's
    outputs, and the batch size run. On a fixed-shape network the batch is the smallest compiled size that
    holds them, the rows it lacks are copies of the last real row (a network never sees a row unlike its
    inputs), and they never reach a stream. Calls at different lengths of a network that declares its
    length axes are zero-padded to the longest (on a fixed-shape network each is at a bucket, so the
    longest is one too), and each row's outputs are cut back to its own length."""
    lengths = [_length(handle, call) for call in calls]
    axes = handle.length_axes if len(set(lengths)) > 1 else None  # None: nothing to pad
    if axes is not None:
        calls = [_pad(call, axes[0], max(lengths)) for call in calls]
    rows = len(calls)
    sizes = handle.batch_sizes
    size = rows if sizes is None else next(b for b in sizes if b >= rows)
    # inputs: n tensors [1, ...] per call -> n tensors [size, ...]
    padded = [*calls, *[calls[-1]] * (size - rows)]
    inputs = [torch.cat([call[i] for call in padded]) for i in range(len(calls[0]))]
    with torch.inference_mode():
        outputs = handle.network(*inputs)
    mine = [_rows(outputs, row) for row in range(rows)]
    if axes is not None:
        mine = [_cut(row, axes[1], length) for row, length in zip(mine, lengths, strict=True)]
    return mine, size


def _length(handle: NetworkHandle, call: tuple[torch.Tensor, ...]) -> int:
    """A call's length along its network's length axes (0 where it declares none); all must agree."""
    if handle.length_axes is None:
        return 0
    lengths = {x.shape[axis] for x, axis in zip(call, handle.length_axes[0], strict=True) if axis is not None}
    if len(lengths) != 1:
        raise ValueError(f"{handle.name}: inputs disagree on their length axes: {sorted(lengths)}")
    return lengths.pop()


def _pad(
    call: tuple[torch.Tensor, ...], axes: tuple[int | None, ...], length: int
) -> tuple[torch.Tensor, ...]:
    """A call's inputs zero-padded along their length axes to `length` (the pair of `_cut`)."""
    return tuple(x if a is None else pad_length(x, length, dim=a) for x, a in zip(call, axes, strict=True))


def _cut(outputs: Outputs, axes: tuple[int | None, ...], length: int) -> Outputs:
    """One row's outputs cut back along their length axes to `length` (the pair of `_pad`)."""
    tensors = outputs if isinstance(outputs, tuple) else (outputs,)
    cut = tuple(x if a is None else x.narrow(a, 0, length) for x, a in zip(tensors, axes, strict=True))
    return cut if isinstance(outputs, tuple) else cut[0]


def _rows(outputs: Outputs, row: int) -> Outputs:
    """Row `row` of every output, keeping the batch axis: [B, ...] -> [1, ...]."""
    if isinstance(outputs, tuple):
        return tuple(x[row : row + 1] for x in outputs)
    return outputs[row : row + 1]


def shares_batches(network: object) -> bool:
    """Whether a call of `network` (a handle, or a bare callable that runs alone) may be batched now."""
    return isinstance(network, NetworkHandle) and network.runner.shares()


def handles(block: Any) -> Sequence[NetworkHandle]:
    """The network handles a block holds directly (not those of its children)."""
    return [value for value in vars(block).values() if isinstance(value, NetworkHandle)]


__all__ = ["DirectRunner", "NetworkHandle", "Runner", "TappedRunner", "run_batch", "shares_batches"]
