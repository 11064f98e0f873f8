"""Wyoming, the protocol of Home Assistant's voice pipeline, over the same engine as the HTTP API.

    tts-neuron serve --addon addons/fastspeech-en --wyoming tcp://127.0.0.1:10200

`describe` is answered with the voices; `synthesize` speaks a whole text; `synthesize-start`, `-chunk`
and `-stop` take text in pieces (not on word boundaries: an LLM's tokens) and speak each sentence as soon
as the next one has begun, then the rest at `synthesize-stop`. Each spoken text is `audio-start`, its
`audio-chunk`s as they are ready, and `audio-stop`; bad input is an `error` event, never a dropped
connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from tts_neuron.frontend.sentences import split_sentences
from tts_neuron.server.encoding import pcm16
from tts_neuron.server.engine import Busy, Engine, SpeechCall

SENTENCE_ENDS = (".", "!", "?", "…")
ATTRIBUTION = Attribution(name="tts_neuron", url="https://github.com/")


class WyomingHandler(AsyncEventHandler):
    """One client connection."""

    def __init__(self, engine: Engine, *args: Any) -> None:
        super().__init__(*args)
        self.engine = engine
        self.streaming: str | None = None
        self.pending = ""

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info().event())
        elif SynthesizeStart.is_type(event.type):
            start = SynthesizeStart.from_event(event)
            self.streaming = await self.voice(start.voice.name if start.voice else None)
            self.pending = ""
        elif SynthesizeChunk.is_type(event.type):
            if self.streaming is not None:
                self.pending += SynthesizeChunk.from_event(event).text
                await self.speak_complete_sentences(self.streaming)
        elif SynthesizeStop.is_type(event.type):
            if self.streaming is not None:
                if self.pending.strip():
                    await self.speak(self.streaming, self.pending)
                self.streaming, self.pending = None, ""
                await self.write_event(SynthesizeStopped().event())
        elif Synthesize.is_type(event.type) and self.streaming is None:
            # (inside a stream, `synthesize` repeats the whole text for servers that do not stream)
            request = Synthesize.from_event(event)
            voice = await self.voice(request.voice.name if request.voice else None)
            if voice is not None:
                await self.speak(voice, request.text)
        return True

    def info(self) -> Info:
        voices = [
            TtsVoice(
                name=name,
                description=f"{name} ({info['stack']} stack on {info['target']})",
                attribution=ATTRIBUTION,
                installed=True,
                version=None,
                languages=[info["language"]],
            )
            for name, info in self.engine.voice_info().items()
        ]
        program = TtsProgram(
            name="tts_neuron",
            description="streaming text to speech",
            attribution=ATTRIBUTION,
            installed=True,
            version=None,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    async def voice(self, name: str | None) -> str | None:
        """The voice asked for (the first one when none is named), or None after an error event."""
        voices = self.engine.voice_info()
        if not self.engine.is_ready():
            await self.error("the voices are still loading", "not_ready")
            return None
        if name is None:
            return next(iter(voices))
        if name not in voices:
            await self.error(
                f"unknown voice '{name}'; this server has {', '.join(sorted(voices))}", "voice_not_found"
            )
            return None
        return name

    async def speak_complete_sentences(self, voice: str) -> None:
        """Speak every sentence of the pending text that another has followed, or that ends the text with
        its punctuation and a space; keep the rest for the next chunk."""
        sentences = list(split_sentences(self.pending))
        complete = sentences[:-1]
        if sentences and self.pending[-1:].isspace() and sentences[-1].endswith(SENTENCE_ENDS):
            complete = sentences
        if not complete:
            return
        self.pending = "" if complete == sentences else sentences[-1]
        await self.speak(voice, " ".join(complete))

    async def speak(self, voice: str, text: str) -> None:
        if len(text) > self.engine.limits.max_chars:
            await self.error(
                f"text is {len(text)} characters; the limit is {self.engine.limits.max_chars}",
                "input_too_long",
            )
            return
        rate, started = self.engine.voice_info()[voice]["sample_rate"], False
        try:
            async with self.engine.admit(voice):
                stream = self.engine.start(SpeechCall(voice, text))
                try:
                    async for chunk in stream.chunks():
                        if not started:
                            await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
                            started = True
                        await self.write_event(
                            AudioChunk(rate=rate, width=2, channels=1, audio=pcm16(chunk)).event()
                        )
                finally:
                    stream.cancel()
        except Busy as err:
            await self.error(str(err), "server_busy")
            return
        except Exception as err:  # noqa: BLE001 - bad text or a failed voice is an error event for this client
            await self.error(str(err), type(err).__name__)
        if started:
            await self.write_event(AudioStop().event())

    async def error(self, text: str, code: str) -> None:
        await self.write_event(Error(text=text, code=code).event())


async def run_wyoming(engine: Engine, uri: str) -> None:
    """Serve Wyoming on `uri` (tcp://HOST:PORT) until cancelled.

    `start`, not the package's `run`: `run` takes over SIGTERM for itself (and leaves it at the default
    action after), so uvicorn never heard it and the process kept running; here the server's own signal
    handling stops both, and cancelling this task closes the Wyoming side."""
    server = AsyncServer.from_uri(uri)
    await server.start(lambda reader, writer: WyomingHandler(engine, reader, writer))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def check_uri(uri: str) -> None:
    """Refuse anything but tcp://HOST:PORT before the server starts."""
    scheme, _, rest = uri.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not host or not port.isdigit():
        raise ValueError(f"--wyoming takes tcp://HOST:PORT, got {uri!r}")


__all__ = ["WyomingHandler", "check_uri", "run_wyoming"]
