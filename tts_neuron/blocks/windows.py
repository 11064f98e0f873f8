"""The one window loop of every block that needs context around what it emits (decoders, vocoders).

`windows` cuts the frames of an utterance, as they arrive, into windows: a core of frames to emit plus up
to `halo` frames of context on each side (fewer at the utterance's edges, where the utterance has none).
With a halo of at least the network's receptive field, processing each window and keeping its core gives
what processing the whole utterance at once gives. Blocks differ only in what they do with a window:
run a network on it as it is (dynamic shapes), or place it in a fixed-size bucket and mask the rest
(`pad_window`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tts_neuron.blocks.base import Chunk
from tts_neuron.blocks.buffer import FrameBuffer

CONTINUING_GROWTH = 4
"""A windowed block on dynamic shapes lets a continuing sentence's windows (CONTINUES: a direct run's
sentence after its first) start at their full core and keep doubling to this many times it: 512 frames
for a core of 128, so most sentences take one or two windows and recompute little context (Piper's
medium voice in 0.92 to 1.0x the time of 128-frame windows, fastspeech-en in 0.89x:
benchmarks/window_growth.py). Networks in their carried forms recompute none, but a larger call still
runs faster per frame (fastspeech-en 0.93x, tacotron-en 0.97x, medians of 3 rounds of 40 sentences).
Doubling is the schedule a text's first sentence already keeps in real time. The price is memory: a
Piper medium voice's direct run of a 12-sentence text peaked at 714 MB resident against 583 MB with
windows held (HiFi-GAN's activations at 560 frames; ad hoc)."""

DYNAMIC_MULTIPLE = 16
"""A windowed block on dynamic shapes rounds each window's length up to a multiple of this with more
context on the left, where the utterance has it, so that its network meets a few shapes instead of one per
sentence: oneDNN builds a convolution's kernels for each new shape (the imported Piper voice's
channels-last HiFi-GAN ran a window 1.6x slower the first time its length was seen), and the engine
batches only calls of one shape. More context never changes a core's output."""


@dataclass(frozen=True)
class Window:
    """Frames [lo, hi) of an utterance: the core [start, stop) with its context (at least `halo` frames
    each side where the utterance has them; more on the left for a window rounded to a multiple)."""

    frames: torch.Tensor
    """[hi - lo, C]"""
    lo: int
    start: int
    stop: int
    hi: int
    halo: int
    final: bool
    """True on the utterance's last window."""
    end_pad: int = 0
    """Frames past the utterance's end that would round the window's length up to the `multiple` it was
    cut with, where context on the left could not (a last window that starts with the utterance, such as
    a whole sentence in one window): a network that masks its layers may take them as zeros, masked, and
    so meet fewer shapes (`pad_end`); 0 elsewhere."""

    @property
    def core(self) -> slice:
        """The core's rows within `frames` (or within any per-frame output of them)."""
        return slice(self.start - self.lo, self.stop - self.lo)

    @property
    def missing_left(self) -> int:
        """Context frames the utterance lacks before the core (it starts there)."""
        return self.halo - (self.start - self.lo)

    @property
    def missing_right(self) -> int:
        return self.halo - (self.hi - self.stop)


def windows(
    upstream: Iterator[Chunk],
    halo: int,
    core: int | None = None,
    first_core: int | None = None,
    multiple: int = 1,
) -> Iterator[Window]:
    """Windows over the frames `upstream` delivers, each as soon as its core has its right context.

    `core=None`: every window takes all the frames that are ready (dynamic shapes). Otherwise a window
    waits for a full core, except at the end: `first_core` frames for the first one, then twice the one
    before, up to `core` (16, 32, 64, 128): the first audio comes early, and each next window is ready
    before the audio so far has played out, even when the host is busy. A window's length is rounded up
    to a `multiple` with more context on the left where the utterance has it (DYNAMIC_MULTIPLE), else
    the last window says how many frames past the end would round it (`Window.end_pad`).
    """
    buffer, done = FrameBuffer(), 0
    size = first_core or core
    for chunk in upstream:
        buffer.append(chunk)
        while True:
            ready = buffer.end if chunk.final else max(done, buffer.end - halo)
            if size is None:
                if ready == done and not chunk.final:
                    break
                stop = ready
            else:
                if ready - done < size and not chunk.final:
                    break
                stop = min(done + size, ready)
            last = chunk.final and stop == buffer.end
            lo, hi = max(0, done - halo), min(buffer.end, stop + halo)
            length = -(-(hi - lo) // multiple) * multiple  # rounded up to a multiple
            lo = max(0, hi - length)
            end_pad = length - (hi - lo) if last else 0
            yield Window(buffer.window(lo, hi), lo, done, stop, hi, halo, last, end_pad)
            done = stop
            size = None if core is None or size is None else min(core, 2 * size)
            buffer.drop_before(done - halo - multiple + 1)
            if last:
                return


def bucket_cores(buckets: list[int], halo: int) -> tuple[int, int]:
    """The first and the full core of windows placed in these buckets with a full halo each side: the
    smallest bucket's core first (early audio), doubling up to the largest bucket's."""
    first, full = buckets[0] - 2 * halo, buckets[-1] - 2 * halo
    if first < 1:
        raise ValueError(f"the smallest window {buckets[0]} leaves no core past a halo of {halo} each side")
    return first, full


def pad_end(window: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """The window with its `end_pad` frames past the utterance's end, zero and masked, and its mask: a
    network that masks its layers gives the same core as on the window itself."""
    # frames: [n, C] -> x: [1, n + end_pad, C], mask: [1, n + end_pad]
    frames = window.frames
    n = frames.shape[0]
    x = torch.cat([frames, frames.new_zeros(window.end_pad, *frames.shape[1:])]).unsqueeze(0)
    mask = frames.new_zeros(1, n + window.end_pad)
    mask[0, :n] = 1
    return x, mask


def pad_window(window: Window, bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window placed in a bucket of `bucket` frames, core at offset `halo`, and its mask.

    Frames the utterance does not have (before its start, past its end, past the core's halo) are zero
    and masked, so a masked network gives the same core as on the utterance itself. Unpad the outputs
    with rows [halo, halo + stop - start) (times samples per frame for audio).
    """
    # frames: [n, C] -> x: [1, bucket, C], mask: [1, bucket]
    frames = window.frames
    n, left = frames.shape[0], window.missing_left
    x = frames.new_zeros(1, bucket, *frames.shape[1:])
    mask = frames.new_zeros(1, bucket)
    x[0, left : left + n] = frames
    mask[0, left : left + n] = 1
    return x, mask


def core_chunk(window: Window, output: torch.Tensor, offset: int, per_frame: int) -> Chunk:
    """The part of a network's output that belongs to the window's core, whose first frame is input row
    `offset`; `per_frame` output rows per frame (1 for frames, hop for audio samples)."""
    n = window.stop - window.start
    return Chunk(
        output[offset * per_frame : (offset + n) * per_frame], window.start * per_frame, window.final
    )


def empty_chunk(window: Window, per_frame: int) -> Chunk:
    """What a window without frames gives (an utterance without frames): nothing, at its place."""
    return Chunk(window.frames.new_zeros(0), window.start * per_frame, window.final)
