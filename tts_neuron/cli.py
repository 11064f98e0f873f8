"""The `tts-neuron` command line: synthesize and inspect.

Every error we anticipate (bad text, a malformed addon, an unknown block, a missing network file, an
absent target) exits with status 2 and one line on stderr; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tts_neuron.errors import TextError, TTSNeuronError
from tts_neuron.voice import TARGETS, Voice

EXIT_USAGE = 2
_NO_IMPORTS_HELP = (
    "refuse stack entries of type 'module:Class' (a stack that names a module runs its code); "
    "allow only built-in, registered and installed blocks"
)

_LOG = logging.getLogger("tts_neuron")


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _WavWriter:
    """A 16-bit mono WAV written as chunks arrive, opened on the first chunk so errors leave no file."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path, self.sample_rate = path, sample_rate
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None

    def write(self, audio: np.ndarray) -> None:
        if self._wav is None:
            try:
                self._file = self.path.open("wb")  # noqa: SIM115 - closed by close()
            except OSError as err:
                raise TTSNeuronError(f"{self.path}: cannot write: {err.strerror}") from None
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed by close()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self.sample_rate)
        self._wav.writeframes(_pcm16(audio))

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
        if self._file is not None:
            self._file.close()


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return str(args.text)
    if args.text_file is not None:
        try:
            return Path(args.text_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TextError(f"{args.text_file}: text file not found") from None
        except UnicodeDecodeError as err:
            raise TextError(f"{args.text_file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except OSError as err:
            raise TextError(f"{args.text_file}: cannot read: {err.strerror}") from None
    if sys.stdin is None or sys.stdin.isatty():
        raise TextError("no text: give --text, --text-file, or pipe text on stdin")
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise TextError("stdin is not UTF-8 text") from None


def _load_voice(args: argparse.Namespace) -> Voice:
    from tts_neuron.stack import allowing_imports, read_stack_file
    from tts_neuron.voice import load

    stack = read_stack_file(Path(args.stack_file)) if args.stack_file else args.stack
    with allowing_imports(not args.no_imports):
        return load(args.addon, stack=stack, target=args.target)


def _synthesize(args: argparse.Namespace) -> int:
    if not (args.out or args.raw or args.mel):
        raise TTSNeuronError("say where the output goes: --out FILE.wav, --raw, and/or --mel FILE.npy")
    text = _read_text(args)
    t_load = time.perf_counter()
    voice = _load_voice(args)
    load_s = time.perf_counter() - t_load

    mel: list[np.ndarray] = []
    mel_sink = mel.append if args.mel else None
    sink: _WavWriter | BinaryIO | None = None
    if args.out:
        sink = _WavWriter(Path(args.out), voice.sample_rate)
    elif args.raw:
        sink = sys.stdout.buffer

    t0 = time.perf_counter()
    first_audio_s: float | None = None
    samples = 0
    try:
        if sink is None:  # mel only: the stack may end at the decoder
            for _ in voice.chunks(text, mel_sink):
                first_audio_s = first_audio_s or time.perf_counter() - t0
        else:
            for audio in voice.stream(text, mel_sink):
                first_audio_s = first_audio_s or time.perf_counter() - t0
                samples += len(audio)
                if isinstance(sink, _WavWriter):
                    sink.write(audio)
                else:
                    sink.write(_pcm16(audio))
                    sink.flush()
    finally:
        if isinstance(sink, _WavWriter):
            sink.close()
    total_s = time.perf_counter() - t0

    if args.mel:
        frames = np.concatenate(mel) if mel else np.zeros((0, voice.addon.audio.n_mels), np.float32)
        np.save(args.mel, frames.astype(np.float32))
    if args.timings:
        audio_s = samples / voice.sample_rate
        rtf = f"{total_s / audio_s:.3f}" if audio_s else "n/a"
        print(
            f"load {load_s:.3f} s, time to first {'audio' if sink else 'frames'} {first_audio_s or 0:.3f} s, "
            f"total {total_s:.3f} s, audio {audio_s:.2f} s, real-time factor {rtf} "
            f"(stack {voice.stack_name}, target {voice.target})",
            file=sys.stderr,
        )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import torch

    from tts_neuron.addon import load_addon
    from tts_neuron.backends.manifest import CompiledArtifactError
    from tts_neuron.stack import BuildContext, build_stack, describe_tree

    addon = load_addon(args.addon)
    audio = addon.audio
    state = "trained" if addon.trained else "UNTRAINED: random weights, it makes noise, not speech"
    print(f"addon {addon.name} ({state}): {addon.description}")
    print(f"audio: {audio.sample_rate} Hz, {audio.n_mels} mel bands, hop {audio.hop_length}")
    print(f"frontend: espeak-ng {addon.language}, {len(addon.symbols)} symbols")
    print("networks:")
    for name, spec in addon.networks.items():
        params = addon.parameter_count(name)
        where = spec.parameters.relative_to(addon.root.resolve())
        print(f"  {name}: {spec.architecture}, role {spec.role}, {params:,} parameters, {where}")
    print(f"stacks (default {addon.default_stack}):")
    for name, spec in addon.stacks.items():
        print(f"  {name}:")
        path = f"{addon.config_path}: stacks.{name}"
        context = BuildContext(addon, torch.device("cpu"), path, "cpu", allow_imports=not args.no_imports)
        try:
            lines = describe_tree(build_stack(spec, context), "    ")
        except CompiledArtifactError as err:  # a compiled stack is built from its artifacts
            lines = [f"    (not built on cpu: {err})"]
        print("\n".join(lines))
    compiled = sorted(p.parent.name for p in (addon.root / "compiled").glob("*/manifest.json"))
    print(f"compiled for: {', '.join(compiled) if compiled else 'nothing yet (tts-neuron compile)'}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    try:
        from compile.compiler import compile_addon
    except ImportError:
        raise TTSNeuronError(
            "compiling needs the build-host package `compile` (run from a tts_neuron checkout)"
        ) from None

    report = compile_addon(args.addon, args.target, args.stack, args.jobs, args.compiler_arg)
    print(f"{report.manifest.compiler}, arguments {report.manifest.compiler_args or 'none'}")
    for artifact in sorted(report.compiled, key=lambda a: a.file):
        print(f"  compiled {artifact.file} in {artifact.compile_seconds:.2f} s")
    print(
        f"compiled {len(report.compiled)}, kept {len(report.reused)} unchanged, in {report.seconds:.1f} s: "
        f"{Path(args.addon) / 'compiled' / args.target}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-neuron", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser(
        "synthesize", help="speak text to a WAV file, raw PCM on stdout, or mel frames"
    )
    synth.add_argument("--addon", required=True, help="addon folder (holds addon.json)")
    stack = synth.add_mutually_exclusive_group()
    stack.add_argument("--stack", help="name of one of the addon's stacks (default: the addon's default)")
    stack.add_argument("--stack-file", help='JSON file with a stack: a list of blocks, or {"stack": [...]}')
    synth.add_argument("--target", choices=TARGETS, help="where to run (default: the stack's name, else cpu)")
    text = synth.add_mutually_exclusive_group()
    text.add_argument("--text", help="text to speak (default: read stdin)")
    text.add_argument("--text-file", help="UTF-8 file of text to speak")
    out = synth.add_mutually_exclusive_group()
    out.add_argument("--out", help="write a 16-bit mono WAV file")
    out.add_argument(
        "--raw", action="store_true", help="write 16-bit little-endian mono PCM to stdout as it comes"
    )
    synth.add_argument("--mel", help="also save the mel frames [T, n_mels] as .npy")
    synth.add_argument("--timings", action="store_true", help="print time to first audio, total time and RTF")
    synth.add_argument("--no-imports", action="store_true", help=_NO_IMPORTS_HELP)
    synth.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    synth.set_defaults(run=_synthesize)

    comp = commands.add_parser("compile", help="compile an addon's networks at every bucket for a target")
    comp.add_argument("--addon", required=True, help="addon folder (holds addon.json)")
    comp.add_argument(
        "--target", required=True, choices=TARGETS, help="neuron (inf2), or cpu/cuda for the same path"
    )
    comp.add_argument("--stack", help="compile only the networks that this stack's compiled blocks run")
    comp.add_argument(
        "--jobs", type=int, help="buckets compiled at once (default: all cores for neuron, else 1)"
    )
    comp.add_argument(
        "--compiler-arg",
        action="append",
        help="extra compiler argument (repeat; replaces a default of the same flag)",
    )
    comp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    comp.set_defaults(run=_compile)

    insp = commands.add_parser("inspect", help="show an addon's stacks, networks and compiled targets")
    insp.add_argument("--addon", required=True, help="addon folder (holds addon.json)")
    insp.add_argument("--no-imports", action="store_true", help=_NO_IMPORTS_HELP)
    insp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    insp.set_defaults(run=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="tts-neuron: warning: %(message)s", level=logging.WARNING)
    try:
        return int(args.run(args))
    except TTSNeuronError as err:
        if args.debug:
            raise
        print(f"tts-neuron: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader of --raw went away (e.g. `| head -c`): not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
