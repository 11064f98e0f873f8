"""Fixed-shape execution: bucket lookup, padding as a pair with unpadding, and one executor that calls a
compiled artifact only at a shape it was compiled for.

We enforce shapes ourselves because not every static back end does: an AOTInductor package reads out of
bounds on a shorter input, and a traced module may silently generalise to shapes it was never compiled for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tts_neuron.errors import TTSNeuronError


class ShapeError(TTSNeuronError, ValueError):
    """A compiled network was asked to run at a shape it was not compiled for."""


class BucketTable:
    """Size -> smallest bucket that holds it, built once and looked up; None past the largest bucket."""

    def __init__(self, buckets: Sequence[int]) -> None:
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be positive and increasing, got {list(buckets)}")
        self.buckets = list(buckets)
        self._table: list[int] = []  # _table[size] for 0 <= size <= largest
        for bucket in self.buckets:
            self._table += [bucket] * (bucket + 1 - len(self._table))

    @property
    def largest(self) -> int:
        return self.buckets[-1]

    def bucket_for(self, size: int) -> int | None:
        return self._table[size] if 0 <= size < len(self._table) else None


def pad_length(x: torch.Tensor, length: int, value: float = 0, dim: int = 1) -> torch.Tensor:
    """Pad dim `dim` of `x` ([B, T, ...] by default) on the right to `length`. Pair it with
    `x.narrow(dim, 0, T)` on the outputs."""
    missing = length - x.shape[dim]
    if missing < 0:
        raise ShapeError(f"cannot pad length {x.shape[dim]} down to {length}")
    if missing == 0:
        return x
    padding = x.new_full((*x.shape[:dim], missing, *x.shape[dim + 1 :]), value)
    return torch.cat([x, padding], dim=dim)


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, x: torch.Tensor) -> TensorSpec:
        return cls(tuple(x.shape), str(x.dtype).removeprefix("torch."))

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


Shape = tuple[int, int]
"""(batch, length) of an artifact: dims 0 and 1 of its first input (the length is the bucket)."""


class FixedShapeExecutor:
    """One compiled artifact per (batch size, bucket) of a network; refuses any input signature it was not
    compiled for. Blocks call it at batch 1; the device engine calls it at the other compiled batch sizes."""

    def __init__(
        self,
        name: str,
        artifacts: dict[Shape, Callable[..., torch.Tensor]],
        signatures: dict[Shape, tuple[TensorSpec, ...]],
    ) -> None:
        if set(artifacts) != set(signatures):
            raise ValueError("every artifact needs its input signature")
        for shape, signature in signatures.items():
            if not signature or signature[0].shape[:2] != shape:
                raise ValueError(f"{name}: artifact {shape} has a first input of {signature[:1]}")
        self.name = name
        self.artifacts = artifacts
        self.signatures = signatures
        self.table = BucketTable(sorted({length for _, length in artifacts}))
        self.batch_sizes = sorted({batch for batch, _ in artifacts})
        missing = [(b, n) for b in self.batch_sizes for n in self.table.buckets if (b, n) not in artifacts]
        if missing:
            raise ValueError(f"{name}: every batch size needs every bucket; missing {missing}")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = tuple(TensorSpec.of(x) for x in inputs)
        shape = given[0].shape[:2] if given and len(given[0].shape) > 1 else None
        if shape not in self.signatures or self.signatures[shape] != given:
            compiled = "; ".join(", ".join(map(str, sig)) for sig in self.signatures.values())
            raise ShapeError(
                f"{self.name}: no compiled artifact for inputs ({', '.join(map(str, given))}); "
                f"compiled for: {compiled}"
            )
        return self.artifacts[shape](*inputs)
