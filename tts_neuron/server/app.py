"""The HTTP API: OpenAI's `POST /v1/audio/speech`, streamed, plus models, voices, health and metrics.

The status line waits for the first audio chunk, so an error before any audio (bad text, a busy server)
is a proper status with OpenAI's error object; an error after audio has started ends the stream visibly:
an `error` event in SSE, an aborted chunked body otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, cast

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts_neuron.errors import StackError, TextError, TTSNeuronError
from tts_neuron.frontend import MAX_SPEECH_SECONDS, estimate_speech_seconds
from tts_neuron.server.captions import caption
from tts_neuron.server.encoding import (
    DEFAULT_FORMAT,
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    SAMPLE_RATES,
    Encoder,
    output_rate,
    sse_delta,
    sse_done,
    sse_event,
)
from tts_neuron.server.engine import Busy, Engine, SpeechCall, Stream, TimedStream
from tts_neuron.server.voices import alias_table, resolve

_LOG = logging.getLogger("tts_neuron.server")

MODEL_ALIASES = ("tts-neuron", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""Model ids that mean "whichever voice `voice` names", so that clients written for OpenAI work as they
are; a loaded voice's name is a model id too."""

MAX_BODY = 64 * 1024
"""Bytes of a request body: 4,096 characters of input are at most 16 KiB of UTF-8."""

OPEN_PATHS = ("/health", "/ready", "/", "/docs", "/openapi.json")
"""What answers without the API key: probes must not need secrets, and the page and the API's description
are static (their requests carry the key typed into them)."""


@dataclass(frozen=True)
class SpeechOptions:
    """What the speech endpoint adds to the engine's limits."""

    voice_aliases: Mapping[str, str] = field(default_factory=dict)
    """Names a request may use for a served voice, beside its own (`--voice-alias NAME=VOICE`)."""
    default_voice: str | None = None
    """The voice OpenAI's 13 names mean unless aliased (the first `--addon`; None: the first by name)."""
    max_speech_seconds: float | None = MAX_SPEECH_SECONDS
    """Speech one request may make (None: no limit); refused up front when the text's estimate passes
    it, and cut there otherwise."""


class VoiceId(BaseModel):
    """OpenAI's custom-voice object, `{"id": ...}`: the id is looked up as a voice name."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str


VOICE_SETTINGS = ("length_scale", "noise_scale", "noise_w")
"""Per-request settings a voice may take besides `speed` (Piper's names; `/v1/audio/voices` lists each
voice's with their ranges). `seed` is taken by every voice."""


class SpeechRequest(BaseModel):
    """OpenAI's CreateSpeechRequest, plus `sample_rate` (as speaches and LocalAI take it), the voice's own
    settings (`VOICE_SETTINGS`) and `seed` (a seeded request repeats exactly).

    `instructions` is accepted and ignored: our voices take no style prompt (OpenAI ignores it for tts-1
    too), and clients such as Home Assistant and the Agents SDK send it on every call, sometimes null."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    input: str
    voice: str | VoiceId
    instructions: str | None = Field(default=None, max_length=4096)
    response_format: str = Field(default=DEFAULT_FORMAT, json_schema_extra={"enum": list(RESPONSE_FORMATS)})
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    sample_rate: int | None = Field(default=None, json_schema_extra={"enum": [*SAMPLE_RATES, None]})
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    seed: int | None = None

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id

    @property
    def settings(self) -> dict[str, float | int]:
        """The per-call settings the request sets."""
        given = {key: getattr(self, key) for key in (*VOICE_SETTINGS, "seed")}
        return {key: value for key, value in given.items() if value is not None}


class CaptionedSpeechRequest(SpeechRequest):
    """Kokoro-FastAPI's captioned-speech request: the speech request, plus whether to stream the JSON
    objects (`stream`) and, accepted for its clients, `return_timestamps` (timestamps always come)."""

    stream: bool = True
    return_timestamps: bool = True


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its `$defs` put in place, so that it stands alone inside an OpenAPI
    document (whose `#/...` references start at the document's root)."""
    defs = schema.pop("$defs", {})

    def place(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return (
                place(defs[ref.rsplit("/", 1)[-1]])
                if ref.startswith("#/$defs/")
                else {key: place(value) for key, value in node.items()}
            )
        return [place(item) for item in node] if isinstance(node, list) else node

    return place(schema)  # type: ignore[no-any-return]


SPEECH_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inlined(SpeechRequest.model_json_schema())}},
    },
    "responses": {
        "200": {
            "description": "The audio, streamed: in the requested format, or OpenAI's server-sent events",
            "content": {media: {} for media in [*MEDIA_TYPES.values(), "text/event-stream"]},
        },
        "400": {"description": "OpenAI's error object: a bad request, voice, format or input"},
        "503": {"description": "OpenAI's error object: busy or still loading, with Retry-After"},
    },
}
"""The speech endpoint reads its body itself (for its size limit and OpenAI-shaped errors), so FastAPI
cannot see its schema: this describes it for `/openapi.json` and `/docs`."""

