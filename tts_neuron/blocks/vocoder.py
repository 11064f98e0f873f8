"""Vocoder blocks: mel frames in, audio samples out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from tts_neuron.audio import AudioConfig, GriffinLim
from tts_neuron.blocks.base import Chunk, Features, StreamableBlock, construct
from tts_neuron.blocks.buffer import FrameBuffer
from tts_neuron.errors import StackError
from tts_neuron.stack import BuildContext


class GriffinLimVocoder(StreamableBlock):
    """Griffin-Lim on windows of `window_frames` mel frames with `context_frames` each side.

    Griffin-Lim is iterative and has no bounded receptive field, so windows cannot match whole-utterance
    output exactly: each window is computed with context, its core is kept, and consecutive cores are
    cross-faded over `crossfade_frames` so that the independent phase estimates do not click.
    """

    def __init__(
        self,
        audio: AudioConfig,
        device: torch.device,
        n_iter: int = 32,
        window_frames: int = 64,
        context_frames: int = 16,
        crossfade_frames: int = 4,
    ) -> None:
        if window_frames < 1 or context_frames < 0 or not 0 <= crossfade_frames <= context_frames:
            raise ValueError("need window_frames >= 1 and 0 <= crossfade_frames <= context_frames")
        self.hop = audio.hop_length
        self.window_frames, self.context_frames = window_frames, context_frames
        self.n_iter = n_iter
        self.crossfade = crossfade_frames * self.hop
        self.griffin_lim = GriffinLim(audio, n_iter=n_iter).to(device)

    @classmethod
    def build(cls, params: dict[str, Any], ctx: BuildContext) -> GriffinLimVocoder:
        return construct(cls, params, ctx.path, audio=ctx.addon.audio, device=ctx.device)

    def stream(self, upstream: Iterator[Chunk] | None, features: Features) -> Iterator[Chunk]:
        if upstream is None:
            raise StackError("GriffinLim needs a block before it that makes mel frames (a Decoder)")
        return self._vocode(upstream)

    def _vocode(self, upstream: Iterator[Chunk]) -> Iterator[Chunk]:
        hop, window, context = self.hop, self.window_frames, self.context_frames
        buffer, done = FrameBuffer(), 0
        tail = torch.zeros(0)  # previous window's audio just past its core, to fade out over our start
        for chunk in upstream:
            buffer.append(chunk)
            while chunk.final or buffer.end - done >= window + context:
                a = done
                b = min(a + window, buffer.end)
                lo, hi = max(0, a - context), min(buffer.end, b + context)
                audio = self.vocode(buffer.window(lo, hi), lo - (a - context), a + window + context - hi)
                core = audio[(a - lo) * hop : (b - lo) * hop].clone()
                n = min(len(tail), len(core))
                if n:
                    ramp = torch.linspace(0.0, 1.0, n + 2, device=core.device)[1:-1]  # [n], excludes 0 and 1
                    core[:n] = tail[:n] * (1 - ramp) + core[:n] * ramp
                tail = audio[(b - lo) * hop : (b - lo) * hop + self.crossfade]
                done = b
                buffer.drop_before(done - context)
                last = chunk.final and done == buffer.end
                yield Chunk(core, a * hop, last)
                if last:
                    return

    def vocode(self, frames: torch.Tensor, missing_left: int, missing_right: int) -> torch.Tensor:
        """Audio [n * hop] of mel frames [n, n_mels]; `missing_*` count the frames of a full window that the
        utterance does not have (a fixed-shape vocoder pads them)."""
        return self.griffin_lim(frames)

    def describe(self) -> str:
        return (
            f"GriffinLim ({self.n_iter} iterations, windows of {self.window_frames} frames "
            f"+/-{self.context_frames} context)"
        )
