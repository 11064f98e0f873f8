"""Blocks of a duration-based acoustic model with dynamic shapes: the CPU and GPU fallbacks.

Encoders runs every encoder network on a whole sentence; the Upsampler repeats each phoneme's encoding
for its predicted frames and hands frames out on demand; the Decoder turns frames into mel frames with
exactly its receptive field of context, so its streamed output equals decoding the whole utterance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from tts_neuron.backends.executor import BucketTable, FixedShapeExecutor, pad_length
from tts_neuron.blocks.base import (
    FRAME_TOKENS,
    Chunk,
    Features,
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    construct,
    continues,
    first_chunk,
    place_tokens,
    queued_frames,
)
from tts_neuron.blocks.context import BuildContext
from tts_neuron.blocks.pieces import pause_ids, sentence_pieces
from tts_neuron.blocks.windows import (
    CONTINUING_GROWTH,
    DYNAMIC_MULTIPLE,
    Window,
    bucket_cores,
    core_chunk,
    empty_chunk,
    pad_end,
    pad_window,
    windows,
)
from tts_neuron.errors import StackError
from tts_neuron.models.protocols import AudioNetwork, CarriedNetwork, WindowedNetwork
from tts_neuron.runners import NetworkHandle, shares_batches


def _network_by_role(ctx: BuildContext, role: str, name: str | None) -> str:
    """The network a block runs: the one named in the stack, or the addon's only network of that role."""
    if name is not None:
        if name not in ctx.addon.networks:
            raise StackError(
                f"{ctx.path}: the addon has no network '{name}'; it has {sorted(ctx.addon.networks)}"
            )
        return name
    candidates = ctx.addon.networks_with_role(role)
    if len(candidates) != 1:
        names = [spec.name for spec in candidates]
        raise StackError(f"{ctx.path}: name the {role} network to use with 'network'; the addon has {names}")
    return candidates[0].name


class Encoder(SequenceBlock):
    """Runs one network on whole-sentence features, mapping feature names to its inputs and outputs.

    `network` is a handle from the build context (a torch module with dynamic shapes, or a compiled
    executor with fixed shapes), or either of those itself.
    """

    def __init__(self, name: str, network: Callable[..., Any], inputs: list[str], outputs: list[str]) -> None:
        self.name, self.network, self.inputs, self.outputs = name, network, inputs, outputs

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> Encoder:
        name = _network_by_role(ctx, "encoder", params.pop("network", None))
        return construct(cls, params, ctx.path, **_network_args(ctx, name))

    def __call__(self, features: Features) -> Features:
        missing = [key for key in self.inputs if key not in features]
        if missing:
            raise StackError(
                f"encoder '{self.name}' needs features {missing}; it was given {sorted(features)}"
            )
        with torch.inference_mode():
            results = self.network(*(network_input(features[key]) for key in self.inputs))
        results = results if isinstance(results, tuple) else (results,)
        return {**features, **dict(zip(self.outputs, results, strict=True))}

    def describe(self) -> str:
        return f"Encoder '{self.name}' ({', '.join(self.inputs)} -> {', '.join(self.outputs)})"


def network_input(x: torch.Tensor) -> torch.Tensor:
    """Integer features (token ids) enter networks as int32: a compiled signature is int32, and inf2
    downcasts int64 to int32 anyway (neuron-audit finding 15)."""
    return x.to(torch.int32) if x.dtype == torch.int64 else x


def _network_args(ctx: BuildContext, name: str) -> dict[str, Any]:
    spec = ctx.addon.networks[name]
    return {"name": name, "network": ctx.network(name), "inputs": spec.inputs, "outputs": spec.outputs}


