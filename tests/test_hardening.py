"""Hostile input (issue 14): text that crashed libespeak-ng, stacks that import code, CLI failure paths.

Inputs that could crash the interpreter run only in child processes, so a regression fails a test instead
of killing pytest.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tts_neuron
from tests.test_cli import assert_clean_error
from tests.test_cli import run as run_cli
from tts_neuron import cli
from tts_neuron.addon import load_addon
from tts_neuron.blocks.context import MAX_NESTING, BuildContext
from tts_neuron.errors import StackError, TextError
from tts_neuron.frontend import MAX_SPEECH_SECONDS, SECONDS_PER_PHONEME, Frontend, Sentence
from tts_neuron.frontend.espeak import MAX_CHAIN_BYTES, MAX_TOKEN_CHARS, bound_text
from tts_neuron.registry import register_block, resolve_block
from tts_neuron.stack import build_stack

REPO = Path(__file__).resolve().parent.parent

CRASHERS = [
    "a." * 191 + "a",  # SIGSEGV in libespeak-ng before the bound
    "U.S.A." * 64,  # stack smashing (SIGABRT)
    "a.a. " * 100,  # one chain across spaces
    "ḁ." * 70,  # three-byte letters: about 200 bytes of letters
    "щ.." * 160,
    "a._" * 200,  # espeak-ng reads "_" as a space
    "\u0301.\u0325." * 200,  # combining marks count as letters
]


def run_python(code: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child interpreter at the repository root; a crash there is just a return code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_exits_cleanly(result: subprocess.CompletedProcess[str]) -> None:
    last = result.stderr.strip().splitlines()[-3:]
    assert result.returncode == 0, f"child exited {result.returncode}; last stderr lines: {last}"


# -- 1. text that killed the process --------------------------------------------------------------------


def test_text_that_crashed_espeak_is_spoken() -> None:
    code = f"""
from tts_neuron_build.symbols import collect_symbols
from tests.conftest import COVERAGE_TEXT
from tts_neuron.errors import TextError
from tts_neuron.frontend import Frontend
from tts_neuron.frontend.espeak import Espeak

frontend = Frontend(collect_symbols(COVERAGE_TEXT))
for text in {CRASHERS!r}:
    Espeak.get().synthesize(text)
    try:
        list(frontend.sentences(text))
    except TextError:  # marks alone: nothing to speak
        pass
"""
    assert_exits_cleanly(run_python(code))


def test_ordinary_text_reaches_espeak_unchanged() -> None:
    for text in [
        "U.S.A. e.g. i.e. J. R. R. Tolkien met Dr. Jones at 5 p.m.",
        "Visit www.example.com or 192.168.0.1 for version 1.2.3. Wait... what?",
        "pneumonoultramicroscopicsilicovolcanoconiosis is a long word.",
    ]:
        assert bound_text(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab.é_ ḁ-/1\u0301"), max_size=600))
def test_bound_text_only_moves_spaces_and_punctuation(text: str) -> None:
    bounded = bound_text(text)
    assert all(len(token) <= MAX_TOKEN_CHARS for token in bounded.split())
    assert re.sub(r"[\W_]", "", bounded) == re.sub(r"[\W_]", "", text)
    assert bound_text(bounded) == bounded, "every chain and token is within bounds once bounded"


def test_bound_text_takes_linear_time() -> None:
    start = time.perf_counter()
    bound_text("! " * 50_000 + "x" * 100_000)  # a quadratic scan took 10 s for 20,000 characters of this
    assert time.perf_counter() - start < 2.0


def test_long_chains_are_cut_into_short_ones() -> None:
    bounded = bound_text("U.S.A." * 64)
    chains = bounded.split(" ")
    assert len(chains) > 1 and all(len(chain.encode()) <= MAX_CHAIN_BYTES + 2 for chain in chains)


CLASSES = {
    "ascii letters": "abcxyzAUSW",
    "latin": "éßøŋəʃḁḃỳẽẞ",
    "greek": "αβγΩ",
    "cyrillic": "жщЯ",
    "digits": "0179",
    "punctuation": ".,;:-/_'\"()!?&%#@+=*",
    "emoji": "🙂🎉👍🏽",
    "marks": "\u0301\u0325",
    "other scripts": "漢字عربي",
}
SEPARATORS = [".", ". ", "", "-", "/", ",", "'", "._", ".'", ". _", "..", "。", "．", ".\u0301"]


@st.composite
def long_space_free_text(draw: st.DrawFn) -> str:
    """Characters of one class (or all mixed) joined by one separator: tokens, chains, URLs, digit strings."""
    alphabet = draw(st.sampled_from([*CLASSES.values(), "".join(CLASSES.values())]))
    separator = draw(st.sampled_from(SEPARATORS))
    return separator.join(draw(st.lists(st.sampled_from(alphabet), min_size=100, max_size=400)))


def fuzz_espeak_boundary(examples: int) -> None:
    """Speak hostile text through the one entry point into libespeak-ng; run only in a child process."""
    from tts_neuron.frontend.espeak import Espeak

    espeak = Espeak.get()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(long_space_free_text(), min_size=1, max_size=3).map(" ".join))
    def speak(text: str) -> None:
        print(repr(text), file=sys.stderr, flush=True)  # the last line names the input of a crash
        espeak.synthesize(text)

    speak()


def test_fuzz_the_espeak_boundary_in_a_child_process() -> None:
    assert_exits_cleanly(
        run_python("from tests.test_hardening import fuzz_espeak_boundary; fuzz_espeak_boundary(40)")
    )


@pytest.mark.slow
def test_fuzz_the_espeak_boundary_longer_in_a_child_process() -> None:
    assert_exits_cleanly(
        run_python("from tests.test_hardening import fuzz_espeak_boundary; fuzz_espeak_boundary(400)")
    )


# -- 2. a stack file is code: an explicit mode without imports -------------------------------------------

NOISY_MODULE = """
print("IMPORTED noisy_block")
from tts_neuron.blocks.base import StreamableBlock


