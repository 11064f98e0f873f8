"""Freed host memory is kept for the next network call: blocks allocated again fault no pages in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# A fresh process per case (glibc's settings are process-wide). Blocks of growing sizes, as a stream's
# growing windows allocate them, allocated, written and freed: once to warm up, then the minor page faults
# of a second round. glibc's defaults hand most of them back to the kernel between uses.
PROGRAM = """
import json, resource, torch
from tts_neuron.allocator import hold_freed_memory
applied = hold_freed_memory()
sizes = [mb << 20 for mb in range(4, 32, 4)]  # bytes
def round_of_blocks():
    for size in sizes:
        torch.ones(size // 4)  # float32: every page written, then freed
round_of_blocks()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_of_blocks()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def faults(malloc: str | None) -> dict[str, int | bool]:
    env = {k: v for k, v in os.environ.items() if k != "TTS_NEURON_MALLOC" and not k.startswith("MALLOC_")}
    if malloc is not None:
        env["TTS_NEURON_MALLOC"] = malloc
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_is_reused_without_page_faults() -> None:
    held, system = faults(None), faults("system")
    assert held["applied"] and not system["applied"]
    # glibc's defaults hand the activations back and fault them in again on every call
    assert system["faults"] > 5000, system  # 28 MB of 4 kB pages is 7,168
    assert held["faults"] < 100, held
