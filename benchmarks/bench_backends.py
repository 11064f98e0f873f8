"""What the benchmark measures: our stacks on every target this host has, ONNX Runtime running the same
networks (the peer a CPU user would pick), and the naive single call on the whole text.

Every configuration ends up as a `Config`: a `Stream` plus what it cost to get there (compile, load),
or the reason it was skipped. The peers reuse the addon's own frontend, networks, duration rounding and
vocoder, so that only the runtime differs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_measure import Stream
from torch import nn

import tts_neuron
from tts_neuron.addon import Addon, load_addon
from tts_neuron.audio import GriffinLim
from tts_neuron.backends import get_target
from tts_neuron.blocks.acoustic import Upsampler, durations_to_frames
from tts_neuron.blocks.base import Block
from tts_neuron.blocks.fixed import PaddedGriffinLim, PaddedVocoder
from tts_neuron.blocks.vocoder import GriffinLimVocoder, Vocoder
from tts_neuron.blocks.windows import Window
from tts_neuron.errors import StackError, TargetUnavailableError
from tts_neuron.frontend import Frontend
from tts_neuron.models.protocols import compiled_form
from tts_neuron.runners import NetworkHandle, TappedRunner
from tts_neuron_build.compiler import compile_addon


@dataclass
class Config:
    """One addon x stack x target x backend: ready to stream, or skipped with the reason."""

    addon: str
    stack: str
    target: str
    backend: str
    trained: bool = False
    """The addon's own `trained` flag: untrained weights time the same but predict other durations."""
    stream: Stream | None = None
    sample_rate: int = 22050
    streaming: bool = True
    """False for the naive baseline: one chunk at the end, so its time to first audio is its total."""
    compile_s: dict[str, float] | None = None
    """Seconds per compiled artifact ("network@bucket") or exported network."""
    load_s: float | None = None
    warmup_s: float | None = None
    padding: PaddingCounter | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} ({self.stack}/{self.target})"


def copy_addon(source: Path, work: Path) -> Path:
    """A private copy to compile into, so that nothing is written under addons/."""
    return Path(shutil.copytree(source, work / source.name, ignore=shutil.ignore_patterns("compiled")))


def walk(block: Block) -> Iterator[Block]:
    yield block
    for child in block.children():
        yield from walk(child)


class PaddingCounter:
    """Counts real and computed positions of every fixed-shape call, as the runner's tap sees it (before
    the call): real positions are those the input mask marks, computed ones the bucket's length. Encoders
    count tokens, the decoder frames (its halo is real context, not padding). The padded Griffin-Lim
    vocoder is counted too: its windows are padded with silence at each utterance's edges."""

    def __init__(self, inputs: dict[str, list[str]]) -> None:
        """`inputs`: each network's input names, to find its mask."""
        self.masks = {
            name: next(i for i, key in enumerate(keys) if key.endswith("mask"))
            for name, keys in inputs.items()
        }
        self.counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def tap(self, handle: NetworkHandle, inputs: tuple[torch.Tensor, ...]) -> None:
        if handle.compiled and handle.name in self.masks:
            mask = inputs[self.masks[handle.name]]
            self.add(handle.name, int(mask.sum()), mask.numel())

    def attach(self, voice: tts_neuron.Voice) -> PaddingCounter:
        for block in walk(voice.stack):
            if isinstance(block, PaddedGriffinLim):
                self.wrap_vocoder(block)
        return self

    def add(self, name: str, real: int, computed: int) -> None:
        with self._lock:
            count = self.counts.setdefault(name, [0, 0])
            count[0] += real
            count[1] += computed

    def wrap_vocoder(self, block: PaddedGriffinLim) -> None:
        size = block.window_frames + 2 * block.context_frames
        vocode = block.vocode
        self.counts.setdefault("griffin_lim", [0, 0])

        def counted(window: Window) -> torch.Tensor:
            self.add("griffin_lim", len(window.frames), size)
            return vocode(window)

        block.vocode = counted  # type: ignore[method-assign]

    def reset(self) -> None:
        with self._lock:
            for count in self.counts.values():
                count[:] = [0, 0]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per network: real and computed positions and the share of computed positions that is padding."""
        return {
            name: {"real": real, "computed": computed, "share": round(padding_share(real, computed), 4)}
            for name, (real, computed) in self.counts.items()
        }


def padding_share(real: int, computed: int) -> float:
    """The share of computed positions that hold padding; 0 when nothing was computed."""
    if real > computed or real < 0:
        raise ValueError(f"real positions ({real}) must be between 0 and the computed ones ({computed})")
    return 0.0 if computed == 0 else 1 - real / computed


def voice_config(
    addon_dir: Path, stack: str, target: str, backend: str, compile_for: str | None = None
) -> tuple[Config, tts_neuron.Voice | None]:
    """Load one of the addon's stacks on a target (compiling it first for fixed-shape stacks); a target
    whose runtime is absent, or a stack the addon lacks, becomes a skipped configuration."""
    addon = load_addon(addon_dir)
    config = Config(addon.name, stack, target, backend, addon.trained, sample_rate=addon.audio.sample_rate)
    try:
        get_target(target).check_available()
        if stack not in addon.stacks:
            raise StackError(f"the addon has no stack '{stack}' (it has {', '.join(sorted(addon.stacks))})")
        if compile_for is not None:
            manifest = compile_addon(addon_dir, compile_for, stack=stack, progress=False).manifest
            config.compile_s = {
                f"{name}@{artifact.bucket}": round(artifact.compile_seconds, 3)
                for name, entry in manifest.networks.items()
                for artifact in entry.artifacts
            }
        started = time.perf_counter()
        counter = PaddingCounter({name: spec.inputs for name, spec in load_addon(addon_dir).networks.items()})
        runner = TappedRunner(counter.tap)
        voice = tts_neuron.load(addon_dir, stack=stack, target=target, threads=None, runner=runner)
        config.load_s = round(time.perf_counter() - started, 3)  # run.py sets the threads
    except (TargetUnavailableError, StackError) as err:
        config.skipped = str(err)
        return config, None
    config.stream = voice.stream
    if compile_for is not None:
        config.padding = counter.attach(voice)
    return config, voice


NetworkRunner = Callable[[str, list[torch.Tensor]], torch.Tensor]
"""Runs one of the addon's networks by name on its inputs (batch of one): torch or ONNX Runtime."""


