"""The two abstractions of the framework and their three specialisations.

A SequenceBlock transforms named tensors all at once (an encoder runs on a whole sentence). A
StreamableBlock produces chunks on demand: `stream()` returns a lazy iterator, so nothing is computed
until the block after it asks for the next chunk. Containers are blocks themselves, so a whole nested
stack can stand wherever a single block stands.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from tts_neuron.errors import StackError

if TYPE_CHECKING:
    from tts_neuron.blocks.context import BuildContext

Features = dict[str, torch.Tensor]
"""Named tensors passed between SequenceBlocks, batch of one: tokens [1, N], encodings [1, N, C], ..."""

FRAME_TOKENS = "frame_tokens"
"""An optional feature for word timestamps: an out tensor [F] of -1s that the block placing tokens on
frames (the Upsampler from durations, the attention decoder from its focus) fills with each frame's token
index as it places it, and the frame after the last with the token count N (the sentence is placed).
One tensor per call, shared by the copies of the features dict."""

CONTINUES = "continues"
"""A 0-d bool feature, true in a direct run for every sentence of a call but its first (an engine, which
paces its streams, leaves it false: `Runner.paces`): that call's audio plays before this sentence's, so
nobody waits for its first chunk. A block that cuts its first chunk small to make the
first audio early starts at its full size instead (`first_chunk`): fewer, larger windows recompute less
context (docs/writing-blocks.md)."""

QUEUED_FRAMES = "queued_frames"
"""A 0-d int feature beside CONTINUES: frames of the call's audio that a listener playing it in real time
from its first chunk has yet to hear when this sentence starts (audio made less audio played; absent: 0).
A windowed block on dynamic shapes may take a first window of up to half of them (`Decoder`): wherever a
voice runs faster than real time, that much audio computes in less than half the time the queue plays."""

B = TypeVar("B", bound="Block")
T = TypeVar("T")


def continues(features: Features) -> bool:
    """Whether audio of the same call plays before this sentence (the CONTINUES feature; absent: no)."""
    return bool(features.get(CONTINUES, False))


def queued_frames(features: Features) -> int:
    """Frames of the call's audio a real-time listener has queued before this sentence (QUEUED_FRAMES)."""
    value = features.get(QUEUED_FRAMES)
    return int(value) if value is not None else 0


def first_chunk(features: Features, first: T, full: T) -> T:
    """A block's first chunk size: `first` (small, for early audio), or `full` when audio of the same
    call plays before this sentence."""
    return full if continues(features) else first


def place_tokens(features: Features, start: int, tokens: torch.Tensor) -> None:
    """Record that frames [start, start + len(tokens)) speak `tokens` [T] in the FRAME_TOKENS feature
    (callers compute `tokens` only when the feature is there)."""
    out = features[FRAME_TOKENS]
    if start < len(out):
        out[start : start + len(tokens)] = tokens[: len(out) - start].to(out.device)


@dataclass(frozen=True)
class Chunk:
    """A piece of one utterance, as a StreamableBlock hands it to the next one."""

    data: torch.Tensor
    """Frames [T, C] (encodings, mel) or audio samples [S]."""
    start: int
    """Index of data[0] within the utterance, in frames or samples."""
    final: bool
    """True on the last chunk of the utterance."""

    @property
    def end(self) -> int:
        return self.start + self.data.shape[0]


class Block(ABC):  # noqa: B024 - shared base; the two abstractions below declare the methods
    """What both abstractions share: construction from a stack entry and a description for `inspect`."""

    compiles: ClassVar[str | None] = None
    """The role of the networks this block runs compiled (at fixed shapes), unless its stack entry names a
    network with "network"; None for a block that runs no compiled network. `tts-neuron compile` reads it
    to know which networks a stack needs compiled."""

    @classmethod
    def build(cls: type[B], params: dict[str, Any], ctx: BuildContext) -> B:
        """Make the block from its stack entry (without "type"). Blocks that need networks override this."""
        return construct(cls, params, ctx.path)

    def children(self) -> list[Block]:
        return []

    def describe(self) -> str:
        return type(self).__name__


