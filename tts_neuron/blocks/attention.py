"""The autoregressive decoder of an attention voice: the step loop lives here, in the integration layer,
so the step network itself is one fixed-shape call that compiles per encoder-length bucket.

Each step makes `reduction` mel frames from the frame it made last. The loop watches where attention
looks and stops with an AttentionError, naming the step, the frame and the token, when attention stalls,
skips ahead, jumps back, runs past the end, or the stop token fires before the end: an attention voice
never loops forever and never truncates silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tts_neuron.backends.executor import BucketTable, pad_length
from tts_neuron.blocks.acoustic import _network_by_role
from tts_neuron.blocks.base import (
    FRAME_TOKENS,
    Chunk,
    Features,
    StreamableBlock,
    construct,
    first_chunk,
    place_tokens,
)
from tts_neuron.blocks.context import BuildContext
from tts_neuron.blocks.pieces import pause_ids, sentence_pieces
from tts_neuron.errors import AttentionError, StackError
from tts_neuron.models.protocols import AttentionStepNetwork
from tts_neuron.runners import shares_batches

StepNetwork = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
"""(memory, keys, memory_mask, alignment, state, last_frame, prenet_masks)
-> (frames, stop_logit, alignment, state)"""


@dataclass(frozen=True)
class AttentionGuards:
    """Limits on where attention may go, measured against the last *spoken* token (a sentence ends in
    pause tokens that attention may never visit). The defaults leave room around what we measured: the
    teacher's alignments (7,482 training sentences, 4 frames a step) advance at most 3 tokens a step,
    hold a phoneme at most 30 frames and average at most 8.1 frames a token; the trained voice, free
    running on 166 held-out sentences, advanced at most 3 tokens a step, dwelt at most 28 frames, went
    on at most 28 frames after reaching the last spoken token, and stopped at most 1 token short of it."""

    max_frames_per_token: int = 25
    """The step budget: an utterance of N tokens may take at most N * this many frames (plus a pause)."""
    max_stall_frames: int = 120
    """Frames attention may dwell on one token."""
    max_skip: int = 4
    """Tokens attention may advance in one step."""
    max_backtrack: int = 3
    """Tokens attention may step back from the furthest it has been (more is a repeat)."""
    max_tail_frames: int = 80
    """Frames the decoder may go on after attention reaches the last spoken token, before the stop token."""
    min_end_coverage: int = 1
    """The stop token is accepted only when attention has come within this many tokens of the last
    spoken one."""
    min_frames_per_token: int = 4
    """The stop token is ignored before the utterance has this many frames per token (pauses included):
    the teacher's sentences never have fewer than 5.0, and without it a one-vowel sentence ("a", "I")
    stopped after one step (0.05 s)."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"guards: {name} must be a non-negative integer, got {value!r}")
        if self.max_frames_per_token < 1:
            raise ValueError("guards: max_frames_per_token must be at least 1")

    def max_steps(self, n_tokens: int, reduction: int) -> int:
        return math.ceil((n_tokens * self.max_frames_per_token + self.max_tail_frames) / reduction)


class AttentionMonitor:
    """Follows the focus (argmax of the attention weights) of one segment, step by step."""

    def __init__(
        self,
        guards: AttentionGuards,
        n_tokens: int,
        reduction: int,
        first_frame: int = 0,
        first_token: int = 0,
        last_spoken: int | None = None,
    ) -> None:
        """`first_frame` and `first_token` place a segment within its sentence, for the error message;
        `last_spoken` is the index of its last token that is not a pause (default: its last token)."""
        self.guards, self.n, self.r = guards, n_tokens, reduction
        self.first_frame, self.first_token = first_frame, first_token
        self.end = n_tokens - 1 if last_spoken is None else last_spoken
        self.max_steps = guards.max_steps(n_tokens, reduction)
        self.furthest = 0
        self.dwell = 0  # steps on the current focus
        self.focus = 0
        self.tail = 0  # steps since the focus reached the last spoken token

    def check(self, step: int, weights: torch.Tensor, stop: bool) -> None:
        """Raise AttentionError if step `step` (0-based), attending with `weights` [N], went wrong."""
        focus = int(weights.argmax())
        g = self.guards
        if focus > self.furthest + g.max_skip:
            self.fail("skipped ahead", step, f"from token {self.token(self.furthest)} to {self.token(focus)}")
        if focus < self.furthest - g.max_backtrack:
            self.fail("jumped back", step, f"from token {self.token(self.furthest)} to {self.token(focus)}")
        self.dwell = self.dwell + 1 if focus == self.focus else 1
        self.focus, self.furthest = focus, max(self.furthest, focus)
        if self.dwell * self.r > g.max_stall_frames and focus < self.end:
            self.fail("stalled", step, f"on token {self.token(focus)} for {self.dwell * self.r} frames")
        if self.furthest >= self.end:
            self.tail += 1
            if self.tail * self.r > g.max_tail_frames and not stop:
                self.fail(
                    "ran past the end", step, f"{self.tail * self.r} frames after the last spoken token"
                )
        if stop and self.furthest < self.end - g.min_end_coverage:
            self.fail("stopped early", step, f"at token {self.token(self.furthest)}")
        if step + 1 >= self.max_steps and not stop:
            self.fail(
                "never stopped", step, f"within {self.max_steps} steps, at token {self.token(self.furthest)}"
            )

    def token(self, index: int) -> int:
        return self.first_token + index

    def fail(self, what: str, step: int, where: str) -> None:
        frame = self.first_frame + step * self.r
        last = self.token(self.end)
        raise AttentionError(
            f"attention {what} {where} (last spoken token {last}) at decoder step {step}, frame {frame}; "
            f"decoding stopped there",
            kind=what,
            step=step,
            frame=frame,
            token=self.token(self.furthest),
        )


