"""Worker processes: how many, and each kept on a core of its own."""

from __future__ import annotations

import multiprocessing
import os

from sipwarden.gateway.workers import pin_to_core, worker_count


def test_zero_workers_means_one_per_core() -> None:
    assert worker_count(0) == (os.cpu_count() or 1)
    assert worker_count(3) == 3


def test_workers_are_pinned_round_robin_over_the_allowed_cores() -> None:
    cores = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("fork")
    for index in range(len(cores) + 1):  # one more than the cores: wraps round
        queue = context.SimpleQueue()
        worker = context.Process(target=_pinned, args=(index, queue))
        worker.start()
        worker.join(timeout=10)
        assert worker.exitcode == 0
        assert queue.get() == {cores[index % len(cores)]}
    assert sorted(os.sched_getaffinity(0)) == cores  # the caller itself is untouched


def _pinned(index: int, queue: object) -> None:
    pin_to_core(index)
    queue.put(os.sched_getaffinity(0))  # type: ignore[attr-defined]
