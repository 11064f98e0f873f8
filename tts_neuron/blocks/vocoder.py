"""Vocoder blocks: mel frames in, audio samples out.

`Vocoder` runs the neural vocoder (the addon's network of role "vocoder") in windows with its receptive
field of context, so its streamed audio equals vocoding the whole utterance; `GriffinLim` needs no
network (a baseline, and for addons without a vocoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from tts_neuron.audio import AudioConfig, GriffinLim
from tts_neuron.blocks.acoustic import Decoder
from tts_neuron.blocks.base import Chunk, Features, StreamableBlock, construct
from tts_neuron.blocks.context import BuildContext
from tts_neuron.blocks.windows import Window, windows
from tts_neuron.errors import StackError


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
        hop = self.hop
        tail = torch.zeros(0)  # previous window's audio just past its core, to fade out over our start
        for window in windows(upstream, self.context_frames, self.window_frames):
            audio = self.vocode(window)  # [(hi - lo) * hop]
            core = audio[window.core.start * hop : window.core.stop * hop].clone()
            n = min(len(tail), len(core))
            if n:
                ramp = torch.linspace(0.0, 1.0, n + 2, device=core.device)[1:-1]  # [n], excludes 0 and 1
                core[:n] = tail[:n] * (1 - ramp) + core[:n] * ramp
            tail = audio[window.core.stop * hop : window.core.stop * hop + self.crossfade]
            yield Chunk(core, window.start * hop, window.final)

    def vocode(self, window: Window) -> torch.Tensor:
        """Audio [(hi - lo) * hop] of the window's mel frames (a fixed-shape vocoder pads them first)."""
        if not len(window.frames):
            return window.frames.new_zeros(0)
        return self.griffin_lim(window.frames)

    def describe(self) -> str:
        return (
            f"GriffinLim ({self.n_iter} iterations, windows of {self.window_frames} frames "
            f"+/-{self.context_frames} context)"
        )


class Vocoder(Decoder):
    """The addon's neural vocoder on windows of mel frames, each with its receptive field of context each
    side: streamed audio equals vocoding the whole utterance at once (dynamic shapes: CPU and GPU).

    The first window makes 16 frames of audio, so it comes early; each next one twice as many, up to 128.
    A network with a carried form (`MelVocoder`'s) is fed each frame once instead of each window with its
    context (`Decoder._carry`)."""

    role = "vocoder"

    def __init__(
        self,
        name: str,
        network: Callable[..., torch.Tensor],
        radius: int,
        per_frame: int = 1,
        first_chunk_frames: int | None = 16,
        chunk_frames: int | None = 128,
        conditions: Sequence[str] = (),
        whole: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            name, network, radius, per_frame, first_chunk_frames, chunk_frames, conditions, whole=whole
        )
