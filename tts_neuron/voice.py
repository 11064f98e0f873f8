"""The Python runtime: `load` an addon with one of its stacks, then stream or synthesise text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tts_neuron.addon import Addon, load_addon
from tts_neuron.backends import TARGETS, get_target
from tts_neuron.blocks.base import Chunk, StreamableStack
from tts_neuron.errors import StackError
from tts_neuron.frontend import Frontend, Sentence
from tts_neuron.stack import BuildContext, build_stack

FrameSink = Callable[[np.ndarray], None]
"""Receives mel frames [T, n_mels] as they pass, for callers that save them (`--mel`)."""


def resolve_device(target: str) -> torch.device:
    """Where a target's blocks keep their tensors; refuse a target whose runtime is absent."""
    get_target(target).check_available()
    return torch.device("cuda" if target == "cuda" else "cpu")  # Neuron executors take CPU tensors


class Voice:
    """An addon's stack, built for one target, behind a text-in, audio-out interface."""

    def __init__(
        self, addon: Addon, stack: StreamableStack, stack_name: str, target: str, device: torch.device
    ):
        self.addon = addon
        self.stack = stack
        self.stack_name = stack_name
        self.target = target
        self.device = device
        self.frontend = Frontend(addon.symbols, addon.language)

    @property
    def sample_rate(self) -> int:
        return self.addon.audio.sample_rate

    def stream(self, text: str, mel_sink: FrameSink | None = None) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as soon as each is ready, sentence after sentence."""
        for chunk in self.chunks(text, mel_sink):
            if chunk.data.ndim != 1:
                raise StackError(f"stack '{self.stack_name}' ends at frames, not audio: add a vocoder block")
            yield chunk.data.float().cpu().numpy()

    def synthesize(self, text: str) -> np.ndarray:
        """The whole utterance as one float32 array (use `stream` for long text)."""
        parts = list(self.stream(text))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def chunks(self, text: str, mel_sink: FrameSink | None = None) -> Iterator[Chunk]:
        """The stack's own output chunks (audio, or mel frames for a stack that ends at the decoder).

        `mel_sink` receives the mel frames of every sentence: a stack's output when it ends at frames,
        otherwise the frames that enter its last top-level block that takes frames.
        """
        for sentence in self.frontend.sentences(text):
            yield from self.sentence_chunks(sentence, mel_sink)

    def sentence_chunks(self, sentence: Sentence, mel_sink: FrameSink | None = None) -> Iterator[Chunk]:
        tokens = torch.tensor([sentence.tokens], dtype=torch.long, device=self.device)  # [1, N]
        features = {
            "tokens": tokens,
            "token_mask": torch.ones_like(tokens, dtype=torch.float32),
            "words": torch.tensor([sentence.words], dtype=torch.long, device=self.device),
        }
        if mel_sink is None:
            yield from self.stack.stream(None, features)
            return
        stream: Iterator[Chunk] | None = None
        taps: list[list[np.ndarray]] = []
        for block in self.stack.stack:
            stream = _tap_frames(block.stream(stream, features), taps)
        assert stream is not None
        yield from stream
        for frames in next((tap for tap in reversed(taps) if tap), []):
            mel_sink(frames)


def _tap_frames(stream: Iterator[Chunk], taps: list[list[np.ndarray]]) -> Iterator[Chunk]:
    """Pass chunks through, keeping a copy of those that are frames."""
    kept: list[np.ndarray] = []
    taps.append(kept)
    for chunk in stream:
        if chunk.data.ndim == 2:
            kept.append(chunk.data.float().cpu().numpy())
        yield chunk


def load(
    addon_dir: str | Path, stack: str | list[Any] | dict[str, Any] | None = None, target: str | None = None
) -> Voice:
    """Load an addon and build a stack for a target.

    `stack` is the name of one of the addon's stacks (default: its `default_stack`) or a stack itself (a
    list of block entries, or an object with a "stack" list, as in a stack file). `target` is cpu, cuda or
    neuron; by default the stack's name when that is a target, else cpu.
    """
    addon = load_addon(addon_dir)
    if stack is None or isinstance(stack, str):
        name = stack or addon.default_stack
        if name not in addon.stacks:
            raise StackError(f"{addon.config_path}: stacks: no stack '{name}'; it has {sorted(addon.stacks)}")
        spec, path = addon.stacks[name], f"{addon.config_path}: stacks.{name}"
    else:
        name, spec, path = "custom", stack, "stack"
    target = target or (name if name in TARGETS else "cpu")
    device = resolve_device(target)
    built = build_stack(spec, BuildContext(addon, device, path, target))
    return Voice(addon, built, name, target, device)


__all__ = ["TARGETS", "Voice", "load", "resolve_device"]