def construct(cls: type[B], params: Mapping[str, Any], path: str, **extra: Any) -> B:
    """Call `cls(**params, **extra)`; a parameter mismatch, or a stack value that does not match its
    parameter's annotation (`{"gain": "loud"}` for `gain: float`), becomes an error naming the entry."""
    try:
        inspect.signature(cls).bind(**params, **extra)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p not in extra]
        raise StackError(
            f"{path}: {cls.__name__}: {err}; accepted parameters: {accepted or 'none'}"
        ) from None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved are not checked
        hints = {}
    for key, value in params.items():
        if key in hints and not _matches(value, hints[key]):
            raise StackError(
                f"{path}: {cls.__name__}: parameter '{key}' expects {_type_name(hints[key])}, "
                f"got {type(value).__name__} {json.dumps(value)[:60]}"
            )
    try:
        return cls(**params, **extra)
    except (TypeError, ValueError) as err:
        raise StackError(f"{path}: {cls.__name__}: {err}") from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits an annotation; types JSON cannot hold (tensors, modules) are not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (int, str):
        return isinstance(value, hint) and not isinstance(value, bool)
    if origin in (list, Sequence) or hint in (list, Sequence):
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value if args)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class SequenceBlock(Block):
    """Takes named tensors and returns them with its own outputs added."""

    @abstractmethod
    def __call__(self, features: Features) -> Features: ...


class StreamableBlock(Block):
    """Produces chunks on demand from the chunks of the block before it and/or a SequenceBlock's output."""

    @abstractmethod
    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        """Return a lazy iterator over this block's chunks for one utterance, ending with a final chunk."""


K = TypeVar("K", "SequenceBlock", "StreamableBlock")


def _build_list(cls: type, params: dict[str, Any], key: str, ctx: BuildContext, kind: type[K]) -> list[K]:
    """A container's nested entries under `key`, each built and checked to be the kind it needs."""
    specs = params.pop(key, None)
    if not isinstance(specs, list):
        raise StackError(f"{ctx.path}: {cls.__name__} needs a list '{key}'")
    return [ctx.build(spec, f"{key}[{i}]", kind) for i, spec in enumerate(specs)]


class SequenceBlockContainer(SequenceBlock):
    """Runs nested SequenceBlocks in order, each seeing the outputs of those before it."""

    def __init__(self, blocks: Sequence[SequenceBlock]) -> None:
        self.blocks = list(blocks)

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> SequenceBlockContainer:
        blocks = _build_list(cls, params, "blocks", ctx, SequenceBlock)
        return construct(cls, params, ctx.path, blocks=blocks)

    def __call__(self, features: Features) -> Features:
        for block in self.blocks:
            features = block(features)
        return features

    def children(self) -> list[Block]:
        return list(self.blocks)


class StreamableStack(StreamableBlock):
    """Runs StreamableBlocks as a pipeline: each one pulls from the one before it."""

    def __init__(self, stack: list[StreamableBlock]) -> None:
        if not stack:
            raise ValueError("a StreamableStack needs at least one block")
        self.stack = stack

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> StreamableStack:
        stack = _build_list(cls, params, "stack", ctx, StreamableBlock)
        return construct(cls, params, ctx.path, stack=stack)

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        for block in self.stack:
            upstream = block.stream(upstream, features)
        assert upstream is not None  # the constructor refuses an empty stack
        return upstream

    def children(self) -> list[Block]:
        return list(self.stack)


def _token_limits(block: Block) -> set[int]:
    """The `max_tokens` of the blocks of a tree that cut sentences into pieces (encoders, decoders)."""
    limit = getattr(block, "max_tokens", None)
    found = {limit} if isinstance(limit, int) else set()
    return found.union(*(_token_limits(child) for child in block.children()))


class StreamablePipeline(StreamableBlock):
    """Exactly one SequenceBlock and one StreamableBlock: a whole acoustic model."""

    def __init__(self, sequence_block: SequenceBlock, streamable_block: StreamableBlock) -> None:
        self.sequence_block = sequence_block
        self.streamable_block = streamable_block

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> StreamablePipeline:
        for key in ("sequence_block", "streamable_block"):
            if key not in params:
                raise StackError(f"{ctx.path}: {cls.__name__} needs '{key}'")
        sequence_block = ctx.build(params.pop("sequence_block"), "sequence_block", SequenceBlock)
        streamable_block = ctx.build(params.pop("streamable_block"), "streamable_block", StreamableBlock)
        encoded, decoded = _token_limits(sequence_block), _token_limits(streamable_block)
        if encoded and decoded and encoded != decoded:
            raise StackError(
                f"{ctx.path}: the encoders cut sentences into pieces of at most {sorted(encoded)} tokens but "
                f"the decoder into segments of at most {sorted(decoded)}: they must cut at the same places, "
                "so give both the same max_tokens"
            )
        return construct(
            cls, params, ctx.path, sequence_block=sequence_block, streamable_block=streamable_block
        )

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        # Lazy: the SequenceBlock runs when the first chunk is asked for, not when the stack is wired.
        def run() -> Iterator[Chunk]:
            yield from self.streamable_block.stream(upstream, self.sequence_block(dict(features)))

        return run()

    def children(self) -> list[Block]:
        return [self.sequence_block, self.streamable_block]
