"""Peak memory of `tts-neuron synthesize --raw` on a 5,000- and a 100,000-character text (an audiobook
chapter): the long one must stream in the memory of the short one.

    python benchmarks/long_form_memory.py [--addon addons/fastspeech-en] [--chars 5000 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROSE = "The committee met on a grey morning to decide whether the old bridge should be repaired. "


def peak_rss_of_raw_run(addon: Path, text_file: Path) -> tuple[int, int]:
    """(peak resident memory in KiB, bytes of PCM) of `synthesize --raw` on a file."""
    command = [sys.executable, "-m", "tts_neuron.cli", "synthesize", "--addon", str(addon), "--raw"]
    with subprocess.Popen([*command, "--text-file", str(text_file)], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        written = 0
        while block := process.stdout.read(1 << 16):
            written += len(block)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"synthesize --raw failed on {text_file}")
    return usage.ru_maxrss, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addon", type=Path, default=REPO / "addons" / "fastspeech-en")
    parser.add_argument("--chars", type=int, nargs="+", default=[5000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for n in args.chars:
            text = Path(folder) / f"{n}.txt"
            text.write_text((PROSE * (n // len(PROSE) + 1))[:n])
            started = time.monotonic()
            rss, written = peak_rss_of_raw_run(args.addon, text)
            minutes = written / 2 / 22050 / 60
            print(
                f"{n} characters: peak RSS {rss / 1024:.1f} MiB, {minutes:.1f} min of speech, "
                f"{time.monotonic() - started:.0f} s"
            )


if __name__ == "__main__":
    main()
