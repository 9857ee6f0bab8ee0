"""Worker processes: one per core, sharing the listeners through SO_REUSEPORT.

The kernel spreads datagrams and connections over the workers by their
addresses, so one phone keeps talking to one worker. Nothing a call needs
lives in one worker only: routes, contacts and the PBX's hidden Vias travel
sealed in the messages (:mod:`.routing`), and bans reach every worker through
the store (and the kernel sets or Redis when configured) within a tick.

The supervisor forwards SIGTERM/SIGINT (stop) and SIGHUP (reload the
configuration) to every worker, and restarts a worker that dies (a signal or
a non-zero exit), at most :data:`MAX_RESTARTS` times a minute each.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

__all__ = ["MAX_RESTARTS", "pin_to_core", "supervise", "worker_count"]

log = logging.getLogger("sipwarden.gateway")

MAX_RESTARTS: Final = 5


def worker_count(configured: int) -> int:
    """The number of workers: as configured, one per core for 0.

    UDP, TCP and TLS listeners alike: a phone's connection stays with the
    worker that accepted it, and what the PBX sends for that phone reaches the
    same worker, because the worker wrote its own inside port into the
    Contact alias, Via and Record-Route the PBX uses (see :mod:`.command`).
    """
    return configured or os.cpu_count() or 1


def pin_to_core(index: int) -> None:
    """Keep worker ``index`` on one core of those the process may use (round robin).

    A worker that the scheduler moves between cores, or shares a core with
    another worker, starts each message with cold caches, and an interpreter
    walking a SIP message touches a lot of memory. Where affinity cannot be
    set (another OS, a restricted container), the kernel keeps choosing.
    """
    try:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[index % len(cores)]})
    except (AttributeError, OSError) as error:
        log.debug("worker %d not pinned to a core: %s", index, error)


def supervise(count: int, run_worker: Callable[[int], int]) -> int:
    """Run ``run_worker(index)`` in ``count`` child processes until told to stop."""
    children: dict[int, int] = {}
    restarts: dict[int, list[float]] = {index: [] for index in range(count)}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        children[_spawn(index, run_worker)] = index
    log.info("gateway supervisor: %d workers", count)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if index < 0 or stopping or status == 0:
            continue  # stopped, or ended cleanly (a --duration run): not restarted
        recent = [moment for moment in restarts[index] if moment > time.monotonic() - 60]
        if len(recent) >= MAX_RESTARTS:
            log.error("worker %d died %d times in a minute; not restarted", index, len(recent))
            continue
        log.error("worker %d ended (status %d); restarting it", index, status)
        restarts[index] = [*recent, time.monotonic()]
        children[_spawn(index, run_worker)] = index
    return 0


def _spawn(index: int, run_worker: Callable[[int], int]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: its own signal handlers are set by the worker loop
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        code = 1
        try:
            code = run_worker(index)
        finally:
            os._exit(code)
    return pid
