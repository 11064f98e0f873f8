"""Word timestamps from a duration voice: each phoneme's frame count, the one its Upsampler repeats the
encoding for, summed per word. Exact by construction: a frame is `hop_length` samples of the vocoder's
audio, so a word's times are where its phonemes' frames are, not an estimate.

    for audio, words in voice.timed_stream("Hello there."):
        ...  # words: the sentence's WordTimes, with its first chunk

An attention voice's times would come from its alignment, which its decoder does not expose yet: it is
refused with a StackError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tts_neuron.blocks.acoustic import Upsampler, durations_to_frames
from tts_neuron.blocks.base import Block, StreamablePipeline
from tts_neuron.errors import StackError
from tts_neuron.frontend import Sentence

if TYPE_CHECKING:
    from tts_neuron.voice import Voice

_EDGE_PUNCTUATION = "\"'()[]{}.,;:!?…-–—"


@dataclass(frozen=True)
class WordTime:
    """One spoken word and where it is in the utterance's audio, in seconds from its start."""

    word: str
    start: float
    end: float


def timed_stream(voice: Voice, text: str, speed: float = 1.0) -> Iterator[tuple[np.ndarray, list[WordTime]]]:
    """What `voice.stream` yields, each chunk with the words of its sentence when it is the sentence's
    first chunk (an empty list otherwise): the words are known once the sentence's encoders ran, before
    its audio."""
    pipeline, upsampler = _duration_parts(voice)
    seconds_per_frame = voice.addon.audio.hop_length / voice.sample_rate
    made = 0  # samples of the utterance so far
    for sentence in voice.sentences(text, speed):
        rate = voice.sentence_rate(sentence, speed)
        features = voice.features(sentence, rate)
        encoded = pipeline.sequence_block(dict(features))  # what the pipeline itself would run first
        frames = durations_to_frames(
            encoded[upsampler.durations_key][0],
            upsampler.length_scale / rate,
            upsampler.max_frames_per_phoneme,
        )  # [N] frames per phoneme, as the Upsampler repeats them
        words = word_times(sentence, frames.tolist(), seconds_per_frame, made / voice.sample_rate)
        stream = pipeline.streamable_block.stream(None, encoded)
        for block in voice.stack.stack[1:]:
            stream = block.stream(stream, features)
        for chunk in stream:
            audio = chunk.data.float().cpu().numpy()
            made += len(audio)
            yield audio, words
            words = []
        pause = round(sentence.pause_after * voice.sample_rate)
        if pause > 0:
            made += pause
            yield np.zeros(pause, dtype=np.float32), []


def word_times(
    sentence: Sentence, frames: list[int], seconds_per_frame: float, offset: float
) -> list[WordTime]:
    """Each word's first and last frame among its phonemes (pauses belong to no word), in seconds from
    the utterance's start, given the sentence starts at `offset`."""
    labels = sentence.text.split()
    spans: dict[int, list[int]] = {}
    start = 0
    for phoneme, word, count in zip(sentence.phonemes, sentence.words, frames, strict=True):
        if count and not phoneme.startswith("_") and word >= 0:
            span = spans.setdefault(word, [start, start + count])
            span[1] = start + count
        start += count
    return [
        WordTime(
            labels[word].strip(_EDGE_PUNCTUATION) if word < len(labels) else "",
            offset + first * seconds_per_frame,
            offset + last * seconds_per_frame,
        )
        for word, (first, last) in sorted(spans.items())
    ]


def check_timed(voice: Voice) -> None:
    """Raise the StackError `timed_stream` would, before any work."""
    _duration_parts(voice)


def _duration_parts(voice: Voice) -> tuple[StreamablePipeline, Upsampler]:
    """The stack's leading pipeline and its Upsampler, or a StackError saying why there are none."""
    head = voice.stack.stack[0] if voice.stack.stack else None
    upsampler = _find(head, Upsampler) if isinstance(head, StreamablePipeline) else None
    if head is None or upsampler is None:
        raise StackError(
            f"word timestamps need a duration voice (a stack that starts with a StreamablePipeline holding "
            f"an Upsampler); stack '{voice.stack_name}' of {voice.addon.name} has none"
        )
    assert isinstance(head, StreamablePipeline)
    return head, upsampler


def _find(block: Block, kind: type[Upsampler]) -> Upsampler | None:
    if isinstance(block, kind):
        return block
    return next((found for child in block.children() if (found := _find(child, kind))), None)


__all__ = ["WordTime", "check_timed", "timed_stream", "word_times"]