class Encoders(SequenceBlockContainer):
    """One Encoder for every encoder network the addon declares, run in declaration order.

    With `max_tokens`, a longer sentence is encoded in pieces cut after a pause (else between words),
    each as a sentence of its own: the pieces an attention decoder decodes one by one, and the ones
    fixed-shape encoders must make anyway. With a bucket `table` (the encoders' own buckets, when they
    declare them), each piece that fits a bucket is padded to it and unpadded after: the networks mask
    padding, so the output is the same, and the pieces of many streams meet at a few shapes and batch.
    Compiled encoders (`pad`) always pad; dynamic ones only when other streams' calls may join (on an
    engine with other streams in it). The pieces are cut alike either way.
    """

    def __init__(
        self,
        blocks: list[Encoder],
        pauses: set[int],
        max_tokens: int | None = None,
        table: BucketTable | None = None,
        pad: bool = False,
    ) -> None:
        super().__init__(blocks)
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if table is not None and max_tokens is not None:
            max_tokens = min(max_tokens, table.largest)  # as the attention decoder cuts its segments
        self.pauses, self.max_tokens, self.table, self.pad = pauses, max_tokens, table, pad
        self.outputs = [key for block in blocks for key in block.outputs]
        self.first_network = blocks[0].network if blocks else None

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> Encoders:
        specs = ctx.addon.networks_with_role("encoder")
        if not specs:
            raise StackError(f"{ctx.path}: {cls.__name__} found no network with role 'encoder' in the addon")
        encoders = [Encoder(**_network_args(ctx, spec.name)) for spec in specs]
        buckets = {tuple(spec.buckets) for spec in specs}
        table = BucketTable(list(buckets.pop())) if len(buckets) == 1 and specs[0].buckets else None
        return construct(
            cls, params, ctx.path, blocks=encoders, pauses=pause_ids(ctx.addon.symbols), table=table
        )

    def __call__(self, features: Features) -> Features:
        limit = self.max_tokens or features["tokens"].shape[1]
        pieces = [self.encode_piece(features, a, b) for a, b in sentence_pieces(features, limit, self.pauses)]
        return {
            **features,
            **{key: torch.cat([piece[key] for piece in pieces], dim=1) for key in self.outputs},
        }

    def encode_piece(self, features: Features, start: int, stop: int) -> Features:
        """The encoders' outputs for tokens [start, stop), encoded as a sentence of their own, padded to
        their bucket when a bucket holds them."""
        pad = self.pad or shares_batches(self.first_network)
        bucket = self.table.bucket_for(stop - start) if self.table and pad else None
        if bucket is None:
            return self.run({**features, **token_slice(features, start, stop)})
        piece = {key: pad_length(value, bucket) for key, value in token_slice(features, start, stop).items()}
        return {key: value[:, : stop - start] for key, value in self.run({**features, **piece}).items()}

    def run(self, features: Features) -> Features:
        encoded = super().__call__(features)
        return {key: encoded[key] for key in self.outputs}


def token_slice(features: Features, start: int, stop: int) -> Features:
    """The token-aligned features (tokens, token_mask, words, ...) of tokens [start, stop)."""
    n = features["tokens"].shape[1]
    return {
        key: value[:, start:stop]
        for key, value in features.items()
        if value.dim() > 1 and value.shape[1] == n
    }


def durations_to_frames(log_durations: torch.Tensor, length_scale: float, max_frames: int) -> torch.Tensor:
    """log(1 + frames) per phoneme [N] to frame counts [N], scaled by `length_scale` (>1 is slower)."""
    frames = torch.round(torch.expm1(log_durations.float()).clamp(min=0) * length_scale)
    return frames.clamp(max=max_frames).long()


