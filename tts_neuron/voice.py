"""The Python runtime: `load` an addon with one of its stacks, then stream or synthesise text."""

from __future__ import annotations

import copy
import importlib
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tts_neuron.addon import FRONTENDS, Addon, load_addon
from tts_neuron.allocator import hold_freed_memory, keep_built_kernels
from tts_neuron.backends import TARGETS, get_target
from tts_neuron.blocks.base import CONTINUES, QUEUED_FRAMES, Block, Chunk, StreamableStack
from tts_neuron.errors import AddonError, AttentionError, SettingError, StackError, UnknownSpeakerError
from tts_neuron.frontend import Frontend, Sentence
from tts_neuron.runners import DirectRunner, Runner, handles
from tts_neuron.stack import BuildContext, build_stack
from tts_neuron.timestamps import WordTime, timed_stream

FrameSink = Callable[[np.ndarray], None]
"""Receives mel frames [T, n_mels] as they pass, for callers that save them (`--mel`)."""


_SENTENCE_STEP = 0xD1B54A32D192ED03
"""Spreads a call's seed into one seed per sentence."""


@dataclass(frozen=True)
class CallSettings:
    """One call's validated per-call settings as features (Piper's noise_scale, a speaker id, ...), the
    seed its sentences' noise is drawn from (the caller's, else a fresh one), and whether its later
    sentences start at full chunk sizes (`Runner.paces`)."""

    features: dict[str, torch.Tensor]
    seed: int
    later_full: bool = True

    def sentence(self, index: int, queued_frames: int = 0) -> dict[str, torch.Tensor]:
        """The features of the call's `index`-th sentence: the settings, that sentence's own seed, and
        CONTINUES for every sentence but the first when later sentences start at full size, with the
        frames a real-time listener has queued by then (`ListenerClock`)."""
        seed = (self.seed + index * _SENTENCE_STEP) % (1 << 63)
        later = self.later_full and index > 0
        return {
            **self.features,
            "seed": torch.tensor(seed, dtype=torch.int64),
            CONTINUES: torch.tensor(later),
            QUEUED_FRAMES: torch.tensor(queued_frames if later else 0),
        }


