"""The Python runtime: `load` an addon with one of its stacks, then stream or synthesise text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tts_neuron.addon import Addon, load_addon
from tts_neuron.backends import TARGETS, get_target
from tts_neuron.blocks.base import Block, Chunk, StreamableStack
from tts_neuron.errors import AddonError, AttentionError, StackError
from tts_neuron.frontend import Frontend, Sentence
from tts_neuron.runners import DirectRunner, Runner, handles
from tts_neuron.stack import BuildContext, build_stack
from tts_neuron.timestamps import WordTime, timed_stream

FrameSink = Callable[[np.ndarray], None]
"""Receives mel frames [T, n_mels] as they pass, for callers that save them (`--mel`)."""


def resolve_device(target: str) -> torch.device:
    """Where a target's blocks keep their tensors; refuse a target whose runtime is absent."""
    get_target(target).check_available()
    return torch.device("cuda" if target == "cuda" else "cpu")  # Neuron executors take CPU tensors


class Voice:
    """An addon's stack, built for one target, behind a text-in, audio-out interface."""

    def __init__(
        self,
        addon: Addon,
        stack: StreamableStack,
        stack_name: str,
        target: str,
        device: torch.device,
        frontend: Frontend | None = None,
        runner: Runner | None = None,
    ):
        self.addon = addon
        self.stack = stack
        self.stack_name = stack_name
        self.target = target
        self.device = device
        self.frontend = frontend or Frontend(addon.symbols, addon.language)
        self.runner = runner or DirectRunner()
        """What runs the stack's network calls (and its frontend, a sentence ahead, on an engine)."""
        self.takes_speed = _any_block(stack, lambda block: getattr(block, "takes_rate", False))
        """Whether the stack can change its speaking rate per call (duration voices can)."""

    @property
    def sample_rate(self) -> int:
        return self.addon.audio.sample_rate

    def stream(
        self, text: str, mel_sink: FrameSink | None = None, speed: float = 1.0
    ) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as soon as each is ready, sentence after sentence.

        `speed` is this call's speaking rate (0.25 to 4, >1 is faster), for stacks that `takes_speed`."""
        for sentence, chunks in self._sentences(text, mel_sink, speed):
            for chunk in chunks:
                if chunk.data.ndim != 1:
                    raise StackError(
                        f"stack '{self.stack_name}' ends at frames, not audio: add a vocoder block"
                    )
                yield chunk.data.float().cpu().numpy()
            pause = round(sentence.pause_after * self.sample_rate)  # SSML's <break>
            if pause > 0:
                yield np.zeros(pause, dtype=np.float32)

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        """The whole utterance as one float32 array (use `stream` for long text)."""
        parts = list(self.stream(text, speed=speed))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def chunks(self, text: str, mel_sink: FrameSink | None = None, speed: float = 1.0) -> Iterator[Chunk]:
        """The stack's own output chunks (audio, or mel frames for a stack that ends at the decoder).

        `mel_sink` receives the mel frames of every sentence: a stack's output when it ends at frames,
        otherwise the frames that enter its last top-level block that takes frames.
        """
        for _, chunks in self._sentences(text, mel_sink, speed):
            yield from chunks

    def timed_stream(self, text: str, speed: float = 1.0) -> Iterator[tuple[np.ndarray, list[WordTime]]]:
        """`stream`'s chunks, each with the word timestamps of its sentence when it is the sentence's first
        (tts_neuron.timestamps); duration voices only."""
        return timed_stream(self, text, speed)

    def sentences(self, text: str, speed: float = 1.0) -> Iterator[Sentence]:
        """The text's sentences as this voice speaks them, after the checks `stream` makes."""
        for sentence, _ in self._sentences(text, None, speed):
            yield sentence

    @staticmethod
    def sentence_rate(sentence: Sentence, speed: float) -> float:
        """A sentence's speaking rate: a call's speed times SSML's <prosody rate>, within 0.25 to 4."""
        return min(max(speed * sentence.rate, 0.25), 4.0)

    def _sentences(
        self, text: str, mel_sink: FrameSink | None, speed: float
    ) -> Iterator[tuple[Sentence, Iterator[Chunk]]]:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4:
            raise ValueError(f"speed must be a number from 0.25 to 4, got {speed!r}")
        if speed != 1 and not self.takes_speed:
            raise StackError(f"stack '{self.stack_name}' of {self.addon.name} cannot change its speed")
        for sentence in self.runner.ahead(self.frontend.sentences(text)):
            yield sentence, self._checked(sentence, mel_sink, speed)

    def _checked(self, sentence: Sentence, mel_sink: FrameSink | None, speed: float) -> Iterator[Chunk]:
        """One sentence's chunks, with an attention failure named by the phoneme and word it was at."""
        rate = self.sentence_rate(sentence, speed)
        try:
            yield from self.sentence_chunks(sentence, mel_sink, rate)
        except AttentionError as err:
            phoneme = sentence.phonemes[min(err.token, len(sentence.phonemes) - 1)]
            raise AttentionError(
                f"{self.addon.name}: {err} (phoneme '{phoneme}' of word {sentence.words[err.token] + 1} "
                f"in {sentence.text!r})",
                kind=err.kind,
                step=err.step,
                frame=err.frame,
                token=err.token,
            ) from None

    def features(self, sentence: Sentence, rate: float = 1.0) -> dict[str, torch.Tensor]:
        """What the stack is given for one sentence."""
        tokens = torch.tensor([sentence.tokens], dtype=torch.long, device=self.device)  # [1, N]
        features = {
            "tokens": tokens,
            "token_mask": torch.ones_like(tokens, dtype=torch.float32),
            "words": torch.tensor([sentence.words], dtype=torch.long, device=self.device),
        }
        if rate != 1:
            features["rate"] = torch.tensor(float(rate))
        return features

    def sentence_chunks(
        self, sentence: Sentence, mel_sink: FrameSink | None = None, rate: float = 1.0
    ) -> Iterator[Chunk]:
        features = self.features(sentence, rate)
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
    addon_dir: str | Path,
    stack: str | list[Any] | dict[str, Any] | None = None,
    target: str | None = None,
    frontend: Frontend | None = None,
    threads: int | None = 1,
    allow_imports: bool = True,
    runner: Runner | None = None,
) -> Voice:
    """Load an addon and build a stack for a target.

    `stack` is the name of one of the addon's stacks (default: its `default_stack`) or a stack itself (a
    list of block entries, or an object with a "stack" list, as in a stack file). `target` is cpu, cuda or
    neuron; by default the stack's name when that is a target, else cpu. `frontend` lets voices with the
    same symbol table and language share one. With `allow_imports=False` the stack may use only built-in,
    registered and entry-point blocks (a "module:Class" entry is a StackError before anything is imported)
    and built-in network architectures.
    `runner` runs the stack's network calls: by default each at once (`DirectRunner`); a server passes its
    `Engine` (`tts_neuron.engine`), shared by its voices, which schedules and batches concurrent streams.

    `threads` sets torch's intra-op threads for the process (None leaves them alone). One is the serving
    policy: one thread per stream, streams in parallel. More threads help one stream on an idle host
    (2 threads: RTF 0.013 against 0.017) and hurt on a busy one (0.046 against 0.016 with one core taken),
    because OpenMP threads spin waiting for each other.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        torch.set_num_threads(threads)
    addon = load_addon(addon_dir, allow_imports)
    if stack is None or isinstance(stack, str):
        name = stack or addon.default_stack
        if name not in addon.stacks:
            raise StackError(f"{addon.config_path}: stacks: no stack '{name}'; it has {sorted(addon.stacks)}")
        spec, path = addon.stacks[name], f"{addon.config_path}: stacks.{name}"
    else:
        name, spec, path = "custom", stack, "stack"
    target = target or (name if name in TARGETS else "cpu")
    device = resolve_device(target)
    if frontend is not None and (frontend.symbols, frontend.language) != (addon.symbols, addon.language):
        raise AddonError(f"{addon.config_path}: its symbols or language differ from the shared frontend's")
    runner = runner or DirectRunner()
    context = BuildContext(addon, device, path, target, allow_imports, runner=runner)
    built = build_stack(spec, context)
    if target == "neuron" and not _runs_compiled(built):
        raise StackError(
            f"{path}: runs no compiled network, so target 'neuron' would leave every block on the host CPU; "
            f"use a stack of compiled blocks (the addon has {sorted(addon.stacks)})"
        )
    return Voice(addon, built, name, target, device, frontend, runner)


def _any_block(block: Block, test: Callable[[Block], bool]) -> bool:
    return test(block) or any(_any_block(child, test) for child in block.children())


def _runs_compiled(block: Block) -> bool:
    """Whether any block of the tree calls a compiled, fixed-shape network."""
    return _any_block(block, lambda b: any(handle.compiled for handle in handles(b)))


class VoiceSet:
    """Several voices in one process, chosen per call by name. Voices of one symbol table and language
    share a frontend; each stream keeps its own state, so streams of different voices can interleave."""

    def __init__(self, runner: Runner | None = None, allow_imports: bool = True) -> None:
        """`runner` is shared by every voice added (an `Engine` batches across voices' streams per
        network); `allow_imports=False` allows only built-in and registered blocks in their stacks."""
        self.voices: dict[str, Voice] = {}
        self.runner = runner or DirectRunner()
        self.allow_imports = allow_imports

    def add(
        self,
        addon_dir: str | Path,
        stack: str | None = None,
        target: str | None = None,
        name: str | None = None,
    ) -> Voice:
        """Load a voice under `name` (default: the addon's name) and return it."""
        addon = load_addon(addon_dir, self.allow_imports)
        name = name or addon.name
        if name in self.voices:
            raise AddonError(f"a voice named '{name}' is already loaded; give this one another name")
        shared = next(
            (
                voice.frontend
                for voice in self.voices.values()
                if (voice.addon.symbols, voice.addon.language) == (addon.symbols, addon.language)
            ),
            None,
        )
        threads = 1 if isinstance(self.runner, DirectRunner) else None  # an engine owns its threads
        voice = load(addon_dir, stack, target, shared, threads, self.allow_imports, self.runner)
        self.voices[name] = voice
        return voice

    def __getitem__(self, name: str) -> Voice:
        if name not in self.voices:
            raise AddonError(f"no voice '{name}'; loaded: {', '.join(sorted(self.voices)) or 'none'}")
        return self.voices[name]

    def stream(self, text: str, voice: str) -> Iterator[np.ndarray]:
        return self[voice].stream(text)

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        return self[voice].synthesize(text)


__all__ = ["TARGETS", "Voice", "VoiceSet", "load", "resolve_device"]