class WholeUtterancePipeline:
    """The voice's pipeline written the way a peer would: encoders, upsampling by the predicted durations,
    decoder and vocoder (the neural one the stack names, else Griffin-Lim), each called once on a whole
    utterance.

    With `whole_text` the utterance is the whole text (every sentence's tokens concatenated: the naive
    single call); otherwise each sentence is one utterance and one chunk, streamed sentence by sentence.
    """

    def __init__(self, voice: tts_neuron.Voice, run: NetworkRunner, whole_text: bool) -> None:
        self.addon, self.run, self.whole_text = voice.addon, run, whole_text
        self.frontend = Frontend(voice.addon.symbols, voice.addon.language)
        blocks = list(walk(voice.stack))
        upsampler = next(b for b in blocks if isinstance(b, Upsampler))
        vocoder = next(b for b in blocks if isinstance(b, (Vocoder, PaddedVocoder, GriffinLimVocoder)))
        self.length_scale, self.max_frames = upsampler.length_scale, upsampler.max_frames_per_phoneme
        self.encodings, self.durations = upsampler.encodings_key, upsampler.durations_key
        if isinstance(vocoder, GriffinLimVocoder):
            self.vocoder: str | None = None
            self.griffin_lim = GriffinLim(voice.addon.audio, n_iter=vocoder.n_iter)
        else:
            self.vocoder = vocoder.name
        self.decoder = next(spec.name for spec in voice.addon.networks_with_role("decoder"))

    def stream(self, text: str) -> Iterator[np.ndarray]:
        sentences = self.frontend.sentences(text)
        groups: Iterable[list[list[int]]] = (
            [[s.tokens for s in sentences]] if self.whole_text else ([s.tokens] for s in sentences)
        )
        for group in groups:
            audio = self.speak([token for tokens in group for token in tokens])
            if len(audio):
                yield audio

    def speak(self, tokens: list[int]) -> np.ndarray:
        features = {"tokens": torch.tensor([tokens]), "token_mask": torch.ones(1, len(tokens))}
        for spec in self.addon.networks_with_role("encoder"):
            (output,) = spec.outputs
            features[output] = self.run(spec.name, [features[key] for key in spec.inputs])
        frames = durations_to_frames(features[self.durations][0], self.length_scale, self.max_frames)
        if int(frames.sum()) == 0:
            return np.zeros(0, dtype=np.float32)
        upsampled = features[self.encodings][0].repeat_interleave(frames, dim=0)[None]  # [1, T, C]
        mask = torch.ones(1, upsampled.shape[1])  # [1, T]
        mel = self.run(self.decoder, [upsampled, mask])  # [1, T, n_mels]
        if self.vocoder is not None:
            return self.run(self.vocoder, [mel, mask])[0].numpy()  # [T * hop]
        with torch.inference_mode():
            return self.griffin_lim(mel[0]).numpy()


