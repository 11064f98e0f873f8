"""Runs jobs in spawned worker processes: a job that raises, or kills its process (a compiler's SIGSEGV,
the OOM killer's SIGKILL), fails alone and by name, and the other jobs go on.

torch_neuronx.trace works through torch-xla's process-wide state, and since Neuron SDK 2.27 a trace can
kill its process (aws-neuron-sdk#1265); AWS's own parallel tracing uses processes. Workers are spawned
(not forked), so none inherits the parent's torch threads or state. Each worker runs `setup` once (e.g.
loading the addon) and then one job at a time, handed to it by the parent, so the parent always knows
which job a dead worker held.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from tts_neuron.engine import usable_cores

J = TypeVar("J")
R = TypeVar("R")


@dataclass
class Outcome(Generic[J, R]):
    job: J
    result: R | None = None
    error: str | None = None
    """One line: the job's exception, or how its worker died."""


def available_memory() -> int:
    """Bytes the host can give new processes (MemAvailable), or its free pages where /proc is absent."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def worker_count(requested: int | None, jobs: int, per_job_bytes: int) -> int:
    """Workers to start: the request (default: one per core), no more than the jobs, and no more than the
    host's available memory holds at `per_job_bytes` each; at least one."""
    if requested is None:
        requested = usable_cores()
    by_memory = available_memory() // max(per_job_bytes, 1)
    return max(1, min(requested, jobs, by_memory))


def _serve(setup: Callable[[], Any] | None, work: Callable[[J], R], conn: Any) -> None:
    """A worker's loop: run `setup`, then each job the parent sends until None, answering each in turn."""
    if setup is not None:
        setup()
    while (job := conn.recv()) is not None:
        try:
            answer: tuple[R | None, str | None] = (work(job), None)
        except Exception as err:  # noqa: BLE001 - reported as the job's failure, the worker goes on
            message = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
            answer = (None, f"{type(err).__name__}: {message}")
        conn.send(answer)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"its worker was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"its worker exited with code {exitcode}"


def run_jobs(
    jobs: Sequence[J],
    work: Callable[[J], R],
    workers: int,
    setup: Callable[[], Any] | None = None,
    desc: str = "jobs",
    progress: bool = True,
) -> list[Outcome[J, R]]:
    """Run `work(job)` for every job in `workers` spawned processes; one Outcome per job, in job order.

    `work` and `setup` must be importable module-level functions and jobs picklable (spawn pickles them).
    A worker that dies is replaced, and the job it held fails with how it died."""
    context = multiprocessing.get_context("spawn")
    pending = deque(range(len(jobs)))
    outcomes: dict[int, Outcome[J, R]] = {}
    processes: dict[Any, Any] = {}  # a worker's connection -> its process
    holding: dict[Any, int] = {}  # a worker's connection -> the index of the job it runs

    def start_worker() -> Any:
        # One pipe per worker, written by it alone: a worker killed mid-write takes no lock with it.
        conn, child = context.Pipe()
        process = context.Process(target=_serve, args=(setup, work, child), daemon=True)
        process.start()
        child.close()
        processes[conn] = process
        return conn

    def hand_out(conn: Any) -> None:
        if pending:
            holding[conn] = pending.popleft()
            conn.send(jobs[holding[conn]])
        else:
            conn.send(None)
            conn.close()

    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    try:
        for _ in range(min(workers, len(jobs))):
            hand_out(start_worker())
        while holding:
            for ready in multiprocessing.connection.wait(list(holding)):
                conn: Any = ready
                index = holding.pop(conn)
                try:
                    result, error = conn.recv()
                except (EOFError, OSError):  # the worker died: its pipe closed without an answer
                    conn.close()
                    dead = processes[conn]
                    dead.join()
                    outcomes[index] = Outcome(jobs[index], error=_death(dead.exitcode))
                    bar.update()
                    if pending:
                        hand_out(start_worker())
                    continue
                outcomes[index] = Outcome(jobs[index], result, error)
                bar.update()
                hand_out(conn)
    finally:
        bar.close()
        for process in processes.values():
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
    return [outcomes[i] for i in range(len(jobs))]
