"""The monitor's main loop: captures in, engine in the middle, events out.

Every observation goes through the same :class:`~sipwarden.engine.engine.Engine`
the gateway runs in-line. Events go to the sinks the user asked for: JSON
lines on stdout, the embedded store, and a human summary of the top offenders
at the end; the bans the engine decides go to the ban manager, which keeps
them in the store and, on a live source, enforces them. A damaged capture is reported
with the packet number and everything before the damage is still analysed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from sipwarden.alerts.records import ban_record, event_record, to_json_line
from sipwarden.enforce.manager import BanManager
from sipwarden.engine.contract import Inspection, Observation
from sipwarden.engine.engine import Engine
from sipwarden.errors import CaptureError, StoreError
from sipwarden.store.sqlite import SqliteStore

from .report import OffenderReport
from .sources import SourceOptions, observations_from_pcap

__all__ = ["MonitorRun", "analyse_pcaps"]

log = logging.getLogger("sipwarden.monitor")

PROGRESS_EVERY = 0.5  # seconds of wall time between progress lines on a terminal


@dataclass(slots=True)
class MonitorRun:
    """Counters of one monitor run, and the sinks it writes to."""

    engine: Engine
    json_out: TextIO | None = None
    store: SqliteStore | None = None
    ban_manager: BanManager | None = None
    report: OffenderReport = field(default_factory=OffenderReport)
    messages: int = 0
    malformed: int = 0
    events: int = 0
    bans: int = 0
    damaged: list[str] = field(default_factory=list)
    _store_error: str = ""

    def handle(self, observation: Observation) -> Inspection:
        self.messages += 1
        inspection = self.engine.inspect(observation)
        # After the engine: the malformed detector runs the full check.
        if observation.message is None or observation.message.defects:
            self.malformed += 1
        if inspection.events:
            self._emit(inspection)
        return inspection

    def _emit(self, inspection: Inspection) -> None:
        self.events += len(inspection.events)
        self.bans += len(inspection.bans)
        for event in inspection.events:
            self.report.add(event)
            if self.json_out is not None:
                self.json_out.write(to_json_line(event_record(event)) + "\n")
        for ban in inspection.bans:
            self.report.add_ban(ban)
            if self.ban_manager is not None:
                self.ban_manager.apply(ban)
            if self.json_out is not None:
                self.json_out.write(to_json_line(ban_record(ban)) + "\n")
        if self.json_out is not None:
            self.json_out.flush()  # live sources: a SIEM sees the event now, not at exit
        if self.store is not None:
            try:
                self.store.add_events(inspection.events)
            except StoreError as error:
                self.store_failed(error)

    def store_failed(self, error: StoreError) -> None:
        """Report a store that cannot be written, once per distinct problem, and go on:
        the events still reach the JSON output and the report, and stay buffered."""
        if str(error) != self._store_error:
            self._store_error = str(error)
            log.error("events not saved yet (kept in memory, retried): %s", error)


class _Progress:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self, path: str, stream: TextIO) -> None:
        self.path = path
        self.stream = stream
        self.enabled = stream.isatty()
        self._next = time.monotonic() + PROGRESS_EVERY

    def tick(self, run: MonitorRun) -> None:
        if self.enabled and time.monotonic() >= self._next:
            self._next = time.monotonic() + PROGRESS_EVERY
            self.stream.write(f"\r{self.path}: {run.messages} messages, {run.events} events  ")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _analyse(run: MonitorRun, observations: Iterable[Observation], progress: _Progress) -> None:
    observation = None
    for count, observation in enumerate(observations):
        run.handle(observation)
        if count % 1024 == 0:
            progress.tick(run)
            if run.ban_manager is not None:
                # A capture's bans are kept on the capture's clock: they are
                # history, written to the store, never pushed into the kernel
                # (the caller builds a manager without kernel backends for files).
                run.ban_manager.tick(observation.ts)
    if run.ban_manager is not None and observation is not None:
        run.ban_manager.tick(observation.ts)


def analyse_pcaps(
    paths: Sequence[str], run: MonitorRun, options: SourceOptions, *, stderr: TextIO | None = None
) -> MonitorRun:
    """Replay every capture through the run's engine, in order, with the captures' own clock."""
    stderr = stderr or sys.stderr
    for path in paths:
        progress = _Progress(path, stderr)
        try:
            _analyse(run, observations_from_pcap(path, options), progress)
        except CaptureError as error:
            run.damaged.append(f"{path}: {error}")
        finally:
            progress.done()
    if run.store is not None:
        try:
            run.store.flush()
        except StoreError as error:
            run.store_failed(error)
    return run
