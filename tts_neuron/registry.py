"""Block types by name: a readable table of built-ins, blocks registered from Python, blocks from
installed packages (entry-point group `tts_neuron.blocks`), and `"package.module:Class"` for anything else.

Nothing is imported until a stack names it, so a third-party block with heavy dependencies costs nothing
to a stack that does not use it. A `"module:Class"` name imports (and so runs) that module: a stack file is
code, not data. With `allow_imports=False` only built-in, registered and entry-point blocks resolve, and
a module path is refused before anything is imported.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from tts_neuron.blocks.base import Block
from tts_neuron.errors import StackError

_LOG = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tts_neuron.blocks"

_BUILTIN_BLOCKS: dict[str, str] = {
    # the five abstractions' containers
    "SequenceBlockContainer": "tts_neuron.blocks.base:SequenceBlockContainer",
    "StreamableStack": "tts_neuron.blocks.base:StreamableStack",
    "StreamablePipeline": "tts_neuron.blocks.base:StreamablePipeline",
    # duration-based acoustic model, dynamic shapes (CPU and GPU)
    "Encoders": "tts_neuron.blocks.acoustic:Encoders",
    "Encoder": "tts_neuron.blocks.acoustic:Encoder",
    "Upsampler": "tts_neuron.blocks.acoustic:Upsampler",
    "Decoder": "tts_neuron.blocks.acoustic:Decoder",
    # VITS (imported Piper voices): noise drawn from a seed, Piper's durations, the prior's sample
    "DurationNoise": "tts_neuron.blocks.vits:DurationNoise",
    "VitsUpsampler": "tts_neuron.blocks.vits:VitsUpsampler",
    # Kokoro (imported models): styled encoders, whole-sentence decoding at frame buckets
    "StyledEncoders": "tts_neuron.blocks.kokoro:StyledEncoders",
    "SentenceDecoder": "tts_neuron.blocks.kokoro:SentenceDecoder",
    "NeuronStyledEncoders": "tts_neuron.blocks.kokoro:NeuronStyledEncoders",
    "PaddedSentenceDecoder": "tts_neuron.blocks.kokoro:PaddedSentenceDecoder",
    # fixed shapes: compiled networks (Neuron, or the same contract on CPU and CUDA)
    "NeuronEncoders": "tts_neuron.blocks.fixed:NeuronEncoders",
    "PaddedDecoder": "tts_neuron.blocks.fixed:PaddedDecoder",
    "AttentionDecoder": "tts_neuron.blocks.attention:AttentionDecoder",
    "PaddedAttentionDecoder": "tts_neuron.blocks.attention:PaddedAttentionDecoder",
    # vocoders
    "Vocoder": "tts_neuron.blocks.vocoder:Vocoder",
    "PaddedVocoder": "tts_neuron.blocks.fixed:PaddedVocoder",
    "GriffinLim": "tts_neuron.blocks.vocoder:GriffinLimVocoder",
    "PaddedGriffinLim": "tts_neuron.blocks.fixed:PaddedGriffinLim",
}

_registered: dict[str, type[Block] | str] = {}


def register_block(name: str, block: type[Block] | str) -> None:
    """Make `block` (a class, or "package.module:Class") available to stacks under `name`."""
    if isinstance(block, str) and block.count(":") != 1:
        raise ValueError(f"expected a string in the format 'package.module:Class', got '{block}'")
    if not isinstance(block, str) and not (isinstance(block, type) and issubclass(block, Block)):
        raise TypeError(f"{block!r} is not a SequenceBlock or StreamableBlock subclass")
    _registered[name] = block


def known_blocks() -> list[str]:
    """Every block name a stack can use without a module path."""
    return sorted({*_BUILTIN_BLOCKS, *_registered, *_entry_points()})


def resolve_block(name: str, path: str = "stack", allow_imports: bool = True) -> type[Block]:
    """The class a stack entry's "type" names; `path` locates the entry in the JSON for errors.

    Registered and entry-point blocks were chosen by code or by an installed package, so they may import
    their module even when `allow_imports` is False; only a module path written in the stack is refused.
    """
    target: type[Block] | str | None = _registered.get(name) or _BUILTIN_BLOCKS.get(name)
    if target is None:
        target = _entry_points().get(name)
    if target is None:
        if ":" not in name:
            raise StackError(
                f"{path}: unknown block type '{name}'; known: {', '.join(known_blocks())} "
                "(or 'package.module:Class' for a block outside the package)"
            )
        if not allow_imports:
            raise StackError(
                f"{path}: block type '{name}' would import module '{name.partition(':')[0]}', and imports "
                "are not allowed here; use a built-in, registered or installed block"
            )
        target = name
    cls = _import(target, path) if isinstance(target, str) else target
    if not (isinstance(cls, type) and issubclass(cls, Block)) or cls in (Block,):
        raise StackError(f"{path}: '{name}' is not a SequenceBlock or StreamableBlock subclass")
    return cls


def _import(spec: str, path: str) -> object:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StackError(f"{path}: '{spec}' is not in the format 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise StackError(f"{path}: cannot import module '{module_name}' for block '{spec}': {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise StackError(f"{path}: module '{module_name}' has no '{attr}'") from None


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
