"""Blocks that run compiled networks at fixed shapes (Neuron, or the same contract on CPU and CUDA).

The integration layer, not the network, owns splitting and padding: NeuronEncoders pads each sentence to
the smallest token bucket that holds it (splitting a sentence longer than the largest bucket at a phrase,
then a word boundary), PaddedDecoder decodes fixed windows of frames with a halo of its receptive field,
and PaddedGriffinLim vocodes fixed windows of mel frames. Networks mask padded positions, so padding
never changes the outputs at real positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from tts_neuron.audio import AudioConfig
from tts_neuron.backends.executor import BucketTable, FixedShapeExecutor, pad_length
from tts_neuron.blocks.acoustic import Encoder, Encoders, _network_by_role, token_slice
from tts_neuron.blocks.base import Chunk, Features, StreamableBlock, construct
from tts_neuron.blocks.buffer import FrameBuffer
from tts_neuron.blocks.pieces import pause_ids
from tts_neuron.blocks.vocoder import GriffinLimVocoder
from tts_neuron.errors import StackError
from tts_neuron.stack import BuildContext


class NeuronEncoders(Encoders):
    """Every encoder network of the addon at fixed token buckets: an Encoder block per network, each
    calling its compiled executor, run on sentence pieces padded to a bucket."""

    def __init__(self, blocks: list[Encoder], pauses: set[int], table: BucketTable) -> None:
        super().__init__(blocks, pauses, max_tokens=table.largest)
        self.table = table

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> NeuronEncoders:
        specs = ctx.addon.networks_with_role("encoder")
        if not specs:
            raise StackError(f"{ctx.path}: NeuronEncoders found no network with role 'encoder' in the addon")
        executors = {spec.name: ctx.compiled(spec.name) for spec in specs}
        buckets = {tuple(executor.table.buckets) for executor in executors.values()}
        if len(buckets) != 1:
            raise StackError(f"{ctx.path}: all encoder networks need the same buckets, got {sorted(buckets)}")
        blocks = [Encoder(spec.name, executors[spec.name], spec.inputs, spec.outputs) for spec in specs]
        table = BucketTable(list(buckets.pop()))
        return construct(
            cls, params, ctx.path, blocks=blocks, pauses=pause_ids(ctx.addon.symbols), table=table
        )

    def encode_piece(self, features: Features, start: int, stop: int) -> Features:
        """Tokens [start, stop) padded to their bucket, through every encoder, unpadded."""
        bucket = self.table.bucket_for(stop - start)
        assert bucket is not None  # pieces are cut to fit the largest bucket
        piece = {key: pad_length(value, bucket) for key, value in token_slice(features, start, stop).items()}
        return {key: value[:, : stop - start] for key, value in self.run({**features, **piece}).items()}

    def describe(self) -> str:
        return f"NeuronEncoders (token buckets {self.table.buckets})"


class PaddedDecoder(StreamableBlock):
    """Decodes fixed windows: a core of frames plus a halo of the receptive field each side, padded at the
    utterance's edges and trimmed after; streamed output equals decoding the whole utterance."""

    def __init__(self, name: str, executor: FixedShapeExecutor, radius: int, channels: int) -> None:
        self.name, self.executor, self.radius, self.channels = name, executor, radius, channels
        self.core = executor.table.largest - 2 * radius
        if self.core < 1:
            raise ValueError(
                f"the largest window {executor.table.largest} leaves no core past a halo of {radius}"
            )

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> PaddedDecoder:
        name = _network_by_role(ctx, "decoder", params.pop("network", None))
        network = ctx.addon.network(name)
        radius = getattr(network, "receptive_radius", 0)
        channels = network.example_inputs(1)[0].shape[-1]  # type: ignore[operator]  # networks define it
        return construct(
            cls, params, ctx.path, name=name, executor=ctx.compiled(name), radius=radius, channels=channels
        )

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        if upstream is None:
            raise StackError("PaddedDecoder needs a block before it that makes frames (an Upsampler)")
        return self._decode(upstream)

    def _decode(self, upstream: Iterator[Chunk]) -> Iterator[Chunk]:
        buffer, done = FrameBuffer(), 0
        for chunk in upstream:
            buffer.append(chunk)
            while chunk.final or buffer.end - done >= self.core + self.radius:
                stop = min(done + self.core, buffer.end)
                mel = self.decode_window(buffer, done, stop)
                last = chunk.final and stop == buffer.end
                yield Chunk(mel, done, last)
                done = stop
                buffer.drop_before(done - self.radius)
                if last:
                    return

    def decode_window(self, buffer: FrameBuffer, start: int, stop: int) -> torch.Tensor:
        """Mel frames [start, stop): frames [start - halo, stop + halo) placed in the smallest window that
        holds them, with zero, masked frames where the utterance has none."""
        lo, hi = max(0, start - self.radius), min(buffer.end, stop + self.radius)
        left = lo - (start - self.radius)  # frames missing before the utterance's start
        window = self.executor.table.bucket_for(stop - start + 2 * self.radius)
        assert window is not None  # stop - start <= core
        frames = buffer.window(lo, hi)  # [hi - lo, C]
        x = frames.new_zeros(1, window, self.channels)
        mask = frames.new_zeros(1, window)
        x[0, left : left + hi - lo] = frames
        mask[0, left : left + hi - lo] = 1
        with torch.inference_mode():
            mel = self.executor(x, mask)  # [1, window, n_mels]
        return mel[0, self.radius : self.radius + stop - start]

    def describe(self) -> str:
        return (
            f"PaddedDecoder '{self.name}' (windows {self.executor.table.buckets}: core {self.core} "
            f"+/-{self.radius} halo)"
        )


class PaddedGriffinLim(GriffinLimVocoder):
    """Griffin-Lim on windows of one fixed size, padded with silence at the utterance's edges, so that a
    compiled vocoder can take its place. Griffin-Lim itself runs on the host (it has no compiled form)."""

    def __init__(self, audio: AudioConfig, device: torch.device, **params: Any) -> None:
        super().__init__(audio, device, **params)
        self.silence = math.log(audio.log_floor)  # the log-mel of silence

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> PaddedGriffinLim:
        return construct(cls, params, ctx.path, audio=ctx.addon.audio, device=ctx.device)

    def vocode(self, frames: torch.Tensor, missing_left: int, missing_right: int) -> torch.Tensor:
        size = self.window_frames + 2 * self.context_frames
        padded = frames.new_full((size, frames.shape[1]), self.silence)  # [size, n_mels]
        padded[missing_left : missing_left + len(frames)] = frames
        audio = self.griffin_lim(padded)  # [size * hop]
        return audio[missing_left * self.hop : (missing_left + len(frames)) * self.hop]

    def describe(self) -> str:
        return "Padded" + super().describe()
