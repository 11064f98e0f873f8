"""`tts-neuron serve`: an OpenAI-compatible streaming speech server over a batching runner.

    tts-neuron serve --addon addons/fastspeech-en --addon addons/tacotron-en [--host 127.0.0.1] [--port 8000]

Needs the `serve` extra (FastAPI, uvicorn, prometheus-client, wyoming), which `make setup` installs.
"""

from __future__ import annotations

from pathlib import Path

from tts_neuron.server.app import create_app
from tts_neuron.server.engine import Engine, Limits


def serve(
    addons: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    stack: str | None = None,
    target: str | None = None,
    limits: Limits | None = None,
    batching: bool = True,
    api_key: str | None = None,
    batch_threads: int = 1,
    wyoming: str | None = None,
) -> None:
    """Serve until interrupted; voices load and warm up after the port opens (`/ready` says when)."""
    import uvicorn

    engine = Engine(addons, stack, target, limits, batching, batch_threads=batch_threads)
    app = create_app(engine, api_key, wyoming=wyoming)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


__all__ = ["Engine", "Limits", "create_app", "serve"]