class ListenerClock:
    """A listener who plays a call's audio in real time from its first chunk: how many frames of what the
    call has made they have yet to hear (QUEUED_FRAMES), so that a later sentence can take larger
    windows. A listener who plays later or slower has more queued, never less."""

    def __init__(self, sample_rate: int, hop_length: int, now: Callable[[], float] = time.monotonic) -> None:
        self.sample_rate, self.hop_length, self.now = sample_rate, hop_length, now
        self.started: float | None = None
        self.samples = 0

    def made(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """`chunks`, counted as they pass (audio samples, or frames of a stack that ends at frames)."""
        for chunk in chunks:
            if self.started is None:
                self.started = self.now()
            self.samples += len(chunk.data) * (1 if chunk.data.ndim == 1 else self.hop_length)
            yield chunk

    def queued_frames(self) -> int:
        if self.started is None:
            return 0
        played = (self.now() - self.started) * self.sample_rate
        return max(0, int(self.samples - played) // self.hop_length)


def make_frontend(addon: Addon) -> Any:
    """The frontend the addon declares (`tts_neuron.addon.FRONTENDS`): by default espeak-ng mnemonics
    through its symbols; a Piper voice's IPA through its phoneme_id_map."""
    module_name, _, attr = FRONTENDS[addon.frontend.get("type", "espeak")].partition(":")
    factory: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    return factory(addon)


def _frontend_key(addon: Addon) -> tuple[Any, ...]:
    """Addons with equal keys can share one frontend."""
    return (addon.symbols, addon.language, addon.frontend)


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
        """`frontend` may be shared with voices of the same symbols, language and frontend kind; by default
        the addon's own (`make_frontend`)."""
        self.addon = addon
        self.stack = stack
        self.stack_name = stack_name
        self.target = target
        self.device = device
        self.frontend = frontend or make_frontend(addon)
        self.runner = runner or DirectRunner()
        """What runs the stack's network calls (and its frontend, a sentence ahead, on an engine)."""
        self.takes_speed = _any_block(stack, lambda block: getattr(block, "takes_rate", False))
        """Whether the stack can change its speaking rate per call (duration voices can)."""
        self.blends_speakers = _any_block(stack, lambda block: getattr(block, "blends_speakers", False))
        """Whether a call may ask for a blend of speakers, `a+b` (their styles averaged: Kokoro voices)."""
        self.bound: dict[str, Any] = {}
        """Settings this voice object applies to every call unless the call sets them (`with_settings`)."""

    @property
    def sample_rate(self) -> int:
        return self.addon.audio.sample_rate

    @property
    def setting_names(self) -> list[str]:
        """The per-call settings `stream` takes besides `speed`: the addon's own (Piper's length_scale,
        noise_scale, noise_w), `speaker` for a multi-speaker voice, and `seed`."""
        return [*self.addon.settings, *(["speaker"] if self.addon.speakers else []), "seed"]

    def with_settings(self, **settings: Any) -> Voice:
        """This voice with `settings` applied to every call that does not set them (one speaker of a
        multi-speaker voice, as a server lists it): a view sharing the stack, frontend and networks."""
        self.call_settings(settings)  # refuse a bad setting now, not at the first call
        view = copy.copy(self)
        view.bound = {**self.bound, **settings}
        return view

    def call_settings(self, settings: Mapping[str, Any]) -> CallSettings:
        """A call's settings checked against what the voice takes, the voice's bound ones and the addon's
        defaults filled in. SettingError for an unknown setting or a value out of range,
        UnknownSpeakerError for a speaker the voice does not have."""
        given = {**self.bound, **{k: v for k, v in settings.items() if v is not None}}
        unknown = sorted(set(given) - set(self.setting_names))
        if unknown:
            if "speaker" in unknown:
                raise UnknownSpeakerError(
                    f"{self.addon.name} has one speaker; it takes no speaker ({given['speaker']!r} given)"
                )
            raise SettingError(
                f"{self.addon.name} takes no setting {', '.join(unknown)}; it takes speed, "
                f"{', '.join(self.setting_names)}"
            )
        features: dict[str, torch.Tensor] = {}
        for name, spec in self.addon.settings.items():
            value = given.get(name, spec.default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SettingError(f"{name} must be a number, got {value!r}")
            if not spec.min <= value <= spec.max:
                raise SettingError(f"{name} must be from {spec.min:g} to {spec.max:g}, got {value!r}")
            features[name] = torch.tensor(float(value))
        if self.addon.speakers:
            features.update(self.speaker_features(given.get("speaker")))
        seed = given.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SettingError(f"seed must be an integer, got {seed!r}")
        seed = secrets.randbits(63) if seed is None else seed % (1 << 63)
        return CallSettings(features, seed, later_full=not self.runner.paces())

    def speaker_features(self, speaker: str | int | None) -> dict[str, torch.Tensor]:
        """A call's speaker as features: its id `speaker` [1]; for a blend `a+b+...` (a voice that
        `blends_speakers`, Kokoro-FastAPI's convention) also `speaker_weights` over the ids, averaged."""
        if not (isinstance(speaker, str) and "+" in speaker):
            return {"speaker": torch.tensor([self.speaker_id(speaker)], device=self.device)}
        if not self.blends_speakers:
            raise UnknownSpeakerError(f"{self.addon.name} cannot blend speakers ({speaker!r} given)")
        ids = [self.speaker_id(part) for part in speaker.split("+")]
        weights = torch.zeros(max(self.addon.speakers.values()) + 1, device=self.device)
        for i in ids:
            weights[i] += 1 / len(ids)
        return {"speaker": torch.tensor([ids[0]], device=self.device), "speaker_weights": weights}

    def speaker_id(self, speaker: str | int | None) -> int:
        """A speaker's id from its name or id (None: the voice's first speaker)."""
        speakers = self.addon.speakers
        if speaker is None:
            return min(speakers.values())
        if isinstance(speaker, str) and speaker in speakers:
            return speakers[speaker]
        if isinstance(speaker, int) and not isinstance(speaker, bool) and speaker in speakers.values():
            return speaker
        shown = ", ".join(list(speakers)[:20]) + (
            f" ... ({len(speakers)} in all)" if len(speakers) > 20 else ""
        )
        raise UnknownSpeakerError(f"{self.addon.name} has no speaker {speaker!r}; its speakers: {shown}")

    def stream(
        self, text: str, mel_sink: FrameSink | None = None, speed: float = 1.0, **settings: Any
    ) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as soon as each is ready, sentence after sentence.

        `speed` is this call's speaking rate (0.25 to 4, >1 is faster), for stacks that `takes_speed`;
        `settings` are the voice's own per-call settings (`setting_names`: Piper's length_scale,
        noise_scale and noise_w, a speaker by name or id, a seed that makes the call's noise repeat)."""
        for sentence, chunks in self._sentences(text, mel_sink, speed, settings):
            for chunk in chunks:
                if chunk.data.ndim != 1:
                    raise StackError(
                        f"stack '{self.stack_name}' ends at frames, not audio: add a vocoder block"
                    )
                yield chunk.data.float().cpu().numpy()
            pause = round(sentence.pause_after * self.sample_rate)  # SSML's <break>
            if pause > 0:
                yield np.zeros(pause, dtype=np.float32)

    def synthesize(self, text: str, speed: float = 1.0, **settings: Any) -> np.ndarray:
        """The whole utterance as one float32 array (use `stream` for long text)."""
        parts = list(self.stream(text, speed=speed, **settings))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def chunks(
        self, text: str, mel_sink: FrameSink | None = None, speed: float = 1.0, **settings: Any
    ) -> Iterator[Chunk]:
        """The stack's own output chunks (audio, or mel frames for a stack that ends at the decoder).

        `mel_sink` receives the mel frames of every sentence: a stack's output when it ends at frames,
        otherwise the frames that enter its last top-level block that takes frames.
        """
        for _, chunks in self._sentences(text, mel_sink, speed, settings):
            yield from chunks

    def timed_stream(
        self, text: str, speed: float = 1.0, **settings: Any
    ) -> Iterator[tuple[np.ndarray, list[WordTime]]]:
        """`stream`'s chunks, each with the word timestamps of its sentence when it is the sentence's first
        (tts_neuron.timestamps); duration voices only."""
        return timed_stream(self, text, speed, **settings)

    def sentences(self, text: str, speed: float = 1.0, **settings: Any) -> Iterator[Sentence]:
        """The text's sentences as this voice speaks them, after the checks `stream` makes."""
        for sentence, _ in self._sentences(text, None, speed, settings):
            yield sentence

    @staticmethod
    def sentence_rate(sentence: Sentence, speed: float) -> float:
        """A sentence's speaking rate: a call's speed times SSML's <prosody rate>, within 0.25 to 4."""
        return min(max(speed * sentence.rate, 0.25), 4.0)

    def _sentences(
        self, text: str, mel_sink: FrameSink | None, speed: float, settings: Mapping[str, Any]
    ) -> Iterator[tuple[Sentence, Iterator[Chunk]]]:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4:
            raise ValueError(f"speed must be a number from 0.25 to 4, got {speed!r}")
        if speed != 1 and not self.takes_speed:
            raise StackError(f"stack '{self.stack_name}' of {self.addon.name} cannot change its speed")
        call = self.call_settings(settings)
        clock = ListenerClock(self.sample_rate, self.addon.audio.hop_length)
        for index, sentence in enumerate(self.runner.ahead(self.frontend.sentences(text))):
            features = call.sentence(index, clock.queued_frames())
            yield sentence, clock.made(self._checked(sentence, mel_sink, speed, features))

    def _checked(
        self, sentence: Sentence, mel_sink: FrameSink | None, speed: float, settings: dict[str, torch.Tensor]
    ) -> Iterator[Chunk]:
        """One sentence's chunks, with an attention failure named by the phoneme and word it was at."""
        rate = self.sentence_rate(sentence, speed)
        try:
            yield from self.sentence_chunks(sentence, mel_sink, rate, settings)
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

    def features(
        self, sentence: Sentence, rate: float = 1.0, settings: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """What the stack is given for one sentence; `settings` are the call's for this sentence
        (`CallSettings.sentence`; by default the voice's, with a fresh seed)."""
        tokens = torch.tensor([sentence.tokens], dtype=torch.long, device=self.device)  # [1, N]
        features = {
            **(settings if settings is not None else self.call_settings({}).sentence(0)),
            "tokens": tokens,
            "token_mask": torch.ones_like(tokens, dtype=torch.float32),
            "words": torch.tensor([sentence.words], dtype=torch.long, device=self.device),
        }
        if rate != 1:
            features["rate"] = torch.tensor(float(rate))
        return features

    def sentence_chunks(
        self,
        sentence: Sentence,
        mel_sink: FrameSink | None = None,
        rate: float = 1.0,
        settings: dict[str, torch.Tensor] | None = None,
    ) -> Iterator[Chunk]:
        features = self.features(sentence, rate, settings)
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
    Loading also keeps freed host memory in the process for the next network call
    (`tts_neuron.allocator`; `TTS_NEURON_MALLOC=system` leaves glibc's defaults), and lets oneDNN keep
    more of the convolution kernels it built for past shapes (`keep_built_kernels`).
    """
    hold_freed_memory()
    keep_built_kernels()
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
    if frontend is not None and (
        (frontend.symbols, frontend.language) != (addon.symbols, addon.language)
        or getattr(frontend, "kind", "espeak") != addon.frontend.get("type", "espeak")
    ):
        raise AddonError(
            f"{addon.config_path}: its symbols, language or frontend differ from the shared frontend's"
        )
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
    """Several voices in one process, chosen per call by name. Voices of one symbol table, language and
    frontend share a frontend; each stream keeps its own state, so streams of different voices can
    interleave. Each speaker of a multi-speaker voice is a voice too, named `VOICE:SPEAKER` (a view on the
    one loaded voice); `VOICE` alone is its first speaker, and `VOICE:ID` finds a speaker by id."""

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
                if _frontend_key(voice.addon) == _frontend_key(addon)
            ),
            None,
        )
        threads = 1 if isinstance(self.runner, DirectRunner) else None  # an engine owns its threads
        voice = load(addon_dir, stack, target, shared, threads, self.allow_imports, self.runner)
        speakers = {f"{name}:{speaker}": voice.with_settings(speaker=speaker) for speaker in addon.speakers}
        taken = [key for key in speakers if key in self.voices]
        if taken:
            raise AddonError(f"a voice named '{taken[0]}' is already loaded; give this one another name")
        self.voices[name] = voice
        self.voices.update(speakers)
        return voice

    def __getitem__(self, name: str) -> Voice:
        if name in self.voices:
            return self.voices[name]
        base, _, speaker = name.rpartition(":")
        if base in self.voices and self.voices[base].addon.speakers:  # VOICE:ID, or an unknown speaker
            return self.voices[base].with_settings(speaker=int(speaker) if speaker.isdigit() else speaker)
        raise AddonError(f"no voice '{name}'; loaded: {', '.join(sorted(self.voices)) or 'none'}")

    def stream(self, text: str, voice: str, **settings: Any) -> Iterator[np.ndarray]:
        return self[voice].stream(text, **settings)

    def synthesize(self, text: str, voice: str, **settings: Any) -> np.ndarray:
        return self[voice].synthesize(text, **settings)


__all__ = ["TARGETS", "CallSettings", "Voice", "VoiceSet", "load", "make_frontend", "resolve_device"]