CAPTIONED_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inlined(CaptionedSpeechRequest.model_json_schema())}},
    },
    "responses": {
        "200": {
            "description": 'JSON objects, one a line: {"audio": base64, "audio_format", "timestamps": '
            '[{"word", "start_time", "end_time"}]}',
            "content": {"application/json": {}},
        },
        **{code: SPEECH_OPENAPI["responses"][code] for code in ("400", "503")},
    },
}


class ApiError(Exception):
    """An error answered as OpenAI's error object with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}},
            status_code=self.status,
            headers=self.headers,
        )


class ApiKeyMiddleware:
    """Refuses every request without `Authorization: Bearer KEY` but those of the probes (compared in
    constant time). A plain ASGI middleware: Starlette's BaseHTTPMiddleware would buffer streamed bodies
    and end their requests early."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refusal = ApiError(
                    401,
                    "missing or wrong API key (send Authorization: Bearer KEY)",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    engine: Engine,
    api_key: str | None = None,
    load: bool = True,
    wyoming: str | None = None,
    options: SpeechOptions | None = None,
    peers: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """The app over an engine. With `load`, the voices load and warm up in a thread when the app starts,
    and `/ready` answers 503 until they have (and until `peers`, the other server processes, say nothing
    is still loading); with `wyoming` (tcp://HOST:PORT), the same engine also speaks Wyoming there."""
    settings = options or SpeechOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load:
            threading.Thread(target=engine.load, daemon=True, name="load voices").start()
        task = None
        if wyoming:
            from tts_neuron.server.wyoming import run_wyoming

            task = asyncio.create_task(run_wyoming(engine, wyoming))
        yield
        if task:
            task.cancel()
        await engine.drain()  # uvicorn stopped taking requests; the running streams finish first
        engine.close()

    app = FastAPI(title="tts_neuron", redoc_url=None, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(404)
    async def not_found(request: Request, err: Exception) -> JSONResponse:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    @app.exception_handler(405)
    async def not_allowed(request: Request, err: Exception) -> JSONResponse:
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}").response()

    if api_key:
        app.add_middleware(ApiKeyMiddleware, key=api_key)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        waiting = peers()
        if engine.is_ready() and not waiting:
            return JSONResponse({"status": "ready", "voices": sorted(engine.voice_info())})
        status = "failed: " + engine.load_error if engine.load_error else waiting or "loading"
        return JSONResponse({"status": status}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = [*MODEL_ALIASES, *engine.voice_info()]
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "owned_by": "tts-neuron"} for i in ids],
        }

    @app.get("/v1/audio/models")
    async def audio_models() -> dict[str, Any]:
        """Open WebUI's model list: `{"models": [{"id"}]}`."""
        return {"models": [{"id": i} for i in [*MODEL_ALIASES, *engine.voice_info()]]}

    @app.get("/v1/audio/voices")
    async def voices() -> dict[str, Any]:
        """Open WebUI's (and Kokoro-FastAPI's) shape, `{"voices": [{"id", "name"}]}`: the served voices,
        then the names that alias them; `data` holds the served voices alone."""
        info = engine.voice_info()
        data = [{"id": name, "name": name, **about} for name, about in info.items()]
        table = alias_table(info, settings.voice_aliases, settings.default_voice)
        aliases = [{"id": name, "name": name, "alias_of": voice} for name, voice in table.items()]
        return {"voices": data + aliases, "data": data}

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("tts_neuron.server").joinpath("page.html").read_text("utf-8"))

    @app.post("/v1/audio/speech", openapi_extra=SPEECH_OPENAPI, response_class=Response)
    async def speech(request: Request) -> Response:
        status = 200
        try:
            response = await _speech(engine, settings, request)
        except ApiError as err:
            status = err.status
            response = err.response()
        engine.metrics.requests.labels(str(status)).inc()
        return response

    @app.post("/dev/captioned_speech", openapi_extra=CAPTIONED_OPENAPI, response_class=Response)
    async def captioned_speech(request: Request) -> Response:
        """Word timestamps with the audio, as Kokoro-FastAPI answers them (tts_neuron.server.captions)."""
        status = 200
        try:
            response = await _speech(engine, settings, request, captioned=True)
        except ApiError as err:
            status = err.status
            response = err.response()
        engine.metrics.requests.labels(str(status)).inc()
        return response

    return app


