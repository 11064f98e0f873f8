"""`tts-neuron serve`: an OpenAI-compatible streaming speech server over one device engine per process.

    tts-neuron serve --addon addons/fastspeech-en --addon addons/tacotron-en [--host 127.0.0.1] [--port 8000]

Needs the `serve` extra (FastAPI, uvicorn, prometheus-client, wyoming), which `make setup` installs.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from tts_neuron.engine import Schedule, usable_cores
from tts_neuron.errors import TTSNeuronError
from tts_neuron.server.app import SpeechOptions, create_app
from tts_neuron.server.engine import Engine, Limits
from tts_neuron.server.metrics import MULTIPROCESS_DIR


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
    processes: int = 1,
) -> None:
    """Serve until SIGTERM or SIGINT. A shutdown stops taking requests, lets running streams finish up to
    the drain timeout, then exits.

    One process: voices load and warm up after the port opens (`/ready` says when). `processes` > 1: that
    many server processes share the port, each with its own engine (its share of the cores as workers,
    unless `workers` says) and its own interpreter lock; each loads its voices before it takes a
    connection, and a supervisor (uvicorn's) passes signals on and replaces a process that dies. Their
    metrics meet in a temporary folder, so that `/metrics` sums them whichever process answers. Wyoming
    takes one process."""
    if processes > 1 and wyoming:
        raise ValueError("Wyoming takes one server process")
    limits = limits or Limits()
    graceful = math.ceil(limits.drain_timeout) + 1
    if processes == 1:
        engine = Engine(addons, stack, target, limits, schedule=schedule, workers=workers, threads=threads)
        app = create_app(engine, api_key, wyoming=wyoming, options=options)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful)
        return
    workers = workers or max(1, usable_cores() // processes)
    factory = functools.partial(
        process_app, addons, stack, target, limits, api_key, workers, schedule, options, threads, processes
    )
    config = uvicorn.Config(
        factory, host=host, port=port, factory=True, workers=processes, log_level="warning",
        timeout_graceful_shutdown=graceful,
    )  # fmt: skip
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # the supervisor's; we say why, once
    with tempfile.TemporaryDirectory(prefix="tts-neuron-") as shared:
        os.environ[MULTIPROCESS_DIR] = shared  # the processes, spawned, start with it
        supervisor = Supervisor(config, sockets=[config.bind_socket()])
        supervisor.run()
        failed = Path(shared, LOAD_ERROR)
        if failed.exists():
            raise TTSNeuronError(f"the voices did not load: {failed.read_text()}")


class Supervisor(Multiprocess):
    """uvicorn's supervisor, closing its copy of the listening socket at a shutdown signal (once the
    processes have closed theirs, new connections are refused while they drain, not left in the backlog),
    and taking the gauges of a process that died out of the sums when it starts another."""

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)

    def handle_int(self) -> None:
        self.stop_listening()
        super().handle_int()

    def handle_term(self) -> None:
        self.stop_listening()
        super().handle_term()

    def stop_listening(self) -> None:
        for listening in self.sockets:
            listening.close()


LOAD_ERROR = "load-error"
"""The file in the processes' shared folder where one that cannot load its voices says why."""
READY = "ready-{pid}"
"""The files there of the processes that have loaded their voices and take connections. One that dies
keeps its file, so that `/ready` stays 200 while the others serve and its replacement loads."""


def process_app(
    addons: list[str | Path],
    stack: str | None,
    target: str | None,
    limits: Limits,
    api_key: str | None,
    workers: int,
    schedule: Schedule | None,
    options: SpeechOptions | None,
    threads: int,
    processes: int,
) -> FastAPI:
    """One server process's app, its voices loaded and warm before it takes a connection (else it exits
    with uvicorn's start-up failure status, which stops the supervisor instead of restarting it). Its
    `/ready` waits for all `processes`: a client that came at the first one's would hold all its
    connections to it."""
    shared = Path(os.environ[MULTIPROCESS_DIR])
    engine = Engine(addons, stack, target, limits, schedule=schedule, workers=workers, threads=threads)
    if not engine.load():
        (shared / LOAD_ERROR).write_text(str(engine.load_error))
        sys.exit(STARTUP_FAILURE)
    ready = shared / READY.format(pid=os.getpid())
    ready.touch()
    atexit.register(ready.unlink, missing_ok=True)
    atexit.register(multiprocess.mark_process_dead, os.getpid())  # its gauges leave the sums

    def peers() -> str | None:
        loaded = len(list(shared.glob(READY.format(pid="*"))))
        return None if loaded >= processes else f"loading: {loaded} of {processes} processes ready"

    return create_app(engine, api_key, load=False, options=options, peers=peers)


__all__ = ["Engine", "Limits", "SpeechOptions", "create_app", "serve"]