class Upsampler(StreamableBlock):
    """Repeats each phoneme's encoding for its predicted number of frames, a chunk at a time.

    The first chunk is small so that audio starts early; later ones are larger to amortise per-call costs.
    A `rate` feature (a per-call speaking rate, >1 is faster) divides the stack's `length_scale`.
    The default first chunk (48 frames) is what the shipped voices need for their first audio: the
    decoder's and the vocoder's right context (12 + 17 frames) plus a first audio chunk of 19 frames.
    """

    takes_rate = True
    """Honours the `rate` feature (`Voice.stream(speed=...)`, SSML `<prosody rate>`)."""
    places_tokens = True
    """Fills the FRAME_TOKENS feature (word timestamps), all of it before its first chunk."""

    def __init__(
        self,
        chunk_frames: int = 64,
        first_chunk_frames: int = 48,
        length_scale: float = 1.0,
        max_frames_per_phoneme: int = 100,
        encodings: str = "encodings",
        durations: str = "log_durations",
    ) -> None:
        if chunk_frames < 1 or first_chunk_frames < 1:
            raise ValueError("chunk sizes must be at least one frame")
        if not 0.1 <= length_scale <= 10:
            raise ValueError(f"length_scale must be in [0.1, 10], got {length_scale}")
        self.chunk_frames, self.first_chunk_frames = chunk_frames, first_chunk_frames
        self.length_scale, self.max_frames_per_phoneme = length_scale, max_frames_per_phoneme
        self.encodings_key, self.durations_key = encodings, durations

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        for key in (self.encodings_key, self.durations_key):
            if key not in features:
                raise StackError(f"Upsampler needs feature '{key}'; it was given {sorted(features)}")
        encodings = features[self.encodings_key][0]  # [N, C]
        rate = float(features["rate"]) if "rate" in features else 1.0
        frames = durations_to_frames(
            features[self.durations_key][0], self.length_scale / rate, self.max_frames_per_phoneme
        )
        ends = torch.cumsum(frames.to(encodings.device), 0)  # [N]: end frame of each phoneme
        total = int(ends[-1]) if len(ends) else 0
        if FRAME_TOKENS in features:  # each frame's phoneme, then the end mark N (word timestamps)
            frame_tokens = torch.searchsorted(ends, torch.arange(total + 1, device=ends.device), right=True)
            place_tokens(features, 0, frame_tokens)
        first = first_chunk(features, self.first_chunk_frames, self.chunk_frames)
        return self._chunks(encodings, ends, total, first)

    def _chunks(self, encodings: torch.Tensor, ends: torch.Tensor, total: int, first: int) -> Iterator[Chunk]:
        start, size = 0, first
        while True:
            stop = min(start + size, total)
            yield Chunk(upsample(encodings, ends, start, stop), start, stop == total)
            if stop == total:
                return
            start, size = stop, self.chunk_frames

    def describe(self) -> str:
        return f"Upsampler (chunks {self.first_chunk_frames}, then {self.chunk_frames} frames)"


