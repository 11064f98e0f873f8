"""Freed host memory is kept for the next network call: blocks allocated again fault no pages in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

# A fresh process per case (glibc's settings are process-wide). A network call as the allocator sees it:
# eight activations of 5 MB alive at once, written, then all freed; the minor page faults of each of six
# calls. Plain malloc, not torch: torch's intra-op threads put small blocks between the large ones at
# random, so whether a torch call's blocks fit the heap the last one left varies from run to run.
PROGRAM = """
import ctypes, json, resource
from tts_neuron.allocator import hold_freed_memory
applied = hold_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
SIZE = 5 << 20  # bytes
def faults_of_a_call():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(SIZE) for _ in range(8)]
    for block in blocks:
        libc.memset(block, 1, SIZE)  # every page written
    for block in blocks:
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": [faults_of_a_call() for _ in range(6)]}))
"""


def run_fresh(program: str, malloc: str | None, *args: str) -> Any:
    """What a fresh Python process running `program` prints last, as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "TTS_NEURON_MALLOC" and not k.startswith("MALLOC_")}
    if malloc is not None:
        env["TTS_NEURON_MALLOC"] = malloc
    done = subprocess.run(
        [sys.executable, "-c", program, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def faults(malloc: str | None) -> dict[str, Any]:
    return run_fresh(PROGRAM, malloc)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_is_reused_without_page_faults() -> None:
    held, system = faults(None), faults("system")
    assert held["applied"] and not system["applied"]
    # glibc's defaults hand the activations back and fault them in again on every call: 40 MB of 4 kB
    # pages is 10,240 a call; held, only the first call faults them in
    assert all(faults > 9000 for faults in system["faults"]), system
    assert held["faults"][0] > 9000 and sum(held["faults"][1:]) < 100, held


LOADS = """
import json, sys
import tts_neuron, tts_neuron.allocator as allocator
before = allocator._applied
tts_neuron.load(sys.argv[1])
print(json.dumps([before, allocator._applied]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_loading_a_voice_holds_freed_memory_unless_told_not_to(tiny_addon_dir: Path) -> None:
    assert run_fresh(LOADS, None, str(tiny_addon_dir)) == [None, True]
    assert run_fresh(LOADS, "system", str(tiny_addon_dir)) == [None, False]


KERNELS = """
import json, os, sys
import tts_neuron
tts_neuron.load(sys.argv[1])
print(json.dumps(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")))
"""


def test_loading_a_voice_lets_onednn_keep_more_kernels_unless_the_user_set_it(
    tiny_addon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tts_neuron.allocator import KERNEL_CACHE

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)  # a load in this process set it
    assert run_fresh(KERNELS, None, str(tiny_addon_dir)) == str(KERNEL_CACHE)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")
    assert run_fresh(KERNELS, None, str(tiny_addon_dir)) == "7"