class Loud(StreamableBlock):
    def stream(self, upstream, features):
        yield from upstream or ()
"""


def test_without_imports_a_module_path_is_refused_before_it_is_imported(
    tiny_addon_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "noisy_block.py").write_text(NOISY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    stack = [{"type": "Upsampler"}, {"type": "noisy_block:Loud"}]
    message = r"stack\[1\]: block type 'noisy_block:Loud' would import module 'noisy_block'"
    with pytest.raises(StackError, match=message):
        tts_neuron.load(tiny_addon_dir, stack=stack, allow_imports=False)
    context = BuildContext(load_addon(tiny_addon_dir), torch.device("cpu"), "stack", allow_imports=False)
    with pytest.raises(StackError, match=message):
        build_stack(stack, context)
    assert "noisy_block" not in sys.modules
    assert "IMPORTED" not in capfd.readouterr().out


def test_without_imports_registered_and_built_in_blocks_still_resolve() -> None:
    register_block("LazyHardeningDoubler", "tests.test_stack:Doubler")
    assert resolve_block("LazyHardeningDoubler", allow_imports=False).__name__ == "Doubler"
    assert resolve_block("Upsampler", allow_imports=False).__name__ == "Upsampler"


def test_cli_no_imports_keeps_module_output_out_of_the_pcm_stream(
    tiny_addon_dir: Path, tmp_path: Path
) -> None:
    stack_file = tmp_path / "this.json"
    stack_file.write_text('[{"type": "this:X"}]')  # importing `this` prints the Zen of Python
    args = ["synthesize", "--addon", str(tiny_addon_dir), "--stack-file", str(stack_file), "--text", "Hi."]
    trusting = run_cli(*args, "--raw")
    assert b"Beautiful is better than ugly" in trusting.stdout, "without the flag the module runs"
    refused = run_cli(*args, "--raw", "--no-imports")
    assert_clean_error(refused, "stack[0]: block type 'this:X' would import module 'this'")
    assert refused.stdout == b""


# -- 3. CLI failures: one line, exit 2, no traceback, no partial file -----------------------------------

HOSTILE_BLOCKS = """
import torch
from tts_neuron.blocks.base import Chunk, StreamableBlock


class Raiser(StreamableBlock):
    def stream(self, upstream, features):
        yield Chunk(torch.zeros(4096), 0, False)
        raise RuntimeError("boom\\nsecond line")


class Silent(StreamableBlock):
    def stream(self, upstream, features):
        return iter(())


class NotANumber(StreamableBlock):
    def stream(self, upstream, features):
        yield Chunk(torch.full((4096,), float("nan")), 0, True)
