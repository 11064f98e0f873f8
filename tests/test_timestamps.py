"""Word timestamps of the duration voice: the audio is `stream`'s, the words are in order, inside the
audio of their own sentence, and cover it but for its pauses (a phoneme's frames are exact: the words'
times are sums of the frames the Upsampler repeats, each `hop_length` samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tts_neuron
from tts_neuron.errors import StackError

REPO = Path(__file__).resolve().parent.parent
TEXT = 'Hello there, Doctor Smith! It costs five dollars today. "Where" does the old road go?'


@pytest.fixture(scope="module")
def voice() -> tts_neuron.Voice:
    return tts_neuron.load(REPO / "addons" / "fastspeech-en")


def test_timed_stream_gives_streams_audio_and_ordered_words_within_their_sentences(
    voice: tts_neuron.Voice,
) -> None:
    parts = list(voice.timed_stream(TEXT))
    audio = np.concatenate([chunk for chunk, _ in parts])
    assert np.array_equal(audio, np.concatenate(list(voice.stream(TEXT))))
    frame = voice.addon.audio.hop_length / voice.sample_rate
    # each sentence's span in the audio: from the chunk that carries its words to the next such chunk
    offsets = np.cumsum([0] + [len(chunk) for chunk, _ in parts]) / voice.sample_rate
    starts = [offsets[i] for i, (_, words) in enumerate(parts) if words]
    ends = [*starts[1:], offsets[-1]]
    sentences = [words for _, words in parts if words]
    assert len(sentences) == 3
    assert [w.word for w in sentences[0]] == ["Hello", "there", "Doctor", "Smith"]
    assert [w.word for w in sentences[2]] == ["Where", "does", "the", "old", "road", "go"]
    previous_end = 0.0
    for words, start, end in zip(sentences, starts, ends, strict=True):
        assert -1e-9 <= words[0].start - start <= 0.3  # its first word starts it, after any opening pause
        assert -1e-9 <= end - words[-1].end <= 0.3  # its last ends it, but for the final pause
        for word in words:
            assert previous_end <= word.start < word.end <= end + 1e-9
            assert word.end - word.start >= frame
            for edge in (word.start - start, word.end - start):  # on the sentence's frame grid
                assert abs(edge / frame - round(edge / frame)) < 1e-6
            previous_end = word.end


def test_each_chunk_carries_its_sentences_words_once(voice: tts_neuron.Voice) -> None:
    parts = list(voice.timed_stream("One. Two three. Four five six."))
    counts = [len(words) for _, words in parts if words]
    assert counts == [1, 2, 3]
    assert parts[0][1] and sum(1 for _, words in parts if words) == 3


def test_a_faster_speed_gives_earlier_words(voice: tts_neuron.Voice) -> None:
    normal = [w for _, words in voice.timed_stream(TEXT) for w in words]
    fast = [w for _, words in voice.timed_stream(TEXT, speed=2.0) for w in words]
    assert [w.word for w in fast] == [w.word for w in normal]
    assert fast[-1].end == pytest.approx(normal[-1].end / 2, rel=0.1)


def test_the_attention_voice_is_refused_with_a_reason() -> None:
    tacotron = tts_neuron.load(REPO / "addons" / "tacotron-en")
    with pytest.raises(StackError, match="word timestamps need a duration voice"):
        next(tacotron.timed_stream("Hello."))