async def _read_request(
    request: Request, engine: Engine, schema: type[SpeechRequest] = SpeechRequest
) -> SpeechRequest:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise ApiError(413, f"request body over {MAX_BODY} bytes", code="body_too_large")
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for key in ("speed", *VOICE_SETTINGS):
        if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool):
            raw[key] = float(raw[key])  # JSON does not tell 1 from 1.0
    try:
        req = schema.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        param = str(first["loc"][0]) if first["loc"] else None  # `voice`, not `voice.VoiceId.id`
        if param == "voice":  # pydantic would name one branch of the union
            raise ApiError(400, 'voice must be a voice name or an object {"id": NAME}', param=param) from None
        raise ApiError(400, f"{where}: {first['msg']}", param=param) from None
    if req.response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format '{req.response_format}' is not supported; "
            f"use one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
            code="unsupported_response_format",
        )
    if req.sample_rate is not None:
        try:
            output_rate(req.response_format, 0, req.sample_rate)
        except ValueError as err:
            raise ApiError(400, str(err), param="sample_rate", code="unsupported_sample_rate") from None
    if len(req.input) > engine.limits.max_chars:
        raise ApiError(
            413,
            f"input is {len(req.input)} characters; the limit is {engine.limits.max_chars}",
            param="input",
            code="input_too_long",
        )
    if not req.input.strip():
        raise ApiError(400, "input is empty", param="input")
    return req


def _speaker_view(requested: str, voices: dict[str, dict[str, Any]]) -> str | None:
    """`VOICE:ID` as the served `VOICE:NAME` of that speaker id, and `VOICE:A+B` as itself for a voice that
    blends its speakers (Kokoro's packs); for a VOICE that has speakers but not this one, a 400 that says
    so (UnknownSpeakerError's message); None when VOICE is no multi-speaker voice."""
    base, _, speaker = requested.rpartition(":")
    speakers = voices.get(base, {}).get("speakers")
    if not base or not speakers:
        return None
    by_id = {str(sid): name for name, sid in speakers.items()}
    if speaker in by_id and f"{base}:{by_id[speaker]}" in voices:
        return f"{base}:{by_id[speaker]}"
    if voices[base].get("blends_speakers") and all(part in speakers for part in speaker.split("+")):
        return requested
    shown = ", ".join(list(speakers)[:20]) + (f" ... ({len(speakers)} in all)" if len(speakers) > 20 else "")
    raise ApiError(
        400,
        f"voice '{base}' has no speaker '{speaker}'; its speakers: {shown}",
        param="voice",
        code="unknown_speaker",
    )