"""
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def synthesize_args(addon: Path, *extra: str) -> list[str]:
    return ["synthesize", "--addon", str(addon), "--text", "Hello there.", *extra]


@needs_dev_full
def test_a_full_disk_is_one_line(tiny_addon_dir: Path) -> None:
    assert_clean_error(
        run_cli(*synthesize_args(tiny_addon_dir, "--out", "/dev/full")), "/dev/full: cannot write"
    )
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "tts_neuron.cli", *synthesize_args(tiny_addon_dir, "--raw")],
            stdout=full,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=240,
        )
    assert_clean_error(result, "stdout: cannot write: No space left on device")


@needs_dev_full
def test_a_failed_mel_file_takes_the_finished_wav_with_it(tiny_addon_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    result = run_cli(*synthesize_args(tiny_addon_dir, "--out", str(out), "--mel", "/dev/full"))
    assert_clean_error(result, "/dev/full: cannot write")
    assert not out.exists()


def test_a_missing_mel_folder_is_refused_before_synthesis(tiny_addon_dir: Path, tmp_path: Path) -> None:
    out, mel = tmp_path / "x.wav", tmp_path / "no" / "mel.npy"
    result = run_cli(*synthesize_args(tiny_addon_dir, "--out", str(out), "--mel", str(mel), "--timings"))
    assert_clean_error(result, f"{mel}: cannot write: folder")
    assert not out.exists() and "load" not in result.stderr.decode(), "refused before the voice was loaded"


def test_deep_stacks_are_stack_errors(tiny_addon_dir: Path, tmp_path: Path) -> None:
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 1500 + "]" * 1500)
    result = run_cli(*synthesize_args(tiny_addon_dir, "--raw", "--stack-file", str(deep_json)))
    assert_clean_error(result, "deep.json: JSON nested too deeply to read")

    spec: dict[str, object] = {"type": "Upsampler"}
    for _ in range(200):
        spec = {"type": "StreamableStack", "stack": [spec]}
    context = BuildContext(load_addon(tiny_addon_dir), torch.device("cpu"), "stack")
    with pytest.raises(
        StackError, match=rf"stack(\[0\]\.stack){{{MAX_NESTING}}}\[0\]: blocks are nested more"
    ):
        build_stack([spec], context)


def test_endless_text_is_refused_past_max_chars(tiny_addon_dir: Path) -> None:
    args = ["synthesize", "--addon", str(tiny_addon_dir), "--raw"]
    assert_clean_error(
        run_cli(*args, "--text-file", "/dev/zero"), "/dev/zero: more than 1,000,000 characters"
    )
    assert_clean_error(
        run_cli(*args, "--max-chars", "5", stdin="Hello there."), "stdin: more than 5 characters"
    )


def test_invalid_utf8_is_refused_alike_from_stdin_and_a_file(tiny_addon_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "latin1.txt"
    text.write_bytes("Grüße aus Köln.".encode("latin-1"))
    args = ["synthesize", "--addon", str(tiny_addon_dir), "--raw"]
    from_file = run_cli(*args, "--text-file", str(text))
    assert_clean_error(from_file, f"{text}: not UTF-8 text (invalid start byte at byte 2)")
    from_stdin = subprocess.run(
        [sys.executable, "-m", "tts_neuron.cli", *args],
        input=text.read_bytes(),
        capture_output=True,
        timeout=240,
        env={**os.environ, "LC_ALL": "C"},  # the locale must not change how stdin is decoded
    )
    assert_clean_error(from_stdin, "stdin: not UTF-8 text (invalid start byte at byte 2)")


def test_utf8_is_decoded_across_blocks_and_errors_give_the_file_offset() -> None:
    split = "a" * (cli._READ_BLOCK_BYTES - 1) + "é"  # é's two bytes straddle the first block's end
    assert cli._read_utf8(io.BytesIO(split.encode()), "x", 10**6) == split
    with pytest.raises(TextError, match=rf"x: not UTF-8 text \(invalid start byte at byte {70_000}\)"):
        cli._read_utf8(io.BytesIO(b"a" * 70_000 + b"\xff"), "x", 10**6)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("Raiser", "stack 'custom' failed: RuntimeError: boom"),
        ("Silent", "stack 'custom' made no audio for the text"),
        ("NotANumber", "stack 'custom' made audio that is not finite (NaN or infinity) at 0.00 s"),
    ],
)
def test_a_failing_block_is_one_line_and_leaves_no_file(
    tiny_addon_dir: Path, tmp_path: Path, block: str, message: str
) -> None:
    (tmp_path / "hostile_blocks.py").write_text(HOSTILE_BLOCKS)
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(f'[{{"type": "hostile_blocks:{block}"}}]')
    out = tmp_path / "x.wav"
    args = synthesize_args(tiny_addon_dir, "--stack-file", str(stack_file), "--out", str(out))
    result = run_cli(*args, env={"PYTHONPATH": str(tmp_path)})
    assert_clean_error(result, message)
    assert "second line" not in result.stderr.decode()
    assert not out.exists(), "a failed run leaves no partial WAV"


# -- 4. the public API's error types --------------------------------------------------------------------


def test_the_public_api_exports_its_error_types_and_the_frontend() -> None:
    from tts_neuron.backends.executor import ShapeError
    from tts_neuron.backends.manifest import CompiledArtifactError
    from tts_neuron.frontend import Frontend
    from tts_neuron.frontend.espeak import EspeakError

    exported = {"ShapeError": ShapeError, "CompiledArtifactError": CompiledArtifactError,
                "EspeakError": EspeakError, "Frontend": Frontend}  # fmt: skip
    for name, thing in exported.items():
        assert name in tts_neuron.__all__ and getattr(tts_neuron, name) is thing
    errors = [getattr(tts_neuron, name) for name in tts_neuron.__all__ if name.endswith("Error")]
    assert len(errors) >= 11 and all(issubclass(error, tts_neuron.TTSNeuronError) for error in errors)
    assert all(hasattr(tts_neuron, name) for name in tts_neuron.__all__)


# -- 10. a cap on the speech of one request -------------------------------------------------------------

PROSE = (
    "The committee met on a grey morning to decide whether the old bridge should be repaired or replaced. "
    "Engineers explained that the steel had corroded faster than anyone expected, and that the cost of "
    "patching it again would soon exceed the price of a new span. Residents who crossed it every day asked "
    "how long the river would be closed to traffic, and whether the ferry could run more often in the "
    "meantime. After two hours of careful questions, the members agreed to publish both plans and to hear "
    "from the public before the end of the month. "
)
capped = Frontend(
    load_addon(REPO / "addons" / "fastspeech-en").symbols, max_speech_seconds=MAX_SPEECH_SECONDS
)


def estimated_seconds(sentences: list[Sentence]) -> float:
    return sum(len(s.tokens) * SECONDS_PER_PHONEME / s.rate + s.pause_after for s in sentences)


def test_4096_characters_of_prose_fit_the_default_cap_with_room() -> None:
    text = (PROSE * 10)[:4096]
    seconds = estimated_seconds(list(capped.sentences(text)))
    assert 2 * seconds < MAX_SPEECH_SECONDS  # room: twice as much still fits


def test_5000_digits_are_refused_before_the_first_sentence() -> None:
    """They became 23 minutes of digits; long digit runs are counted up front, so no audio is made."""
    with pytest.raises(
        TextError, match=r"^this text would take at least 12.2 minutes .* the limit is 10 minutes"
    ):
        capped.sentences("7" * 5000)


def test_speech_past_the_cap_is_refused_as_sentences_are_made() -> None:
    """Spaced digits are no digit run: the running count stops them, what was yielded fits the cap, and the
    error extrapolates the whole text's length (1,000 "seven"s of 5 phonemes)."""
    frontend = Frontend(capped.symbols, max_speech_seconds=200)
    yielded: list[Sentence] = []
    with pytest.raises(TextError, match=r"minutes of speech; the limit is 3.33 minutes$") as err:
        yielded.extend(frontend.sentences("7 " * 1000))
    assert yielded and estimated_seconds(yielded) <= 200
    minutes = float(re.fullmatch(r"this text would take about ([\d.]+) minutes.*", str(err.value))[1])
    assert minutes == pytest.approx(1000 * 5 * SECONDS_PER_PHONEME / 60, rel=0.05)