def torch_runner(addon: Addon) -> NetworkRunner:
    def run(name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            output: torch.Tensor = addon.network(name)(*inputs)
        return output

    return run


def export_onnx(network: nn.Module, inputs: list[str], outputs: list[str], path: Path) -> None:
    """Export with a dynamic length axis (dim 1 of every input), as a CPU user would deploy it. A network
    with a compiled form is exported in it: the vocoder's inverse STFT then runs inside ONNX Runtime, as a
    matmul and shifted adds (ONNX's own DFT op is not what a CPU user of these networks would get)."""
    network = compiled_form(network)
    length = torch.export.Dim("length", min=2, max=1 << 20)
    examples = network.example_inputs(8)  # type: ignore[operator]  # networks define it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(
            network,
            tuple(examples),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=tuple({1: length} for _ in inputs),
            dynamo=True,
            verbose=False,
        )


def onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_ONNX_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}


def onnx_feed(session: Any, inputs: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Inputs as the session's graph declares them (token ids are int32 in the exported networks)."""
    return {
        arg.name: x.numpy().astype(_ONNX_DTYPES.get(arg.type, x.numpy().dtype), copy=False)
        for arg, x in zip(session.get_inputs(), inputs, strict=True)
    }


def onnx_runner(sessions: dict[str, Any]) -> NetworkRunner:
    def run(name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
        session = sessions[name]
        return torch.from_numpy(session.run(None, onnx_feed(session, inputs))[0])

    return run


def onnx_config(voice: tts_neuron.Voice, work: Path, threads: int) -> Config:
    """The same networks exported to ONNX and run by ONNX Runtime, streamed sentence by sentence."""
    addon = voice.addon
    config = Config(
        addon.name, voice.stack_name, "cpu", "onnxruntime", addon.trained, sample_rate=voice.sample_rate
    )
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        config.skipped = "onnxruntime is not installed (pip install 'tts-neuron[bench]')"
        return config
    folder = work / f"{addon.name}-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    config.compile_s = {}
    for name, spec in addon.networks.items():
        started = time.perf_counter()
        export_onnx(addon.network(name), spec.inputs, spec.outputs, folder / f"{name}.onnx")
        config.compile_s[name] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    sessions = {name: onnx_session(folder / f"{name}.onnx", threads) for name in addon.networks}
    config.load_s = round(time.perf_counter() - started, 3)
    config.stream = WholeUtterancePipeline(voice, onnx_runner(sessions), whole_text=False).stream
    return config


def naive_config(voice: tts_neuron.Voice) -> Config:
    """The baseline the seed article warns against: the same torch networks, one call each on the whole
    text, no streaming. It shares the networks the dynamic stack loaded, so it has no load time of its own."""
    pipeline = WholeUtterancePipeline(voice, torch_runner(voice.addon), whole_text=True)
    return Config(
        voice.addon.name,
        voice.stack_name,
        "cpu",
        "naive-whole-text",
        voice.addon.trained,
        stream=pipeline.stream,
        sample_rate=voice.sample_rate,
        streaming=False,
    )


def addon_configs(source: Path, work: Path, threads: int) -> list[Config]:
    """Every addon x stack x target x backend this host can run, and the skipped ones with the reason."""
    addon_dir = copy_addon(source, work)
    dynamic, voice = voice_config(addon_dir, "cpu", "cpu", "torch-eager")
    configs = [
        dynamic,
        voice_config(addon_dir, "neuron", "cpu", "torch-export-fixed", compile_for="cpu")[0],
        voice_config(addon_dir, "cpu", "cuda", "torch-eager")[0],
        voice_config(addon_dir, "neuron", "cuda", "torch-export-cuda-graphs", compile_for="cuda")[0],
        voice_config(addon_dir, "neuron", "neuron", "neuron", compile_for="neuron")[0],
    ]
    if voice is None or not any(isinstance(block, Upsampler) for block in walk(voice.stack)):
        reason = (
            f"needs the dynamic 'cpu' stack, which was skipped: {dynamic.skipped}"
            if voice is None
            else "the peer pipelines are written for the duration voice (encoders, upsampler, decoder)"
        )
        for backend in ("onnxruntime", "naive-whole-text"):
            configs.append(Config(dynamic.addon, "cpu", "cpu", backend, dynamic.trained, skipped=reason))
    else:
        configs += [onnx_config(voice, work, threads), naive_config(voice)]
    return configs