async def _speech(
    engine: Engine, settings: SpeechOptions, request: Request, captioned: bool = False
) -> Response:
    req = await _read_request(request, engine, CaptionedSpeechRequest if captioned else SpeechRequest)
    if not engine.is_ready():
        raise ApiError(503, "the voices are still loading", code="not_ready", headers={"Retry-After": "5"})
    voices = engine.voice_info()
    name = resolve(req.voice_name, voices, settings.voice_aliases, settings.default_voice)
    if name is None:
        name = _speaker_view(req.voice_name, voices)
    if name is None:
        aliases = alias_table(voices, settings.voice_aliases, settings.default_voice)
        raise ApiError(
            400,
            f"unknown voice '{req.voice_name}'; this server has {', '.join(sorted(voices))}"
            + (f" and the aliases {', '.join(aliases)}" if aliases else ""),
            param="voice",
            code="voice_not_found",
        )
    if req.model not in MODEL_ALIASES and req.model not in (name, req.voice_name):
        raise ApiError(
            400,
            f"unknown model '{req.model}' for voice '{req.voice_name}'; use one of "
            f"{', '.join(MODEL_ALIASES)} or the voice's name",
            param="model",
            code="model_not_found",
        )
    served = name if name in voices else name.rpartition(":")[0]  # a blend is served by its voice
    voice = voices[served]
    if req.speed != 1 and not voice["takes_speed"]:
        raise ApiError(400, f"voice '{req.voice_name}' cannot change its speed", param="speed")
    _check_settings(req, voice.get("settings", {}))
    _check_speech_estimate(req, settings.max_speech_seconds)
    if captioned and not voice.get("timestamps"):
        raise ApiError(
            400,
            f"voice '{req.voice_name}' gives no word timestamps (its stack places no tokens on frames)",
            param="voice",
            code="no_timestamps",
        )

    session = Session(engine.admit(served))
    try:
        await session.open()
    except Busy as err:
        raise busy(err) from None
    encoder = None
    try:
        started = time.monotonic()
        call = SpeechCall(name, req.input, req.speed, captioned, req.settings)
        stream = session.stream = engine.start(call)
        chunks = stream.chunks()
        # opened while the engine makes the first chunk (FLAC's muxer takes 5 ms to open)
        encoder = Encoder(req.response_format, voice["sample_rate"], req.sample_rate)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            raise ApiError(400, "the input has nothing to speak", param="input") from None
        except (TextError, StackError, ValueError) as err:
            raise ApiError(400, str(err), param="input") from None
        except Busy as err:  # Ray's backpressure arrives with the first chunk
            raise busy(err) from None
        except TTSNeuronError as err:
            raise ApiError(500, f"synthesis failed: {err}", kind="server_error") from None
    except BaseException:
        if encoder is not None:
            encoder.close()
        await session.close()
        raise
    engine.metrics.first_audio.labels(served).observe(time.monotonic() - started)
    headers = {"X-Sample-Rate": str(encoder.rate), "X-Channels": "1", "X-Accel-Buffering": "no"}
    if req.response_format == "pcm":
        headers["X-Bit-Depth"] = "16"
    captions = cast(TimedStream, stream) if captioned else None
    rate = voice["sample_rate"]
    body = _body(engine, req, served, rate, settings, session, first, chunks, encoder, captions)
    media_type = "text/event-stream" if req.stream_format == "sse" else MEDIA_TYPES[req.response_format]
    return AudioResponse(
        session, body, media_type="application/json" if captions else media_type, headers=headers
    )


def _check_settings(req: SpeechRequest, takes: dict[str, dict[str, float]]) -> None:
    """A 400 naming the setting for one the voice does not take or a value out of its range."""
    for key, value in req.settings.items():
        if key == "seed":
            continue
        if key not in takes:
            offered = f"it takes {', '.join(takes)}" if takes else "it takes none but speed and seed"
            raise ApiError(400, f"voice '{req.voice_name}' takes no setting {key}; {offered}", param=key)
        low, high = takes[key]["min"], takes[key]["max"]
        if not low <= value <= high:
            raise ApiError(400, f"{key} must be from {low:g} to {high:g}, got {value!r}", param=key)


