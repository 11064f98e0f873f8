"""Blocks that run compiled networks at fixed shapes (Neuron, or the same contract on CPU and CUDA).

The integration layer, not the network, owns splitting and padding: NeuronEncoders pads each sentence to
the smallest token bucket that holds it (splitting a sentence longer than the largest bucket at a phrase,
then a word boundary), PaddedDecoder decodes fixed windows of frames with a halo of its receptive field,
PaddedVocoder does the same with the neural vocoder, and PaddedGriffinLim vocodes fixed windows of mel
frames on the host. Networks mask padded positions, so padding never changes the outputs at real
positions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tts_neuron.audio import AudioConfig
from tts_neuron.backends.executor import BucketTable
from tts_neuron.blocks.acoustic import (
    Decoder,
    Encoder,
    Encoders,
    _network_by_role,
    window_network_args,
)
from tts_neuron.blocks.base import construct
from tts_neuron.blocks.context import BuildContext
from tts_neuron.blocks.pieces import pause_ids
from tts_neuron.blocks.vocoder import GriffinLimVocoder
from tts_neuron.blocks.windows import Window
from tts_neuron.errors import StackError


class NeuronEncoders(Encoders):
    """Every encoder network of the addon at fixed token buckets: an Encoder block per network, each
    calling its compiled executor, run on sentence pieces padded to a bucket."""

    compiles = "encoder"

    def __init__(self, blocks: list[Encoder], pauses: set[int], table: BucketTable) -> None:
        super().__init__(blocks, pauses, max_tokens=table.largest, table=table, pad=True)

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> NeuronEncoders:
        specs = ctx.addon.networks_with_role("encoder")
        if not specs:
            raise StackError(f"{ctx.path}: NeuronEncoders found no network with role 'encoder' in the addon")
        buckets = {tuple(spec.buckets) for spec in specs}
        if len(buckets) != 1:
            raise StackError(f"{ctx.path}: all encoder networks need the same buckets, got {sorted(buckets)}")
        blocks = [Encoder(spec.name, ctx.compiled(spec.name), spec.inputs, spec.outputs) for spec in specs]
        table = BucketTable(list(buckets.pop()))
        return construct(
            cls, params, ctx.path, blocks=blocks, pauses=pause_ids(ctx.addon.symbols), table=table
        )

    def describe(self) -> str:
        assert self.table is not None
        return f"NeuronEncoders (token buckets {self.table.buckets})"


class PaddedDecoder(Decoder):
    """The Decoder on a compiled network: windows placed in its buckets (the Decoder's `table`), so the
    network only ever runs at shapes it was compiled for; streamed output equals running the whole
    utterance at once."""

    compiles = "decoder"

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> PaddedDecoder:
        name = _network_by_role(ctx, cls.role, params.pop("network", None))
        for key in ("first_chunk_frames", "chunk_frames"):
            if key in params:
                raise StackError(f"{ctx.path}: {cls.__name__}: '{key}' comes from the network's buckets")
        table = BucketTable(ctx.addon.networks[name].buckets)
        args = window_network_args(ctx, name)
        return construct(cls, params, ctx.path, **args, network=ctx.compiled(name), table=table)


class PaddedVocoder(PaddedDecoder):
    """The addon's neural vocoder, compiled at fixed windows of mel frames (real-only inverse STFT, so it
    compiles for Neuron): streamed audio equals vocoding the whole utterance at once."""

    role = compiles = "vocoder"


class PaddedGriffinLim(GriffinLimVocoder):
    """Griffin-Lim on windows of one fixed size, padded with silence at the utterance's edges, so that a
    compiled vocoder can take its place. Griffin-Lim itself runs on the host (it has no compiled form)."""

    def __init__(self, audio: AudioConfig, device: torch.device, **params: Any) -> None:
        super().__init__(audio, device, **params)
        self.silence = math.log(audio.log_floor)  # the log-mel of silence

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> PaddedGriffinLim:
        return construct(cls, params, ctx.path, audio=ctx.addon.audio, device=ctx.device)

    def vocode(self, window: Window) -> torch.Tensor:
        frames, left = window.frames, window.missing_left
        size = self.window_frames + 2 * self.context_frames
        padded = frames.new_full((size, frames.shape[1]), self.silence)  # [size, n_mels]
        padded[left : left + len(frames)] = frames
        audio = self.griffin_lim(padded)  # [size * hop]
        return audio[left * self.hop : (left + len(frames)) * self.hop]

    def describe(self) -> str:
        return "Padded" + super().describe()
