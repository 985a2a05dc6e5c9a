"""The parent of `--workers N`: start N nodes on one port, restart the fallen, drain on stop."""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from broadcaster.node import logs
from broadcaster.node.ports import ListenError
from broadcaster.node.process.app import Part
from broadcaster.node.process.server import serve
from broadcaster.node.runloop import run
from broadcaster.node.settings import NodeSettings
from broadcaster.node.workers.slot import WorkerSlot

log = logging.getLogger(__name__)


def supervise(settings: NodeSettings, parts: Sequence[Part] = ()) -> None:
    """Run `settings.workers` nodes (with `parts`) on one port until SIGTERM or SIGINT,
    then drain them all.

    A worker that ends once it listened is started again. One that ends before (a port
    taken by another program, Redis refusing its password...) would fail again: then all
    stop, and the exit status is 1 with one line saying why.
    """
    runtime = Path(tempfile.mkdtemp(prefix="broadcaster-workers-"))
    slots = tuple(str(runtime / f"{i}.sock") for i in range(settings.workers))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    context = mp.get_context("spawn")

    # Each worker says once that it listens, or why it cannot, through a pipe of its own
    # (no semaphore: no resource tracker process).
    listening: dict[int, Connection] = {}

    def start(index: int) -> BaseProcess:
        if index in listening:
            listening[index].close()
        listening[index], says = context.Pipe(duplex=False)
        slot = WorkerSlot(index, slots)
        worker = context.Process(
            target=_work, args=(settings, slot, says, tuple(parts)), name=f"worker-{index}"
        )
        worker.start()
        says.close()  # the worker's end: once it is gone, a silent pipe reads as EOF
        return worker

    log.info("starting %d workers on port %d", settings.workers, settings.port)
    workers = [start(i) for i in range(settings.workers)]
    failed: str | None = None
    try:
        while not stop.is_set():
            ended = multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.5)
            for index, worker in enumerate(workers):
                if worker.sentinel not in ended or stop.is_set():
                    continue
                worker.join()
                said = _said(listening[index])
                if said is not True:
                    log.debug("worker %d could not start (exit code %s)", index, worker.exitcode)
                    failed = said or f"worker {index} could not start; see its log lines above"
                    stop.set()
                    break
                log.warning(
                    "worker %d ended (exit code %s); starting it again", index, worker.exitcode
                )
                workers[index] = start(index)
    finally:
        _drain(workers, settings.shutdown_timeout)
        shutil.rmtree(runtime, ignore_errors=True)
    log.info("all workers stopped")
    if failed is not None:
        sys.exit(f"broadcaster: {failed}")


def _said(pipe: Connection) -> bool | str:
    """True if the worker listened, else why it could not ("" if it did not say)."""
    try:
        said = pipe.recv() if pipe.poll() else ""
    except EOFError:
        return ""
    return said if isinstance(said, bool | str) else ""


def _drain(workers: list[BaseProcess], bound: float) -> None:
    """SIGTERM every worker (each drains within `bound`), then kill what is left after it."""
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + bound + 1
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.is_alive():
            log.error("%s did not stop within the shutdown bound; killing it", worker.name)
            worker.kill()
            worker.join()


def _work(
    settings: NodeSettings, slot: WorkerSlot, listening: Connection, parts: tuple[Part, ...]
) -> None:
    """One worker process: a full node named `<node id>/<index>`."""
    mine = settings.model_copy(update={"node_id": f"{settings.node_id}/{slot.index}"})
    logs.configure(mine)
    try:
        run(serve(mine, slot, lambda: listening.send(True), parts))
    except ListenError as exc:
        listening.send(str(exc))  # the parent says it, once for all workers
        sys.exit(1)