def test_slow_rates_and_breaks_count_towards_the_cap() -> None:
    text = (PROSE * 2)[:800]
    seconds = estimated_seconds(list(capped.sentences(text)))
    frontend = Frontend(capped.symbols, max_speech_seconds=1.5 * seconds)
    assert estimated_seconds(list(frontend.sentences(text))) == seconds
    with pytest.raises(TextError, match="minutes of speech"):
        list(frontend.sentences(f'<speak><prosody rate="x-slow">{text}</prosody></speak>'))
    pauses = '<break time="10s"/>' * (int(seconds / 10) + 1)
    with pytest.raises(TextError, match="minutes of speech"):
        list(frontend.sentences(f"<speak>{text}{pauses}</speak>"))


def test_the_cap_is_a_constructor_argument_and_the_library_has_none() -> None:
    unlimited = Frontend(capped.symbols)
    assert len(list(unlimited.sentences("7" * 1200))) == 3
    assert len(list(unlimited.sentences("7" * 6000))) == 15  # past the server's 10 minutes
    with pytest.raises(TextError, match="the limit is 0.5 minutes"):
        Frontend(capped.symbols, max_speech_seconds=30).sentences("7" * 1200)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="max_speech_seconds must be positive"):
            Frontend(capped.symbols, max_speech_seconds=bad)
