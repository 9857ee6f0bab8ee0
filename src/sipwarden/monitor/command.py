"""``sipwarden monitor``: configuration in, analysis of the sources, report out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from sipwarden.alerts.records import to_json_line
from sipwarden.config import Config
from sipwarden.detect.registry import build_engine
from sipwarden.detection_config import ban_settings, detection_settings
from sipwarden.store.sqlite import SqliteStore

from .live import analyse_hep, analyse_interface
from .run import MonitorRun, analyse_pcaps
from .sources import SourceOptions

__all__ = ["run_monitor", "source_options"]


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
    store = SqliteStore(config.store.path) if config.store.path else None
    engine = build_engine(detection_settings(config.detect), bans=ban_settings(config.bans))
    run = MonitorRun(engine=engine, json_out=out if json_lines else None, store=store)
    options = source_options(config)
    try:
        if pcaps:
            analyse_pcaps(pcaps, run, options)
        if interface is not None:
            analyse_interface(interface, run, options, duration=duration)
        if hep is not None:
            analyse_hep(hep, run, options, duration=duration)
    finally:
        if store is not None:
            store.close()
    sources = [*pcaps, *(s for s in (interface, hep) if s is not None)]
    if not json_lines:
        _write_report(run, sources, out)
    else:
        for damage in run.damaged:
            out.write(to_json_line({"kind": "capture_error", "detail": damage}) + "\n")
    return 1 if run.damaged else 0


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
