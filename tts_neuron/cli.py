"""The `tts-neuron` command line: synthesize and inspect.

Every error we anticipate (bad text, a malformed addon, an unknown block, a missing network file, an
absent target) exits with status 2 and one line on stderr; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import os
import sys
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from tqdm import tqdm

from tts_neuron.errors import OutputError, SynthesisError, TextError, TTSNeuronError
from tts_neuron.frontend import MAX_SPEECH_SECONDS, estimate_speech_seconds
from tts_neuron.frontend.sentences import has_speakable
from tts_neuron.targets import TARGETS

if TYPE_CHECKING:
    from tts_neuron.voice import Voice

EXIT_USAGE = 2
PROGRESS_MIN_SECONDS = 30.0
"""Speech (estimated) from which `synthesize` shows a progress bar: a long file, not a sentence."""
DEFAULT_MAX_CHARS = 1_000_000
_READ_BLOCK_BYTES = 1 << 16
_NO_IMPORTS_HELP = (
    "refuse stack entries of type 'module:Class' (a stack that names a module runs its code); "
    "allow only built-in, registered and installed blocks"
)

_LOG = logging.getLogger("tts_neuron")


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _WavWriter:
    """A 16-bit mono WAV written as chunks arrive, opened on the first chunk; `discard` removes it again."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path, self.sample_rate = path, sample_rate
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._created = False

    def write(self, audio: np.ndarray) -> None:
        try:
            if self._wav is None:
                self._file = self.path.open("wb")  # noqa: SIM115 - closed by close()
                self._created = True
                self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed by close()
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(self.sample_rate)
            self._wav.writeframes(_pcm16(audio))
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write: {err.strerror}") from None

    def close(self) -> None:
        """Finish the file; the header is patched and flushed here, so a full disk may fail only now."""
        try:
            try:
                if self._wav is not None:
                    self._wav.close()
            finally:
                if self._file is not None:
                    self._file.close()
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write: {err.strerror}") from None
        finally:
            self._wav = self._file = None

    def discard(self) -> None:
        """Close and delete what was written, unless it is not a regular file (/dev/full, a pipe)."""
        with contextlib.suppress(OutputError):
            self.close()
        if self._created and self.path.is_file():
            self.path.unlink()


def _write_raw(audio: np.ndarray) -> None:
    try:
        sys.stdout.buffer.write(_pcm16(audio))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        # What could not be written stays buffered; point stdout at /dev/null so the exit flush succeeds.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise OutputError(f"stdout: cannot write: {err.strerror}") from None


def _save_mel(path: Path, frames: np.ndarray) -> None:
    """Write the frames to exactly `path` (np.save would add ".npy"), leaving no partial file."""
    try:
        with path.open("wb") as f:
            np.save(f, frames)
    except OSError as err:
        with contextlib.suppress(OSError):
            if path.is_file():
                path.unlink()
        raise OutputError(f"{path}: cannot write: {err.strerror}") from None


def _check_folder(path: str | None) -> None:
    """Refuse an output whose folder is missing before any time is spent on synthesis."""
    if path is not None and not Path(path).parent.is_dir():
        raise OutputError(f"{path}: cannot write: folder {Path(path).parent} does not exist")


def _read_text(args: argparse.Namespace) -> str:
    if args.max_chars < 1:
        raise TextError(f"--max-chars must be at least 1, got {args.max_chars}")
    if args.text is not None:
        if len(args.text) > args.max_chars:
            raise TextError(f"--text: more than {args.max_chars:,} characters (raise --max-chars)")
        return str(args.text)
    if args.text_file is not None:
        try:
            with Path(args.text_file).open("rb") as f:
                return _read_utf8(f, args.text_file, args.max_chars)
        except FileNotFoundError:
            raise TextError(f"{args.text_file}: text file not found") from None
        except OSError as err:
            raise TextError(f"{args.text_file}: cannot read: {err.strerror}") from None
    if sys.stdin is None or sys.stdin.isatty():
        raise TextError("no text: give --text, --text-file, or pipe text on stdin")
    return _read_utf8(sys.stdin.buffer, "stdin", args.max_chars)


