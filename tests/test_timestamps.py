"""Word timestamps of both voices: the audio is `stream`'s, the words are the text's in order, each
inside its own sentence's audio and on its frame grid, given no later than its audio ends; the duration
voice's equal the sums of the frames its Upsampler repeats (exact), the attention voice's follow its
focus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tts_neuron
from tts_neuron.blocks.acoustic import Upsampler, durations_to_frames
from tts_neuron.errors import StackError

REPO = Path(__file__).resolve().parent.parent
TEXT = 'Hello there, Doctor Smith! It costs five dollars today. "Where" does the old road go?'
PLAIN = "Hello there, Doctor Smith! It costs five dollars today. Where does the old road go?"
WORDS = [
    "Hello",
    "there",
    "Doctor",
    "Smith",
    "It",
    "costs",
    "five",
    "dollars",
    "today",
    "Where",
    "does",
    "the",
    "old",
    "road",
    "go",
]


@pytest.fixture(scope="module")
def voice() -> tts_neuron.Voice:
    return tts_neuron.load(REPO / "addons" / "fastspeech-en")


@pytest.fixture(scope="module")
def tacotron() -> tts_neuron.Voice:
    return tts_neuron.load(REPO / "addons" / "tacotron-en")


def sentence_spans(voice: tts_neuron.Voice, text: str) -> list[tuple[float, float]]:
    """Each sentence's [start, end) in seconds of the utterance, from its own chunks and pause."""
    spans, made = [], 0.0
    for sentence in voice.sentences(text):
        samples = sum(len(chunk.data) for chunk in voice.sentence_chunks(sentence))
        samples += max(round(sentence.pause_after * voice.sample_rate), 0)
        spans.append((made, made + samples / voice.sample_rate))
        made = spans[-1][1]
    return spans


@pytest.mark.parametrize("name", ["voice", "tacotron"])
def test_timed_stream_gives_streams_audio_and_the_texts_words_in_their_sentences(
    name: str, request: pytest.FixtureRequest
) -> None:
    voice = request.getfixturevalue(name)
    parts = list(voice.timed_stream(PLAIN))
    audio = np.concatenate([chunk for chunk, _ in parts])
    assert np.array_equal(audio, np.concatenate(list(voice.stream(PLAIN))))
    words = [word for _, given in parts for word in given]
    assert [w.word for w in words] == WORDS
    frame = voice.addon.audio.hop_length / voice.sample_rate
    offsets = np.cumsum([0] + [len(chunk) for chunk, _ in parts]) / voice.sample_rate
    for index, (_, given) in enumerate(parts):  # a word is given no later than its audio ends
        assert all(offsets[index] <= word.end + 1e-9 for word in given)
    spans = sentence_spans(voice, PLAIN)
    assert spans[-1][1] == pytest.approx(len(audio) / voice.sample_rate)
    sentences = [words[:4], words[4:9], words[9:]]
    previous_end = 0.0
    for in_sentence, (start, end) in zip(sentences, spans, strict=True):
        assert -1e-9 <= in_sentence[0].start - start <= 0.3  # its first word starts it
        assert -1e-9 <= end - in_sentence[-1].end <= 0.3  # its last ends it, but for the final pause
        for word in in_sentence:
            assert previous_end - 1e-9 <= word.start < word.end <= end + 1e-9
            assert word.end - word.start >= frame
            for edge in (word.start - start, word.end - start):  # on the sentence's frame grid
                assert abs(edge / frame - round(edge / frame)) < 1e-6
            previous_end = word.end


def test_the_duration_voices_words_are_its_phonemes_frames(voice: tts_neuron.Voice) -> None:
    """Each word spans exactly the frames the Upsampler repeats its phonemes for, from the durations."""
    words = [word for _, given in voice.timed_stream(TEXT) for word in given]
    pipeline = voice.stack.stack[0]
    upsampler = pipeline.streamable_block.stack[0]  # type: ignore[attr-defined]
    assert isinstance(upsampler, Upsampler)
    frame = voice.addon.audio.hop_length / voice.sample_rate
    expected = []
    for sentence, (start, _) in zip(voice.sentences(TEXT), sentence_spans(voice, TEXT), strict=True):
        encoded = pipeline.sequence_block(voice.features(sentence))  # type: ignore[attr-defined]
        frames = durations_to_frames(
            encoded["log_durations"][0], upsampler.length_scale, upsampler.max_frames_per_phoneme
        ).tolist()
        ends = np.cumsum(frames)
        spoken = [
            i
            for i, p in enumerate(sentence.phonemes)
            if frames[i] and not p.startswith("_") and sentence.words[i] >= 0
        ]
        for word in sorted({sentence.words[i] for i in spoken}):
            mine = [i for i in spoken if sentence.words[i] == word]
            expected.append(
                (start + (ends[mine[0]] - frames[mine[0]]) * frame, start + ends[mine[-1]] * frame)
            )
    assert [w.word for w in words][9] == "Where"  # quotes are stripped
    assert np.allclose([(w.start, w.end) for w in words], expected, rtol=0, atol=1e-9)


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


def test_a_stack_without_a_block_placing_tokens_on_frames_is_refused(voice: tts_neuron.Voice) -> None:
    vocoder_only = tts_neuron.load(REPO / "addons" / "fastspeech-en", stack=[voice.addon.stacks["cpu"][-1]])
    with pytest.raises(StackError, match="word timestamps need a block that places tokens on frames"):
        next(vocoder_only.timed_stream("Hello."))
