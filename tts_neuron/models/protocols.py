"""What blocks, the compiler and `check` may ask of a network beyond `forward`: one Protocol per question.

A network declares these as attributes or methods; nothing else is looked up by name. The runtime checks
are structural (`isinstance(network, WindowedNetwork)`), so an addon's own architecture ("module:Class")
takes part by declaring the same names, without importing anything of ours.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class WindowedNetwork(Protocol):
    """A network that maps frames to frames (or audio) with a bounded receptive field, so it streams
    exactly in windows with that much context each side (decoders, vocoders)."""

    receptive_radius: int
    """Frames of context each side that an output frame depends on."""


@runtime_checkable
class AudioNetwork(Protocol):
    """A network that makes `hop` audio samples per input frame (a vocoder)."""

    hop: int


@runtime_checkable
class CompilableNetwork(Protocol):
    """A network that can be compiled at a bucket: its example inputs at batch 1 and that length."""

    def example_inputs(self, bucket: int) -> tuple[torch.Tensor, ...]: ...


@runtime_checkable
class HasCompiledForm(Protocol):
    """A network compiled in another form than it runs on the host (the vocoder's real-only iSTFT)."""

    def compiled_form(self) -> nn.Module: ...


@runtime_checkable
class HasCpuForm(Protocol):
    """A network that runs faster in another form on a CPU with dynamic shapes (the VITS generator's
    channels-last convolutions, the VITS flow's time-major products, the attention step's fused products).
    Compiled artifacts are made from the network itself."""

    def cpu_form(self) -> nn.Module: ...


@runtime_checkable
class CarriedNetwork(Protocol):
    """A windowed network fed each frame once, carrying its state from call to call: `forward(frames,
    mask, *conditions, *state)` returns the output of the frames that end `delay` frames before the last
    one fed, then the new state. Windows with context each side recompute that context at every call; a
    carried network computes none. Frames past the utterance's end are fed masked to finish it."""

    delay: int

    def initial_state(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]: ...


@runtime_checkable
class HasCarriedForm(Protocol):
    """A windowed network (or its CPU form) that also streams in a carried form (`CarriedNetwork`) on
    dynamic shapes."""

    def carried_form(self) -> nn.Module: ...


LengthAxes = tuple[tuple[int | None, ...], tuple[int | None, ...]]
"""Each input's length axis, then each output's (None where a tensor has none)."""


@runtime_checkable
class LengthPaddedNetwork(Protocol):
    """A network whose calls at different lengths may run as one call at the longest: each input zero-padded
    along its length axis, each row's outputs cut back to its own length, and those rows are the same as
    at their own length (the padding is masked). An engine of one worker batches such calls across lengths
    and buckets, so streams of different sentence lengths meet in one call (an attention step's tokens)."""

    length_axes: LengthAxes


@runtime_checkable
class AttentionStepNetwork(Protocol):
    """One step of an attention decoder: `reduction` frames of `n_mels` a step, from a flat state."""

    reduction: int
    n_mels: int
    state_size: int
    prenet_channels: int


def length_axes(network: object) -> LengthAxes | None:
    """A network's (or its class's) `length_axes` where it declares them (LengthPaddedNetwork)."""
    return network.length_axes if isinstance(network, LengthPaddedNetwork) else None


def compiled_form(network: nn.Module) -> nn.Module:
    """The form a network is compiled in: its `compiled_form()` where it has one, else itself."""
    return network.compiled_form() if isinstance(network, HasCompiledForm) else network


def cpu_form(network: nn.Module) -> nn.Module:
    """The form a network runs in on a CPU with dynamic shapes: its `cpu_form()` where it has one."""
    return network.cpu_form() if isinstance(network, HasCpuForm) else network


__all__ = [
    "AttentionStepNetwork",
    "AudioNetwork",
    "CarriedNetwork",
    "CompilableNetwork",
    "HasCarriedForm",
    "HasCompiledForm",
    "HasCpuForm",
    "LengthAxes",
    "LengthPaddedNetwork",
    "WindowedNetwork",
    "compiled_form",
    "cpu_form",
    "length_axes",
]