def upsample(encodings: torch.Tensor, ends: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Frames [start, stop) of the upsampled sequence: frame t belongs to the first phoneme ending after t."""
    # encodings: [N, C], ends: [N] cumulative frame counts -> [stop - start, C]
    positions = torch.arange(start, stop, device=encodings.device)
    return encodings[torch.searchsorted(ends, positions, right=True)]


class Decoder(StreamableBlock):
    """Frames in, frames out through one network with a bounded receptive field (its `receptive_radius`):
    each window is run with that much context on each side, so the streamed output equals running the
    whole utterance at once.

    With a window `table` (the buckets of a compiled network), each window is placed in the smallest
    bucket that holds its core and a full halo, masked where the utterance has no frames, and unpadded
    after; the first core is the smallest bucket's, so its output comes early, and each next core is
    twice the one before, up to the largest bucket's. A network in its carried form (`CarriedNetwork`,
    dynamic shapes) is fed each window's new frames only and computes no context twice."""

    role = "decoder"
    """The role of the network it takes when its entry names none."""

    def __init__(
        self,
        name: str,
        network: Callable[..., torch.Tensor],
        radius: int,
        per_frame: int = 1,
        first_chunk_frames: int | None = None,
        chunk_frames: int | None = None,
        conditions: Sequence[str] = (),
        table: BucketTable | None = None,
        whole: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        """`radius` is the network's receptive field in frames each side, `per_frame` its output rows per
        frame. Without chunk sizes, each window takes every frame that has its context; with them, a
        window waits for that many (the first for `first_chunk_frames`), which amortises the halo; with a
        `table` (by default a compiled network's own), the buckets set them. `conditions` are features of
        the utterance passed with every window after the frames and the mask (a speaker id): the
        network's inputs past its first two. `whole` is the plain form of a carried network, for an
        utterance that fits one window: the carried form would feed `delay` masked frames to finish it,
        the plain one none."""
        for size in (first_chunk_frames, chunk_frames):
            if size is not None and size < 1:
                raise ValueError(f"chunk sizes must be at least one frame, got {size}")
        if table is None and isinstance(network, (NetworkHandle, FixedShapeExecutor)):
            table = network.table  # a compiled network runs only at its buckets
        if table is not None:
            first_chunk_frames, chunk_frames = bucket_cores(table.buckets, radius)
        self.name, self.network, self.radius, self.per_frame = name, network, radius, per_frame
        self.first_chunk_frames, self.chunk_frames = first_chunk_frames, chunk_frames
        self.conditions, self.table = tuple(conditions), table
        module, plain = (n.network if isinstance(n, NetworkHandle) else n for n in (network, whole))
        self.carried = module if table is None and isinstance(module, CarriedNetwork) else None
        """The network's carried form, where it is one: then each frame is fed once (`_carry`)."""
        self.whole = whole if self.carried is not None else None
        delay = getattr(self.carried, "delay", 0)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(
                f"network '{name}' ({type(module).__name__}) is a carried form with delay {delay!r}: "
                "it must be a whole number of frames, 0 or more"
            )
        placed = module if self.whole is None else plain
        self.pads_end = table is None and getattr(placed, "pads_windows", False)
        """Whether a window that could not take more context to round its length takes `end_pad` frames
        past the utterance's end instead (a network that masks its layers for a padded window asks for it:
        `pads_windows`); for a carried network, whether its plain form does, for a whole utterance."""

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> Decoder:
        name = _network_by_role(ctx, cls.role, params.pop("network", None))
        plain = ctx.network(name)
        carried = ctx.carried(plain)
        network, whole = (plain, None) if carried is None else (carried, plain)
        args = window_network_args(ctx, name)
        return construct(cls, params, ctx.path, **args, network=network, whole=whole)

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        if upstream is None:
            raise StackError(f"{type(self).__name__} needs a block before it that makes frames")
        first = first_chunk(features, self.first_chunk_frames, self.chunk_frames)
        largest = self.chunk_frames
        if first is not None and largest is not None and self.table is None and continues(features):
            largest *= CONTINUING_GROWTH  # no bucket bounds it, and audio of the call plays before it
            queued = queued_frames(features) // 2 // DYNAMIC_MULTIPLE * DYNAMIC_MULTIPLE  # a few lengths
            first = min(largest, max(first, queued))  # fewer windows, less context
        run = self._run if self.carried is None else self._carry
        return run(upstream, conditions(self, features), first, largest)

    def _run(
        self,
        upstream: Iterator[Chunk],
        extra: tuple[torch.Tensor, ...],
        first: int | None,
        largest: int | None,
    ) -> Iterator[Chunk]:
        """Windows whose first core is `first` frames, then doubling up to `largest`."""
        multiple = DYNAMIC_MULTIPLE if self.table is None else 1  # a bucket is a shape already
        for window in windows(upstream, self.radius, largest, first, multiple):
            if not len(window.frames):
                yield empty_chunk(window, self.per_frame)
                continue
            x, mask, offset = self.place(window)
            with torch.inference_mode():
                output = self.network(x, mask, *extra)[0]  # [rows * per_frame, ...]
            yield core_chunk(window, output, offset, self.per_frame)

    def _carry(
        self,
        upstream: Iterator[Chunk],
        extra: tuple[torch.Tensor, ...],
        first: int | None,
        largest: int | None,
    ) -> Iterator[Chunk]:
        """The same windows, each feeding the carried network only the frames it has not seen; its output
        lags them by `delay` frames, the halo the windows wait for. The last call feeds masked zeros past
        the utterance's end, up to a multiple of DYNAMIC_MULTIPLE frames, to finish it; a window whose
        halo the end cuts short is held for it (its core could not be finished before). An utterance in
        one window runs through the plain form, padded past its end as `_run` pads it (`pads_end`)."""
        assert self.carried is not None
        delay, state, fed, made = self.carried.delay, (), 0, 0
        held: list[torch.Tensor] = []  # frames not fed yet, [*, C] each
        for window in windows(upstream, delay, largest, first, DYNAMIC_MULTIPLE):  # `whole`'s: end_pad
            if window.start == 0 and window.final and self.whole is not None and len(window.frames):
                x, mask, offset = self.place(window)  # the whole utterance: nothing to carry, or to finish
                with torch.inference_mode():
                    output = self.whole(x, mask, *extra)[0]
                yield core_chunk(window, output, offset, self.per_frame)
                return
            held.append(window.frames[fed - window.lo :])
            fed = window.hi
            if not window.final and window.hi - window.stop < delay:
                continue
            frames = torch.cat(held)  # [n, C]: frames [fed - n, fed)
            held.clear()
            if not state:
                if not len(frames):
                    yield empty_chunk(window, self.per_frame)
                    continue
                state = self.carried.initial_state(frames.dtype, frames.device)
            n = len(frames)
            length = -(-(n + delay) // DYNAMIC_MULTIPLE) * DYNAMIC_MULTIPLE if window.final else n
            x = frames.new_zeros(1, length, *frames.shape[1:])  # [1, length, C]: past n, masked zeros
            x[0, :n] = frames
            mask = frames.new_zeros(1, length)  # [1, length]
            mask[0, :n] = 1
            with torch.inference_mode():
                output, *carried = self.network(x, mask, *extra, *state)
            state = tuple(carried)
            first_row = (made - (fed - n - delay)) * self.per_frame  # output starts `delay` behind the input
            rows = (window.stop - made) * self.per_frame
            yield Chunk(output[0, first_row : first_row + rows], made * self.per_frame, window.final)
            made = window.stop

    def place(self, window: Window) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The network's input for a window, its mask, and the input row of the core's first frame: the
        window as it is (or with its `end_pad`, where the network asks for it), or placed in its bucket
        with the core after a full halo (`pad_window`)."""
        if self.table is None:
            if window.end_pad and self.pads_end:
                x, mask = pad_end(window)  # [1, n + end_pad, C], [1, n + end_pad]
                return x, mask, window.start - window.lo
            x = window.frames.unsqueeze(0)  # [1, n, C]
            return x, x.new_ones(1, x.shape[1]), window.start - window.lo
        bucket = self.table.bucket_for(window.stop - window.start + 2 * self.radius)
        assert bucket is not None  # cores are cut to fit the largest bucket
        x, mask = pad_window(window, bucket)  # [1, bucket, C], [1, bucket]
        return x, mask, self.radius

    def describe(self) -> str:
        if self.table is None:
            carried = ", carried: each frame once" if self.carried is not None else ""
            return f"{type(self).__name__} '{self.name}' (receptive field +/-{self.radius} frames{carried})"
        return (
            f"{type(self).__name__} '{self.name}' (windows {self.table.buckets}: cores "
            f"{self.first_chunk_frames} first, doubling up to {self.chunk_frames}, +/-{self.radius} halo)"
        )


def window_network_args(ctx: BuildContext, name: str) -> dict[str, Any]:
    """What a windowed block needs to know of its network: its name, receptive field, rows per frame, and
    the features of the utterance it takes with every window (its declared inputs past frames and mask)."""
    network = ctx.addon.network(name)
    return {
        "name": name,
        "radius": receptive_radius(network, name),
        "per_frame": rows_per_frame(network),
        "conditions": ctx.addon.networks[name].inputs[2:],
    }


def conditions(block: Any, features: Features) -> tuple[torch.Tensor, ...]:
    """The features a windowed block passes with every window (`block.conditions`), as network inputs."""
    missing = [key for key in block.conditions if key not in features]
    if missing:
        raise StackError(f"{block.describe()} needs features {missing}; it was given {sorted(features)}")
    return tuple(network_input(features[key]) for key in block.conditions)


def rows_per_frame(network: nn.Module) -> int:
    """Output rows a network makes per input frame: its `hop` (audio samples per mel frame) for a
    vocoder, 1 for a network that maps frames to frames."""
    hop = network.hop if isinstance(network, AudioNetwork) else 1
    return hop if isinstance(hop, int) and hop >= 1 else 1


def receptive_radius(network: nn.Module, name: str) -> int:
    """The frames of context each side a windowed network needs; a network that does not declare it
    cannot be streamed exactly, so it is refused rather than streamed without context."""
    radius = network.receptive_radius if isinstance(network, WindowedNetwork) else None
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise ValueError(
            f"network '{name}' ({type(network).__name__}) declares no receptive_radius, so it cannot be "
            "run in windows"
        )
    return radius
