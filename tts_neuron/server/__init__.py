"""`tts-neuron serve`: an OpenAI-compatible streaming speech server over one device engine.

    tts-neuron serve --addon addons/fastspeech-en --addon addons/tacotron-en [--host 127.0.0.1] [--port 8000]

Needs the `serve` extra (FastAPI, uvicorn, prometheus-client, wyoming), which `make setup` installs.
"""

from __future__ import annotations

import math
from pathlib import Path

from tts_neuron.engine import Schedule
from tts_neuron.server.app import SpeechOptions, create_app
from tts_neuron.server.engine import Engine, Limits


def serve(
    addons: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    stack: str | None = None,
    target: str | None = None,
    limits: Limits | None = None,
    api_key: str | None = None,
    workers: int | None = None,
    wyoming: str | None = None,
    schedule: Schedule | None = None,
    options: SpeechOptions | None = None,
    threads: int = 1,
) -> None:
    """Serve until SIGTERM or SIGINT; voices load and warm up after the port opens (`/ready` says when).
    A shutdown stops taking requests, lets running streams finish up to the drain timeout, then exits."""
    import uvicorn

    limits = limits or Limits()
    engine = Engine(addons, stack, target, limits, schedule=schedule, workers=workers, threads=threads)
    app = create_app(engine, api_key, wyoming=wyoming, options=options)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=math.ceil(limits.drain_timeout) + 1,
    )


__all__ = ["Engine", "Limits", "SpeechOptions", "create_app", "serve"]
