"""Word timestamps over HTTP, in Kokoro-FastAPI's captioned-speech convention (the most used one):

    POST /dev/captioned_speech   {the speech request, "stream": true, "return_timestamps": true}

answers `application/json`: one object per line, `{"audio": base64 of the requested format's bytes,
"audio_format": its content type, "timestamps": [{"word", "start_time", "end_time"}]}`, each word once,
with the audio by which it is known (a duration voice's words with its sentence's first audio, an
attention voice's as its decoder's focus moves past them, still ahead of their audio's end); with
`"stream": false`, one object for the whole utterance. Times are seconds from the start of the audio
(before any mp3 or AAC priming).
"""

from __future__ import annotations

import base64
import json
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from tts_neuron.timestamps import WordTime, check_timed
from tts_neuron.voice import Voice


class CaptionedVoice:
    """A voice as the device engine runs it (its `sample_rate` and `stream`) whose stream also collects
    its words' timestamps, for one request; they cross from the engine's thread in a queue."""

    def __init__(self, voice: Voice) -> None:
        check_timed(voice)  # a StackError for a stack that places no tokens on frames
        self.voice, self.sample_rate = voice, voice.sample_rate
        self._words: queue.SimpleQueue[WordTime] = queue.SimpleQueue()

    def stream(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        for audio, words in self.voice.timed_stream(text, speed):
            for word in words:  # put before their audio leaves, so they are there when it arrives
                self._words.put(word)
            yield audio

    def taken(self) -> list[dict[str, Any]]:
        """The words collected since the last call, in Kokoro's shape."""
        words = []
        while not self._words.empty():
            word = self._words.get_nowait()
            words.append({"word": word.word, "start_time": word.start, "end_time": word.end})
        return words


class CaptionedStream:
    """A device-engine stream of a CaptionedVoice: its chunks, and the words collected so far."""

    def __init__(self, stream: Any, voice: CaptionedVoice) -> None:
        self.stream, self.taken = stream, voice.taken

    def chunks(self) -> AsyncIterator[np.ndarray]:
        return self.stream.chunks()  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self.stream.cancel()


def caption(audio: bytes, media_type: str, timestamps: list[dict[str, Any]]) -> bytes:
    """One line of the captioned response."""
    payload = {"audio": base64.b64encode(audio).decode("ascii"), "audio_format": media_type}
    return json.dumps({**payload, "timestamps": timestamps}, separators=(",", ":")).encode() + b"\n"


__all__ = ["CaptionedStream", "CaptionedVoice", "caption"]