def _check_speech_estimate(req: SpeechRequest, limit: float | None) -> None:
    """Refuse, before any audio, a request whose text alone shows it would pass the speech limit."""
    if limit is None:
        return
    try:
        seconds = estimate_speech_seconds(req.input) / req.speed
    except TextError as err:
        raise ApiError(400, str(err), param="input") from None
    if seconds > limit:
        raise ApiError(
            400,
            f"this input would take about {seconds / 60:.3g} minutes of speech; the limit is "
            f"{limit / 60:.3g} minutes per request (split it, or ask for a faster speed)",
            param="input",
            code="speech_too_long",
        )


def busy(err: Busy) -> ApiError:
    return ApiError(
        503, str(err), code="server_busy", kind="server_error", headers={"Retry-After": str(err.retry_after)}
    )


class Session:
    """A request's stream slot and stream, closed exactly once however the request ends."""

    def __init__(self, admission: Any) -> None:
        self.admission, self.closed = admission, False
        self.stream: Stream | None = None

    async def open(self) -> None:
        await self.admission.__aenter__()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            self.stream.cancel()
        await self.admission.__aexit__(None, None, None)


class AudioResponse(StreamingResponse):
    """A streaming response that closes its session even when the client left before the body began."""

    def __init__(self, session: Session, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as err:  # noqa: BLE001 - the body is cut short; the log gets one line, not a traceback
            _LOG.warning("a stream failed after its audio had started: %s", err)
        finally:
            await self.session.close()


async def _body(
    engine: Engine,
    req: SpeechRequest,
    voice: str,
    sample_rate: int,
    settings: SpeechOptions,
    session: Session,
    first: Any,
    chunks: AsyncIterator[Any],
    encoder: Encoder,
    captions: TimedStream | None = None,
) -> AsyncIterator[bytes]:
    """The response body: each chunk encoded as it comes (`sample_rate` is the voice's), raw, as SSE, or
    with `captions` as captioned-speech JSON; the stream is cancelled and its slot freed however the body
    ends (done, failed, past the speech limit, or the client gone)."""
    metrics, sse = engine.metrics, req.stream_format == "sse"
    limit = settings.max_speech_seconds
    media = MEDIA_TYPES[req.response_format]
    whole = captions is not None and not getattr(req, "stream", True)  # one JSON object at the end
    kept: list[bytes] = []

    def framed(data: bytes, last: bool = False) -> bytes:
        """A piece of encoded audio as the response carries it (b"" for nothing to send yet)."""
        if captions is None:
            return (sse_delta(data) if sse else data) if data else b""
        if whole:
            kept.append(data)
            return caption(b"".join(kept), media, captions.taken()) if last else b""
        words = captions.taken() if data or last else []  # words wait for the audio that follows them
        return caption(data, media, words) if data or words else b""

    samples = 0
    playing_since = time.monotonic()
    last = playing_since
    finished = False
    try:
        chunk = first
        while True:
            now = time.monotonic()
            if samples and now > playing_since + samples / sample_rate:
                metrics.underruns.inc()
            if samples:
                metrics.chunk_gap.observe(now - last)
            last = now
            if limit is not None and samples + len(chunk) > limit * sample_rate:
                raise TextError(f"the speech passed the limit of {limit / 60:.3g} minutes per request")
            samples += len(chunk)
            metrics.audio_seconds.labels(voice).inc(len(chunk) / sample_rate)
            if piece := framed(encoder.push(chunk)):
                yield piece
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
        if piece := framed(encoder.finish(), last=True):
            yield piece
        if sse:
            yield sse_done(len(req.input), encoder.samples)
        finished = True
    except Exception as err:
        if not sse:
            raise  # the server aborts the chunked body: the client sees a truncated stream, not success
        error = {"message": str(err), "type": "server_error", "param": None, "code": type(err).__name__}
        yield sse_event({"type": "error", "error": error})
    finally:
        encoder.close()
        if not finished:
            metrics.cancelled.labels("error_or_disconnect").inc()
        await session.close()
