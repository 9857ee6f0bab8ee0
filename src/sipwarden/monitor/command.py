"""``sipwarden monitor``: configuration in, analysis of the sources, report out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TextIO

from sipwarden.alerts.records import to_json_line
from sipwarden.config import Config
from sipwarden.detect.registry import build_engine
from sipwarden.detection_config import ban_settings, detection_settings
from sipwarden.enforce.setup import build_ban_manager
from sipwarden.errors import StoreError
from sipwarden.store.sqlite import SqliteStore

from .live import analyse_hep, analyse_interface
from .run import MonitorRun, analyse_pcaps
from .sources import SourceOptions

__all__ = ["run_monitor", "source_options"]

log = logging.getLogger("sipwarden.monitor")


def source_options(config: Config) -> SourceOptions:
    return SourceOptions(
        ports=frozenset(config.sip.ports),
        sniff_any_port=config.monitor.sniff_any_port,
        limits=config.parser.limits(),
    )


def run_monitor(
    *,
    pcaps: Sequence[str],
    interface: str | None,
    hep: str | None,
    duration: float | None,
    config: Config,
    json_lines: bool,
    out: TextIO,
) -> int:
    """Analyse the captures, then the live source if any; exit code 1 when a capture was damaged."""
    store = _open_store(config)
    engine = build_engine(detection_settings(config.detect), bans=ban_settings(config.bans))
    run = MonitorRun(engine=engine, json_out=out if json_lines else None, store=store)
    options = source_options(config)
    try:
        if pcaps:
            run.ban_manager = build_ban_manager(config, store=store, enforcing=False)
            analyse_pcaps(pcaps, run, options)
        if interface is not None or hep is not None:
            _analyse_live(run, config, interface=interface, hep=hep, duration=duration)
    finally:
        if store is not None:
            _close_store(store)
    sources = [*pcaps, *(s for s in (interface, hep) if s is not None)]
    if not json_lines:
        _write_report(run, sources, out)
    else:
        for damage in run.damaged:
            out.write(to_json_line({"kind": "capture_error", "detail": damage}) + "\n")
    return 1 if run.damaged else 0


def _open_store(config: Config) -> SqliteStore | None:
    """The store, or ``None`` (reported) when it cannot be opened: a corrupt or locked
    store must not stop the analysis, whose results still reach the output."""
    if not config.store.path:
        return None
    try:
        return SqliteStore(config.store.path, busy_timeout=config.store.busy_timeout)
    except StoreError as error:
        log.error("%s; running without a store: events and bans are not kept", error)  # noqa: TRY400
        return None


def _close_store(store: SqliteStore) -> None:
    try:
        store.close()
    except StoreError as error:
        log.error("%s; %d records were not saved", error, store.dropped)  # noqa: TRY400


def _analyse_live(
    run: MonitorRun,
    config: Config,
    *,
    interface: str | None,
    hep: str | None,
    duration: float | None,
) -> None:
    """A live source: the bans decided are enforced (kernel backends, other nodes) as they come."""
    manager = build_ban_manager(config, store=run.store, enforcing=True)
    manager.start(time.time())
    manager.run_in_background()
    run.ban_manager = manager
    options = source_options(config)
    try:
        if interface is not None:
            analyse_interface(interface, run, options, duration=duration)
        if hep is not None:
            analyse_hep(hep, run, options, duration=duration)
    finally:
        manager.close()


def _write_report(run: MonitorRun, paths: Sequence[str], out: TextIO) -> None:
    """The human summary: totals, damaged captures, then the top offenders."""
    out.write(
        f"{run.messages} SIP messages from {', '.join(paths)}: {run.malformed} malformed, "
        f"{run.events} security events, {run.bans} bans decided\n"
    )
    for damage in run.damaged:
        out.write(f"damaged capture (analysed up to the damage): {damage}\n")
    out.write("\n")
    run.report.write(out)