def _read_utf8(stream: BinaryIO, where: str, max_chars: int) -> str:
    """Decode UTF-8 a block at a time: invalid bytes and text past `max_chars` are refused as they come, so
    an endless input (/dev/zero) costs at most `max_chars` characters of memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    chars = offset = 0
    while True:
        block = stream.read(_READ_BLOCK_BYTES)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as err:
            raise TextError(
                f"{where}: not UTF-8 text ({err.reason} at byte {offset - pending + err.start})"
            ) from None
        offset += len(block)
        chars += len(text)
        if chars > max_chars:
            raise TextError(f"{where}: more than {max_chars:,} characters (raise --max-chars)")
        parts.append(text)
        if not block:
            return "".join(parts)


def _load_voice(args: argparse.Namespace) -> Voice:
    from tts_neuron.stack import read_stack_file
    from tts_neuron.voice import load

    stack = read_stack_file(Path(args.stack_file)) if args.stack_file else args.stack
    return load(args.addon, stack=stack, target=args.target, allow_imports=not args.no_imports)


def _synthesize(args: argparse.Namespace) -> int:
    if not (args.out or args.raw or args.mel):
        raise TTSNeuronError("say where the output goes: --out FILE.wav, --raw, and/or --mel FILE.npy")
    _check_folder(args.out)
    _check_folder(args.mel)
    text = _read_text(args)
    if not has_speakable(text):  # before the voice loads: a compiled stack takes seconds to warm up
        raise TextError("the text has nothing to speak (it is empty, whitespace, punctuation or symbols)")
    t_load = time.perf_counter()
    voice = _load_voice(args)
    load_s = time.perf_counter() - t_load

    mel: list[np.ndarray] = []
    wav = _WavWriter(Path(args.out), voice.sample_rate) if args.out else None
    t0 = time.perf_counter()
    try:
        first_audio_s, samples = _speak(voice, text, args, wav, mel)
        if wav is not None:
            wav.close()
        if args.mel:
            _save_mel(Path(args.mel), _checked_frames(voice, mel))
    except BaseException:
        if wav is not None:
            wav.discard()
        raise
    total_s = time.perf_counter() - t0

    if args.timings:
        audio_s = samples / voice.sample_rate
        rtf = f"{total_s / audio_s:.3f}" if audio_s else "n/a"
        print(
            f"load {load_s:.3f} s, time to first {'audio' if samples else 'frames'} {first_audio_s:.3f} s, "
            f"total {total_s:.3f} s, audio {audio_s:.2f} s, real-time factor {rtf} "
            f"(stack {voice.stack_name}, target {voice.target})",
            file=sys.stderr,
        )
    return 0


def _call_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--speaker, --seed and each --set NAME=NUMBER as a call's settings (Voice.stream's keywords)."""
    settings: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        try:
            settings[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise TTSNeuronError(f"--set takes NAME=NUMBER (e.g. noise_scale=0.5), got {item!r}")
    if args.speaker is not None:
        settings["speaker"] = int(args.speaker) if args.speaker.isdigit() else args.speaker
    if args.seed is not None:
        settings["seed"] = args.seed
    return settings


def _speak(
    voice: Voice, text: str, args: argparse.Namespace, wav: _WavWriter | None, mel: list[np.ndarray]
) -> tuple[float, int]:
    """Stream the text into the outputs: (time to the first chunk, samples written).

    An error a block raises that is not tts_neuron's own becomes one SynthesisError, so the command fails
    with one line instead of a traceback (`--debug` shows the cause); so do no audio and NaN audio.
    """
    t0 = time.perf_counter()
    first_s: float | None = None
    samples = 0
    mel_sink = mel.append if args.mel else None
    settings = _call_settings(args)
    voice.call_settings(settings)  # a bad setting or speaker fails before any audio
    try:
        if not (args.out or args.raw):  # mel only: the stack may end at the decoder
            for _ in voice.chunks(text, mel_sink, **settings):
                first_s = first_s or time.perf_counter() - t0
            return first_s or 0.0, 0
        with _progress(text) as progress:
            for audio in voice.stream(text, mel_sink, **settings):
                first_s = first_s or time.perf_counter() - t0
                if not np.isfinite(audio).all():
                    raise SynthesisError(
                        f"stack '{voice.stack_name}' made audio that is not finite (NaN or infinity) at "
                        f"{samples / voice.sample_rate:.2f} s; nothing is written"
                    )
                samples += len(audio)
                if wav is not None:
                    wav.write(audio)
                else:
                    _write_raw(audio)
                progress.update(len(audio) / voice.sample_rate)
    except (TTSNeuronError, BrokenPipeError):
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        raise SynthesisError(f"stack '{voice.stack_name}' failed: {type(err).__name__}: {reason}") from err
    if not samples:
        raise SynthesisError(f"stack '{voice.stack_name}' made no audio for the text")
    return first_s or 0.0, samples


def _progress(text: str) -> tqdm:
    """A bar of seconds spoken against the text's estimate, on stderr when it is a terminal and the text
    is long (PROGRESS_MIN_SECONDS of speech or more)."""
    estimate = estimate_speech_seconds(text)
    return tqdm(
        total=round(estimate),
        file=sys.stderr,
        disable=not sys.stderr.isatty() or estimate < PROGRESS_MIN_SECONDS,
        bar_format="{l_bar}{bar}| {n:.0f}/{total} s of speech [{elapsed}<{remaining}]",
        leave=False,
    )


def _checked_frames(voice: Voice, mel: list[np.ndarray]) -> np.ndarray:
    if not mel:
        raise SynthesisError(f"stack '{voice.stack_name}' made no mel frames for the text")
    frames = np.concatenate(mel).astype(np.float32)
    if not np.isfinite(frames).all():
        raise SynthesisError(
            f"stack '{voice.stack_name}' made mel frames that are not finite (NaN or infinity)"
        )
    return frames


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


def _plan_buckets(args: argparse.Namespace) -> int:
    from tts_neuron.planning import MAX_PLANNED_BUCKETS, observe, report, token_plans, write_buckets

    if not 1 <= args.max_buckets <= MAX_PLANNED_BUCKETS:
        raise TTSNeuronError(f"--max-buckets must be from 1 to {MAX_PLANNED_BUCKETS}, got {args.max_buckets}")
    text = _read_text(args)
    try:
        observations = observe(args.addon, text, args.max_tokens)
    except ValueError as err:
        raise TTSNeuronError(str(err)) from None
    print("\n".join(report(observations, args.max_buckets)))
    if args.write:
        plans = token_plans(observations, args.max_buckets)
        write_buckets(observations.addon, plans)
        print(
            f"wrote the token buckets of {', '.join(plans)} to {observations.addon.config_path}; "
            "compiled artifacts are now stale: run tts-neuron compile again"
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    from tts_neuron.check import check_addon, format_report, write_json

    _check_folder(args.json)
    report = check_addon(args.addon, args.target)
    print("\n".join(format_report(report)))
    if args.json:
        write_json(report, Path(args.json))
    return 0 if report.ok else 1


def _compile(args: argparse.Namespace) -> int:
    try:
        from tts_neuron_build.compiler import compile_addon
    except ImportError:
        raise TTSNeuronError(
            "compiling needs the build-host package `tts_neuron_build` (install tts_neuron from its checkout)"
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


def _check_serve_flags(args: argparse.Namespace) -> None:
    """The checks of `serve`'s flags that need no import of the server (nor torch): a mistyped number
    fails at once instead of after seconds of imports."""
    if args.max_speech_seconds is not None and args.max_speech_seconds <= 0:
        raise TTSNeuronError("--max-speech-seconds must be positive")
    if args.threads < 1 or args.processes < 1 or (args.workers is not None and args.workers < 1):
        raise TTSNeuronError("--workers, --threads and --processes must be at least 1")
    if args.processes > 1 and (args.wyoming or args.ray):
        raise TTSNeuronError("--processes serves HTTP only; --wyoming and --ray take one process")
    if args.ray and args.replicas < 1:
        raise TTSNeuronError("--replicas must be at least 1")


def _serve(args: argparse.Namespace) -> int:
    _check_serve_flags(args)
    try:
        from tts_neuron.engine import Schedule
        from tts_neuron.server import Limits, SpeechOptions, serve
        from tts_neuron.server.voices import check_aliases, parse_alias
    except ImportError as err:
        raise TTSNeuronError(
            f"serving needs the `serve` extra (pip install 'tts-neuron[serve]'): {err}"
        ) from None
    from tts_neuron.addon import load_addon

    names = [load_addon(addon).name for addon in args.addon]  # a bad addon is refused before the port opens
    try:
        aliases = dict(parse_alias(alias) for alias in args.voice_alias or [])
        check_aliases(names, aliases)
    except ValueError as err:
        raise TTSNeuronError(str(err)) from None
    options = SpeechOptions(aliases, names[0], args.max_speech_seconds)
    try:
        limits = Limits(
            max_streams=args.max_streams,
            budget=args.budget,
            max_queue=args.max_queue,
            queue_timeout=args.queue_timeout,
            idle_timeout=args.idle_timeout,
            max_chars=args.max_chars,
            drain_timeout=args.drain_timeout,
        )
        schedule = Schedule(horizon=args.horizon, idle_timeout=args.idle_timeout, fill=args.fill)
    except ValueError as err:
        raise TTSNeuronError(str(err)) from None
    api_key = os.environ.get("TTS_NEURON_API_KEY") or None
    if args.wyoming:
        from tts_neuron.server.wyoming import check_uri

        try:
            check_uri(args.wyoming)
        except ValueError as err:
            raise TTSNeuronError(str(err)) from None
    print(f"tts-neuron: serving {', '.join(args.addon)} on http://{args.host}:{args.port}", file=sys.stderr)
    if args.ray:
        try:
            from tts_neuron.server.ray_app import serve_on_ray
        except ImportError as err:
            raise TTSNeuronError(
                f"--ray needs the `ray` extra (pip install 'tts-neuron[ray]'): {err}"
            ) from None

        serve_on_ray(
            args.addon, args.replicas, args.host, args.port, args.stack, args.target, limits, api_key,
            options, schedule, args.workers, args.threads,
        )  # fmt: skip
        return 0
    serve(
        args.addon,
        args.host,
        args.port,
        args.stack,
        args.target,
        limits,
        api_key,
        args.workers,
        args.wyoming,
        schedule,
        options,
        args.threads,
        args.processes,
    )
    return 0


def _import_piper(args: argparse.Namespace) -> int:
    from tts_neuron.importers.piper import import_voice

    print(import_voice(args.voice, args.config, args.out, name=args.name))
    return 0


def _import_kokoro(args: argparse.Namespace) -> int:
    from tts_neuron.importers.kokoro import import_model

    print(import_model(args.model, args.out, name=args.name, default_voice=args.default_voice))
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
    synth.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_CHARS,
        help=f"refuse longer text (default {DEFAULT_MAX_CHARS:,}), so an endless input cannot fill memory",
    )
    out = synth.add_mutually_exclusive_group()
    out.add_argument("--out", help="write a 16-bit mono WAV file")
    out.add_argument(
        "--raw", action="store_true", help="write 16-bit little-endian mono PCM to stdout as it comes"
    )
    synth.add_argument("--mel", help="also save the mel frames [T, n_mels] as .npy")
    synth.add_argument("--speaker", help="a multi-speaker voice's speaker, by name or id")
    synth.add_argument(
        "--seed", type=int, help="seed of the voice's noise (imported voices): repeatable audio"
    )
    synth.add_argument(
        "--set",
        action="append",
        metavar="NAME=NUMBER",
        help="a per-call setting the voice declares, e.g. noise_scale=0.5 or length_scale=1.2 (repeatable)",
    )
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
        "--jobs", type=int, help="processes compiling at once (default: one per core, capped by memory)"
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

    plan = commands.add_parser(
        "plan-buckets", help="choose the buckets that pad least for the lengths a text really needs"
    )
    plan.add_argument("--addon", required=True, help="addon folder (holds addon.json)")
    plan.add_argument("--text-file", required=True, help="UTF-8 file of text like what the voice will speak")
    plan.add_argument("--max-buckets", type=int, default=6, help="buckets per network to plan (default 6)")
    plan.add_argument(
        "--max-tokens",
        type=int,
        help="cut sentence pieces at this many tokens (default: each network's largest bucket)",
    )
    plan.add_argument("--write", action="store_true", help="write the token networks' planned buckets")
    plan.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    plan.set_defaults(run=_plan_buckets, text=None, max_chars=DEFAULT_MAX_CHARS)

    chk = commands.add_parser(
        "check", help="list each network's operators at every bucket and flag what Neuron rejects"
    )
    chk.add_argument("--addon", required=True, help="addon folder (holds addon.json)")
    chk.add_argument("--target", choices=["neuron"], default="neuron", help="compiler to check for")
    chk.add_argument("--json", help="also write the full report as JSON")
    chk.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    chk.set_defaults(run=_check)

    srv = commands.add_parser("serve", help="serve voices over HTTP (OpenAI's /v1/audio/speech, streamed)")
    srv.add_argument("--addon", required=True, action="append", help="addon folder to serve (repeat)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--stack", help="stack of every addon (default: each addon's default)")
    srv.add_argument("--target", choices=TARGETS, help="where to run (default: the stack's name, else cpu)")
    srv.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="engine seconds per second that admitted streams may need, each at its voice's cost measured "
        "at warm-up (default 1.0; above 1 counts on batching)",
    )
    srv.add_argument(
        "--max-streams", type=int, default=256, help="streams at once whatever the budget (default 256)"
    )
    srv.add_argument(
        "--horizon",
        type=float,
        default=2.0,
        help="seconds of audio a stream may run ahead of its listener before it is paused (default 2)",
    )
    srv.add_argument(
        "--fill",
        type=int,
        default=1,
        help="rows worth a network call: a smaller batch waits for other streams' calls while no deadline "
        "in it is near (default 1, for a CPU; an accelerator's batch size there)",
    )
    srv.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds a shutdown lets running streams finish (default 30)",
    )
    srv.add_argument("--max-queue", type=int, default=64, help="requests that may wait (default 64)")
    srv.add_argument("--queue-timeout", type=float, default=10.0, help="seconds a request waits (default 10)")
    srv.add_argument(
        "--idle-timeout", type=float, default=30.0, help="seconds a stream waits for its client (default 30)"
    )
    srv.add_argument("--max-chars", type=int, default=4096, help="characters of input (default 4,096)")
    srv.add_argument(
        "--max-speech-seconds",
        type=float,
        default=MAX_SPEECH_SECONDS,
        help=f"speech one request may make (default {MAX_SPEECH_SECONDS:g}, 10 minutes)",
    )
    srv.add_argument(
        "--voice-alias",
        action="append",
        metavar="NAME=VOICE",
        help="let requests name VOICE as NAME (repeat); OpenAI's 13 voice names (alloy, ash, ...) mean the "
        "first --addon's voice unless aliased",
    )
    srv.add_argument(
        "--workers",
        type=int,
        help="engine threads that run network calls side by side (default: one per core)",
    )
    srv.add_argument("--threads", type=int, default=1, help="torch threads of each engine worker (default 1)")
    srv.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own engine and its share of the cores",
    )
    srv.add_argument("--ray", action="store_true", help="serve on a local Ray Serve (the `ray` extra)")
    srv.add_argument("--replicas", type=int, default=1, help="engine replicas with --ray (default 1)")
    srv.add_argument("--wyoming", metavar="tcp://HOST:PORT", help="also speak Wyoming (Home Assistant) there")
    srv.epilog = (
        "Set TTS_NEURON_API_KEY to require 'Authorization: Bearer KEY' on all but /health, /ready and /."
    )
    srv.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    srv.set_defaults(run=_serve)
    imp = commands.add_parser("import", help="import a voice trained elsewhere (Piper, Kokoro)")
    imp_kinds = imp.add_subparsers(dest="kind", required=True)
    piper = imp_kinds.add_parser("piper", help="a Piper voice: VOICE.onnx and VOICE.onnx.json")
    piper.add_argument("voice", type=Path, help="the voice's .onnx file")
    piper.add_argument("--config", type=Path, help="its JSON (default: VOICE.onnx.json beside it)")
    piper.add_argument("--out", type=Path, required=True, help="folder to write the addon to")
    piper.add_argument("--name", help="the voice's name (default: the .onnx file's name without .onnx)")
    piper.set_defaults(run=_import_piper)
    kokoro = imp_kinds.add_parser("kokoro", help="a Kokoro model: config.json, its .pth and voices/*.pt")
    kokoro.add_argument("--model", type=Path, required=True, help="the model's folder, in Kokoro's layout")
    kokoro.add_argument("--out", type=Path, required=True, help="folder to write the addon to")
    kokoro.add_argument("--name", default="kokoro", help="the voice's name (default: kokoro)")
    kokoro.add_argument("--default-voice", help="the voice pack a call without a speaker uses (af_heart)")
    kokoro.set_defaults(run=_import_kokoro)
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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor is the exit flush
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