class AttentionDecoder(StreamableBlock):
    """Mel frames from the attention memory, `reduction` frames a step, handed out in chunks.

    A sentence longer than `max_tokens` is decoded in segments cut after a pause, else between words,
    each with fresh state. The first chunk (12 steps, 48 frames at reduction 4) covers the postnet's and
    the vocoder's right context (8 + 17 frames) and a first audio chunk; the next ones double from 8 steps
    up to `chunk_steps` (32, 64, then 128 frames), as the vocoder's windows do after its first, so each
    audio window can run as soon as the steps it needs are made (chunks of 16 steps made each window
    after the first wait 8 steps longer, at about 7.5 ms a step in a trace of a loaded engine, where the
    first audio chunk plays 186 ms; docs/serving.md). Prenet dropout masks come from a
    generator seeded with `seed` for each sentence, so the same text gives the same frames whether
    streamed or interleaved with other streams, and the same to float rounding when the step is compiled.
    """

    places_tokens = True
    """Fills the FRAME_TOKENS feature (word timestamps) with its focus, step by step."""

    def __init__(
        self,
        name: str,
        network: StepNetwork,
        reduction: int,
        n_mels: int,
        state_size: int,
        prenet_channels: int,
        pause_ids: set[int],
        table: BucketTable | None = None,
        pad: bool = False,
        max_tokens: int = 256,
        first_chunk_steps: int = 12,
        second_chunk_steps: int = 8,
        chunk_steps: int = 32,
        stop_threshold: float = 0.5,
        prenet_keep: float = 0.5,
        seed: int = 0,
        guards: dict[str, int] | None = None,
    ) -> None:
        if min(first_chunk_steps, second_chunk_steps, chunk_steps) < 1:
            raise ValueError("chunk sizes must be at least one step")
        if not 0 < prenet_keep <= 1:
            raise ValueError(f"prenet_keep must be in (0, 1], got {prenet_keep}")
        if not 0 <= stop_threshold <= 1:
            raise ValueError(f"stop_threshold must be in [0, 1], got {stop_threshold}")
        if table is not None:
            max_tokens = min(max_tokens, table.largest)
        self.name, self.network, self.table, self.pad = name, network, table, pad
        self.reduction, self.n_mels = reduction, n_mels
        self.state_size, self.prenet_channels = state_size, prenet_channels
        self.pause_ids, self.max_tokens = pause_ids, max_tokens
        self.first_chunk_steps, self.chunk_steps = first_chunk_steps, chunk_steps
        self.second_chunk_steps = min(second_chunk_steps, chunk_steps)
        self.stop_threshold, self.prenet_keep, self.seed = stop_threshold, prenet_keep, seed
        self.guards = AttentionGuards(**(guards or {}))

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> AttentionDecoder:
        """The step with dynamic shapes; when other streams' steps may join (on an engine with other
        streams in it), a segment's memory is still padded to the step's token buckets (when it declares
        them), so that the steps of streams of different lengths meet at a few shapes and batch (the step
        masks padding: the frames are the same)."""
        name = _network_by_role(ctx, "decoder", params.pop("network", None))
        buckets = ctx.addon.networks[name].buckets
        table = BucketTable(buckets) if buckets else None
        args = cls._network_args(ctx, name)
        return construct(cls, params, ctx.path, **args, network=ctx.network(name), table=table)

    @staticmethod
    def _network_args(ctx: BuildContext, name: str) -> dict[str, Any]:
        step = ctx.addon.network(name)
        if not isinstance(step, AttentionStepNetwork):
            raise StackError(
                f"{ctx.path}: network '{name}' is not an attention decoder step (it needs reduction, n_mels, "
                "state_size and prenet_channels)"
            )
        return {
            "name": name,
            "reduction": step.reduction,
            "n_mels": step.n_mels,
            "state_size": step.state_size,
            "prenet_channels": step.prenet_channels,
            "pause_ids": pause_ids(ctx.addon.symbols),
        }

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        if upstream is not None:
            raise StackError("AttentionDecoder starts a stack: it reads the encoder's memory, not chunks")
        for key in ("memory", "keys", "tokens"):
            if key not in features:
                raise StackError(f"AttentionDecoder needs feature '{key}'; it was given {sorted(features)}")
        return self._chunks(features)

    def _chunks(self, features: Features) -> Iterator[Chunk]:
        tokens = features["tokens"][0]  # [N]
        segments = sentence_pieces(features, self.max_tokens, self.pause_ids)
        generator = torch.Generator().manual_seed(self.seed)
        pending: list[torch.Tensor] = []
        emitted = made = 0
        due = first_chunk(features, self.first_chunk_steps, self.chunk_steps)
        growth = first_chunk(features, self.second_chunk_steps, self.chunk_steps)  # the chunk after it
        for index, (a, b) in enumerate(segments):
            last_segment = index == len(segments) - 1
            memory, keys = features["memory"][:, a:b], features["keys"][:, a:b]
            spoken = [i for i in range(a, b) if int(tokens[i]) not in self.pause_ids]
            last_spoken = spoken[-1] - a if spoken else b - a - 1
            monitor = AttentionMonitor(self.guards, b - a, self.reduction, made, a, last_spoken)
            steps = self._segment(memory, keys, monitor, generator, inner=not last_segment)
            for frames, stop in steps:
                if FRAME_TOKENS in features:  # word timestamps: this step's frames speak its focus
                    place_tokens(features, made, torch.full((len(frames),), a + monitor.focus))
                pending.append(frames)
                made += len(frames)
                if (stop and last_segment) or len(pending) >= due:
                    final = stop and last_segment
                    if final and FRAME_TOKENS in features:
                        place_tokens(features, made, torch.tensor([len(tokens)]))
                    yield Chunk(torch.cat(pending), emitted, final)
                    emitted, pending = made, []
                    due, growth = growth, min(2 * growth, self.chunk_steps)
                    if final:
                        return

    def _segment(
        self,
        memory: torch.Tensor,
        keys: torch.Tensor,
        monitor: AttentionMonitor,
        generator: torch.Generator,
        inner: bool,
    ) -> Iterator[tuple[torch.Tensor, bool]]:
        """Decode one segment from fresh state: (frames [r, n_mels], stop) a step, checked by the guards.

        An `inner` segment ends inside its sentence, where the voice never learned to stop: it ends when
        attention reaches its last token (the pause it was cut after), or at the stop token."""
        # memory: [1, n, C], keys: [1, n, A]
        n = memory.shape[1]
        mask = memory.new_ones(1, n)
        if self.table is not None and (self.pad or shares_batches(self.network)):
            bucket = self.table.bucket_for(n)
            assert bucket is not None  # segments are cut to fit the largest bucket
            memory, keys, mask = (pad_length(x, bucket) for x in (memory, keys, mask))
        alignment = memory.new_zeros(1, 2, memory.shape[1])
        state = memory.new_zeros(1, self.state_size)
        last = memory.new_zeros(1, self.n_mels)
        for step in range(monitor.max_steps):
            keep = torch.full((1, 2, self.prenet_channels), self.prenet_keep)
            masks = (torch.bernoulli(keep, generator=generator) / self.prenet_keep).to(memory.device)
            with torch.inference_mode():
                frames, stop_logit, alignment, state = self.network(
                    memory, keys, mask, alignment, state, last, masks
                )
            weights = alignment[0, 0, :n]
            stop = bool(torch.sigmoid(stop_logit[0]) > self.stop_threshold)
            stop = stop or (inner and int(weights.argmax()) == n - 1)
            stop = stop and (step + 1) * self.reduction >= self.guards.min_frames_per_token * n
            monitor.check(step, weights, stop)
            last = frames[:, -1]
            yield frames[0], stop
            if stop:
                return

    def describe(self) -> str:
        return (
            f"{type(self).__name__} '{self.name}' ({self.reduction} frames a step, segments of at most "
            f"{self.max_tokens} tokens, at most {self.guards.max_frames_per_token} frames a token)"
        )


class PaddedAttentionDecoder(AttentionDecoder):
    """The same loop around a compiled step: each segment's memory is padded once to the smallest token
    bucket that holds it, and every step runs at that bucket."""

    compiles = "decoder"

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> PaddedAttentionDecoder:
        name = _network_by_role(ctx, "decoder", params.pop("network", None))
        table = BucketTable(ctx.addon.networks[name].buckets)
        args = cls._network_args(ctx, name)
        return construct(cls, params, ctx.path, **args, network=ctx.compiled(name), table=table, pad=True)
