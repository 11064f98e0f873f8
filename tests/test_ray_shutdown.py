"""`tts-neuron serve --ray` as a container stops it: SIGTERM ends the process, Serve and the local Ray
instance it started, leaving no Ray process behind. Slow: Ray starts and loads the voices (about 40 s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_server import FASTSPEECH, free_port

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "ray::")


def ray_processes() -> set[int]:
    """Processes of any local Ray instance (its daemons and workers), by their command lines."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if any(name in command for name in RAY_DAEMONS):
                    found.add(int(entry.name))
    return found


def test_sigterm_stops_serve_and_the_ray_instance_it_started() -> None:
    before = ray_processes()
    port = free_port()
    command = [sys.executable, "-m", "tts_neuron.cli", "serve", "--ray", "--addon", str(FASTSPEECH)]
    process = subprocess.Popen([*command, "--port", str(port)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "serve --ray never became ready"
            time.sleep(0.5)
        assert ray_processes() - before, "no Ray process was started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 30  # Ray's workers exit a moment after their raylet
        while (left := ray_processes() - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left behind: {sorted(left)}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
