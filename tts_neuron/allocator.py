"""Keep freed host memory for the next network call instead of handing it back to the kernel (glibc).

A vocoder call allocates and frees activations of megabytes dozens of times (a medium Piper HiFi-GAN at
152 frames: 5 MB each). By default glibc serves large blocks with fresh mappings and returns the top of
its heap to the kernel once more than its trim threshold (128 kB at first) is free, so the next call
faults every page in again: on an imported Piper medium voice, 1.6 to 1.8 million minor faults and 2 to
2.4 s of system time in about 20 s of synthesis, against 0.1 million and 0.17 s held
(docs/architecture.md, "Host memory"). The price: a process keeps its peak heap; freed memory is reused by
the next call, not returned.

Applied once per process by `tts_neuron.load`; `TTS_NEURON_MALLOC=system` leaves glibc's defaults. On
other C libraries (musl, macOS) it does nothing. Loading also lets oneDNN keep more of the kernels it built
(`keep_built_kernels`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""glibc's largest mmap threshold on 64-bit hosts: blocks below it come from the heap and are reused."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the heap's top beyond this is still returned (mallopt takes a C int)."""

KERNEL_CACHE = 4096
"""oneDNN primitives (a convolution's kernels, built for one input shape) a process keeps. oneDNN's default,
1,024, holds about 39 window lengths of a Piper medium HiFi-GAN (26 primitives a length) and nothing
else, so the encoder's convolutions at each sentence's token count evicted lengths that came back; with
4,096 a second pass over 39 sentences took 0.966-0.998x Piper's ONNX Runtime against 0.997-1.010x
(three alternating pairs, ad hoc, peak memory unchanged: docs/importing.md)."""

_applied: bool | None = None


def hold_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds so freed blocks stay in the heap (once); whether it applies."""
    global _applied
    if _applied is None:
        _applied = os.environ.get("TTS_NEURON_MALLOC", "hold") != "system" and _mallopt_all()
    return _applied


def keep_built_kernels() -> None:
    """Let oneDNN keep KERNEL_CACHE primitives unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set. oneDNN reads
    it when it builds its first primitive, so this counts only before the process's first convolution."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE))


def _mallopt_all() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
