"""The `tts-neuron` command through a subprocess, as a user runs it."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import struct
import subprocess
import sys
import termios
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import EXAMPLES, edit_addon_json
from tests.test_stack import SEED_STACK_JSON

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from long_form_memory import PROSE, peak_rss_of_raw_run  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog."


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tts_neuron.cli", *args],
        input=stdin.encode() if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def assert_clean_error(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("tts-neuron: error:")]
    assert len(lines) == 1 and message in lines[0], err


def test_synthesize_to_wav_with_timings(tiny_addon_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    result = run(
        "synthesize", "--addon", str(tiny_addon_dir), "--text", SENTENCE, "--out", str(out), "--timings"
    )
    assert result.returncode == 0, result.stderr.decode()
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 1, 2)
        assert wav.getnframes() > 0
    assert "time to first audio" in result.stderr.decode() and "real-time factor" in result.stderr.decode()


def test_raw_pcm_on_stdout_from_stdin_text(tiny_addon_dir: Path) -> None:
    result = run("synthesize", "--addon", str(tiny_addon_dir), "--raw", stdin=SENTENCE)
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout) > 0 and len(result.stdout) % 2 == 0
    assert np.abs(np.frombuffer(result.stdout, "<i2")).max() > 0


def test_seed_stack_file_writes_mel_frames(tiny_addon_dir: Path, tmp_path: Path) -> None:
    stack_file = tmp_path / "seed.json"
    stack_file.write_text(SEED_STACK_JSON)
    mel = tmp_path / "mel.npy"
    result = run("synthesize", "--addon", str(tiny_addon_dir), "--stack-file", str(stack_file),
                 "--text", SENTENCE, "--mel", str(mel))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    frames = np.load(mel)
    assert frames.ndim == 2 and frames.shape[1] == 80 and frames.shape[0] > 10


def test_mel_alongside_audio(tiny_addon_dir: Path, tmp_path: Path) -> None:
    mel, out = tmp_path / "mel.npy", tmp_path / "x.wav"
    result = run(
        "synthesize", "--addon", str(tiny_addon_dir), "--text", SENTENCE, "--out", str(out), "--mel", str(mel)
    )
    assert result.returncode == 0, result.stderr.decode()
    with wave.open(str(out)) as wav:
        assert wav.getnframes() == np.load(mel).shape[0] * 256


def test_a_block_from_outside_the_package(tiny_addon_dir: Path, tmp_path: Path) -> None:
    stack = json.loads(SEED_STACK_JSON)
    stack[0]["streamable_block"]["stack"].append({"type": "my_blocks:ChunkSizes", "label": "mel"})
    stack += [{"type": "GriffinLim"}, {"type": "my_blocks:Gain", "gain": 0.0}]
    stack_file = tmp_path / "plugged.json"
    stack_file.write_text(json.dumps({"stack": stack}))
    result = run("synthesize", "--addon", str(tiny_addon_dir), "--stack-file", str(stack_file),
                 "--text", SENTENCE, "--raw", env={"PYTHONPATH": str(EXAMPLES)})  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "mel: start 0 length" in result.stderr.decode()
    assert len(result.stdout) > 0 and not np.frombuffer(result.stdout, "<i2").any(), (
        "gain 0 silences the audio"
    )


def test_inspect(tiny_addon_dir: Path) -> None:
    result = run("inspect", "--addon", str(tiny_addon_dir))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "UNTRAINED" in out and "text_encoder: TextEncoder, role encoder" in out
    assert (
        "  cpu:" in out
        and "Decoder 'decoder' (receptive field +/-" in out
        and "Vocoder 'vocoder' (receptive field +/-8 frames, carried: each frame once)" in out
    )
    assert "compiled for: nothing yet" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing to speak"),
        ("   \n ", "nothing to speak"),
        ("?!...", "nothing to speak"),
        ("🙂🎉", "nothing to speak"),
    ],
)
def test_bad_text(tiny_addon_dir: Path, tmp_path: Path, text: str, message: str) -> None:
    out = tmp_path / "x.wav"
    assert_clean_error(
        run("synthesize", "--addon", str(tiny_addon_dir), "--text", text, "--out", str(out)), message
    )
    assert not out.exists(), "a failed run leaves no output file"


def test_text_with_nothing_to_speak_is_refused_before_the_voice_loads(tiny_addon_dir: Path) -> None:
    """The neuron stack on the CPU target has nothing compiled here: were the voice loaded first, the
    error would name the missing artifacts, not the text."""
    result = run(
        "synthesize",
        "--addon",
        str(tiny_addon_dir),
        "--stack",
        "neuron",
        "--target",
        "cpu",
        "--text",
        "?!",
        "--raw",
    )
    assert_clean_error(result, "nothing to speak")


def test_bad_addons_and_stacks(addon_copy: Path, tmp_path: Path) -> None:
    args = ["--text", SENTENCE, "--out", str(tmp_path / "x.wav")]
    assert_clean_error(run("synthesize", "--addon", str(tmp_path / "none"), *args), "addon folder not found")
    assert_clean_error(
        run("synthesize", "--addon", str(addon_copy), "--stack", "gpu", *args), "no stack 'gpu'"
    )

    stack_file = tmp_path / "bad.json"
    stack_file.write_text('[{"type": "Vocodr"}]')
    assert_clean_error(run("synthesize", "--addon", str(addon_copy), "--stack-file", str(stack_file), *args),
                       "stack[0]: unknown block type 'Vocodr'; known:")  # fmt: skip
    stack_file.write_text("[{")
    assert_clean_error(run("synthesize", "--addon", str(addon_copy), "--stack-file", str(stack_file), *args),
                       "bad.json: invalid JSON")  # fmt: skip

    (addon_copy / "networks" / "decoder.safetensors").unlink()
    assert_clean_error(run("synthesize", "--addon", str(addon_copy), *args),
                       "networks.decoder.parameters: network file not found")  # fmt: skip
    (addon_copy / "addon.json").write_text("{ not json")
    assert_clean_error(run("inspect", "--addon", str(addon_copy)), "addon.json: invalid JSON")


def test_unknown_block_in_addon_json(addon_copy: Path, tmp_path: Path) -> None:
    edit_addon_json(addon_copy, lambda c: c["stacks"]["cpu"].append({"type": "Reverb"}))
    result = run(
        "synthesize", "--addon", str(addon_copy), "--text", SENTENCE, "--out", str(tmp_path / "x.wav")
    )
    assert_clean_error(result, "stacks.cpu[2]: unknown block type 'Reverb'")


def test_missing_targets_and_outputs(tiny_addon_dir: Path, tmp_path: Path) -> None:
    args = ["synthesize", "--addon", str(tiny_addon_dir), "--text", SENTENCE]
    assert_clean_error(run(*args), "say where the output goes")
    if importlib.util.find_spec("torch_neuronx") is None:  # on an inf2 host the neuron target is there
        assert_clean_error(run(*args, "--raw", "--target", "neuron"), "AWS Neuron SDK")
    if not torch.cuda.is_available():
        assert_clean_error(run(*args, "--raw", "--target", "cuda"), "CUDA GPU")
    assert_clean_error(run(*args, "--out", str(tmp_path / "no" / "dir" / "x.wav")), "cannot write")
    missing = run(
        "synthesize", "--addon", str(tiny_addon_dir), "--text-file", str(tmp_path / "none.txt"), "--raw"
    )
    assert_clean_error(missing, "text file not found")


def test_debug_shows_the_traceback(tiny_addon_dir: Path) -> None:
    result = run("--debug", "synthesize", "--addon", str(tiny_addon_dir), "--text", "", "--raw")
    assert result.returncode != 0 and "Traceback" in result.stderr.decode()


def test_a_long_text_shows_progress_on_a_terminal_only(tiny_addon_dir: Path) -> None:
    """tqdm on stderr when it is a terminal (here a pseudo-terminal) and the text is long; nothing when
    stderr is a pipe or a file."""
    command = [sys.executable, "-m", "tts_neuron.cli", "synthesize", "--addon", str(tiny_addon_dir), "--raw"]
    text = PROSE * 8  # about 40 s of speech by its letters
    terminal, child_side = os.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    with subprocess.Popen(
        [*command, "--text", text], stdout=subprocess.DEVNULL, stderr=child_side
    ) as process:
        os.close(child_side)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the child has exited and closed its side
            while chunk := os.read(terminal, 65536):
                shown += chunk
    os.close(terminal)
    assert process.returncode == 0 and b"s of speech" in shown
    piped = run("synthesize", "--addon", str(tiny_addon_dir), "--raw", "--text", text)
    assert piped.returncode == 0 and b"of speech" not in piped.stderr


@pytest.mark.slow
def test_texts_of_any_length_stream_in_flat_memory(tmp_path: Path) -> None:
    """The speech cap is the server's, per request: the CLI speaks a 40,000-character text (30 minutes,
    three times the server's cap) to the end, in the memory of a 5,000-character one."""
    addon = Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en"
    short, long = tmp_path / "short.txt", tmp_path / "long.txt"
    short.write_text((PROSE * 600)[:5000])
    long.write_text((PROSE * 600)[:40000])
    short_rss, _ = peak_rss_of_raw_run(addon, short)
    long_rss, written = peak_rss_of_raw_run(addon, long)
    print(f"peak RSS: {short_rss} KiB for 5,000 characters, {long_rss} KiB for 40,000 ({written} bytes)")
    assert written / 2 / 22050 > 2 * 600
    assert long_rss <= 1.1 * short_rss, (
        f"peak RSS {long_rss} KiB for 40,000 characters, {short_rss} for 5,000"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--voice-alias", "alloy"], "--voice-alias takes NAME=VOICE"),
        (["--voice-alias", "alloy=nobody"], "no voice 'nobody' is served; it has fastspeech-en"),
        (["--max-speech-seconds", "0"], "--max-speech-seconds must be positive"),
        (["--processes", "0"], "--workers, --threads and --processes must be at least 1"),
        (["--processes", "2", "--ray"], "--processes serves HTTP only; --wyoming and --ray take one process"),
    ],
)
def test_serve_refuses_bad_voice_aliases_and_limits_before_it_listens(flags: list[str], message: str) -> None:
    addon = str(Path(__file__).resolve().parent.parent / "addons" / "fastspeech-en")
    assert_clean_error(run("serve", "--addon", addon, "--port", "1", *flags), message)
