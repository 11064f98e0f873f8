"""Word timestamps: where each word's frames are in the audio. The block that places tokens on frames
fills the FRAME_TOKENS feature as it goes: a duration voice's Upsampler from the phonemes' frame counts
(exact by construction, and known before the sentence's first audio), an attention voice's decoder from
the focus of its attention step by step (a word ends where the focus moves on; known a little after its
audio starts, as the decoder runs ahead of the vocoder). A frame is `hop_length` samples of the audio.

    for audio, words in voice.timed_stream("Hello there."):
        ...  # words: those whose frames became known with this chunk
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tts_neuron.blocks.base import FRAME_TOKENS, Block
from tts_neuron.errors import StackError
from tts_neuron.frontend import Sentence

if TYPE_CHECKING:
    from tts_neuron.voice import Voice

_EDGE_PUNCTUATION = "\"'()[]{}.,;:!?…-–—"
_FRAMES_PER_TOKEN = 128
"""Room in the FRAME_TOKENS tensor: more than the Upsampler's 100 frames a phoneme and the attention
guards' 25 frames a token allow."""


@dataclass(frozen=True)
class WordTime:
    """One spoken word and where it is in the utterance's audio, in seconds from its start."""

    word: str
    start: float
    end: float


def timed_stream(
    voice: Voice, text: str, speed: float = 1.0, **settings: Any
) -> Iterator[tuple[np.ndarray, list[WordTime]]]:
    """What `voice.stream` yields, each chunk with the words whose frames became known by then (a word
    once, in order; the rest of a sentence's words with its last chunk)."""
    from tts_neuron.voice import ListenerClock  # voice imports this module

    check_timed(voice)
    call = voice.call_settings(settings)
    clock = ListenerClock(voice.sample_rate, voice.addon.audio.hop_length)
    seconds_per_frame = voice.addon.audio.hop_length / voice.sample_rate
    made = 0  # samples of the utterance so far
    for index, sentence in enumerate(voice.sentences(text, speed, **settings)):
        sentence_settings = call.sentence(index, clock.queued_frames())
        features = voice.features(sentence, voice.sentence_rate(sentence, speed), sentence_settings)
        placed = features[FRAME_TOKENS] = torch.full((len(sentence.tokens) * _FRAMES_PER_TOKEN + 256,), -1)
        offset, told = made / voice.sample_rate, 0
        for chunk in clock.made(voice.stack.stream(None, features)):
            audio = chunk.data.float().cpu().numpy()
            made += len(audio)
            words = word_times(sentence, placed, seconds_per_frame, offset, whole=chunk.final)
            yield audio, words[told:]
            told = len(words)
        pause = round(sentence.pause_after * voice.sample_rate)
        if pause > 0:
            made += pause
            yield np.zeros(pause, dtype=np.float32), []


def word_times(
    sentence: Sentence, frame_tokens: torch.Tensor, seconds_per_frame: float, offset: float, whole: bool
) -> list[WordTime]:
    """Each word's first and last frame among its phonemes' (pauses belong to no word), in seconds from
    the utterance's start, given the sentence starts at `offset`. `frame_tokens` [F] is each frame's
    token, -1 from the first frame not placed yet, N after the last; until the sentence is placed (or
    `whole`), a word is given only once a later word's frame follows it."""
    labels = sentence.text.split()
    spans: dict[int, list[int]] = {}
    for frame, token in enumerate(frame_tokens.tolist()):
        if token < 0 or token >= len(sentence.words):
            whole = whole or token >= 0
            break
        word = sentence.words[token]
        if word >= 0 and not sentence.phonemes[token].startswith("_"):
            spans.setdefault(word, [frame, frame + 1])[1] = frame + 1
    done = sorted(spans) if whole else sorted(spans)[:-1]  # the last word seen may go on
    return [
        WordTime(
            labels[word].strip(_EDGE_PUNCTUATION) if word < len(labels) else "",
            offset + spans[word][0] * seconds_per_frame,
            offset + spans[word][1] * seconds_per_frame,
        )
        for word in done
    ]


def check_timed(voice: Voice) -> None:
    """Raise a StackError, before any work, for a stack with no block that places tokens on frames."""
    if not any(_places_tokens(block) for block in voice.stack.stack):
        raise StackError(
            f"word timestamps need a block that places tokens on frames (an Upsampler or an "
            f"AttentionDecoder); stack '{voice.stack_name}' of {voice.addon.name} has none"
        )


def _places_tokens(block: Block) -> bool:
    return getattr(block, "places_tokens", False) or any(_places_tokens(child) for child in block.children())


__all__ = ["WordTime", "check_timed", "timed_stream", "word_times"]
