"""What a block sees while it is built (`BuildContext`), and the building of one stack entry.

Blocks import this module, never the stack builder (`tts_neuron.stack`), which imports them: the arrows
run one way, from the builder to the blocks.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from tts_neuron.backends import load_executor
from tts_neuron.blocks.base import Block, SequenceBlock, StreamableBlock
from tts_neuron.errors import StackError
from tts_neuron.models import network_class
from tts_neuron.models.protocols import HasCarriedForm, cpu_form, length_axes
from tts_neuron.registry import resolve_block
from tts_neuron.runners import DirectRunner, NetworkHandle, Runner

if TYPE_CHECKING:
    from tts_neuron.addon import Addon

K = TypeVar("K", SequenceBlock, StreamableBlock)

MAX_NESTING = 32
"""Deepest nesting of block entries a stack may have; the addons' stacks nest 4 deep. A bound, because each
level is a few Python frames and a hostile stack 200 containers deep would end in RecursionError."""


@dataclass(frozen=True)
class BuildContext:
    """What a block may need while it is built: the addon (networks, audio settings), where to run, and
    where in the JSON it was declared."""

    addon: Addon
    device: torch.device
    path: str
    target: str = "cpu"
    """Where compiled blocks run their networks; dynamic blocks just use `device`."""
    allow_imports: bool = True
    """Whether a "module:Class" type may import its module; False allows only built-in, registered and
    entry-point blocks (see `tts_neuron.registry`)."""
    depth: int = 0
    """How many block entries enclose this one."""
    runner: Runner = field(default_factory=DirectRunner)
    """Runs the calls of the networks blocks get from `network` and `compiled`."""

    def network(self, name: str) -> NetworkHandle:
        """A handle on a network with dynamic shapes, on this context's device (its `cpu_form` on a CPU)."""
        self._check(name)
        network = self.addon.network(name)
        if self.device.type == "cpu":
            network = cpu_form(network)
        return self.runner.handle(name, network.to(self.device), length_axes(network))

    def carried(self, plain: NetworkHandle) -> NetworkHandle | None:
        """A handle on the carried form of the network behind `plain` (a handle from `network`), where it
        has one; the form shares what the plain one holds (a CPU form's matrices)."""
        if not isinstance(plain.network, HasCarriedForm):
            return None
        return self.runner.handle(plain.name, plain.network.carried_form().to(self.device))

    def compiled(self, name: str) -> NetworkHandle:
        """A handle on a network's fixed-shape executor for this context's target (artifacts checked and
        warmed up at every batch size and bucket)."""
        self._check(name)
        if not self.addon.networks[name].buckets:
            raise StackError(f"{self.path}: network '{name}' declares no buckets to compile in addon.json")
        executor = load_executor(self.addon, name, self.target, self.device)
        axes = length_axes(network_class(self.addon.networks[name].architecture))
        return self.runner.handle(name, executor, axes)

    def _check(self, name: str) -> None:
        if name not in self.addon.networks:
            raise StackError(
                f"{self.path}: the addon has no network '{name}'; it has {sorted(self.addon.networks)}"
            )

    def build(self, spec: Any, key: str, kind: type[K]) -> K:
        """Build a nested entry found at `key` below this one and check it is the kind the parent needs."""
        path = f"{self.path}.{key}" if not key.startswith("[") else f"{self.path}{key}"
        if self.depth >= MAX_NESTING:
            raise StackError(f"{path}: blocks are nested more than {MAX_NESTING} deep")
        return build_block(spec, replace(self, path=path, depth=self.depth + 1), kind)


def build_block(spec: Any, ctx: BuildContext, kind: type[K]) -> K:
    if not isinstance(spec, dict):
        raise StackError(
            f"{ctx.path}: a block entry must be an object with a 'type', got {reprlib.repr(spec)}"
        )
    params = dict(spec)
    name = params.pop("type", None)
    if not isinstance(name, str) or not name:
        raise StackError(f"{ctx.path}: a block entry needs a string 'type'")
    cls = resolve_block(name, ctx.path, ctx.allow_imports)
    if not issubclass(cls, kind):
        raise StackError(f"{ctx.path}: '{name}' is a {_kind_of(cls)}, but a {kind.__name__} is needed here")
    block: Block = cls.build(params, ctx)
    assert isinstance(block, kind)
    return block


def _kind_of(cls: type) -> str:
    return "SequenceBlock" if issubclass(cls, SequenceBlock) else "StreamableBlock"
