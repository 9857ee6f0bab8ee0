"""``sipwarden monitor``: configuration in, analysis of the sources, report out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from sipwarden.alerts.records import to_json_line
from sipwarden.config import Config
from sipwarden.detect.registry import build_engine
from sipwarden.store.sqlite import SqliteStore

from .run import MonitorRun, analyse_pcaps
from .sources import SourceOptions

__all__ = ["monitor_pcaps", "source_options"]


def source_options(config: Config) -> SourceOptions:
    return SourceOptions(
        ports=frozenset(config.sip.ports),
        sniff_any_port=config.monitor.sniff_any_port,
        limits=config.parser.limits(),
    )


def monitor_pcaps(paths: Sequence[str], *, config: Config, json_lines: bool, out: TextIO) -> int:
    """Analyse the captures; exit code 1 when one was damaged, else 0."""
    store = SqliteStore(config.store.path) if config.store.path else None
    run = MonitorRun(engine=build_engine(), json_out=out if json_lines else None, store=store)
    try:
        analyse_pcaps(paths, run, source_options(config))
    finally:
        if store is not None:
            store.close()
    if not json_lines:
        _write_report(run, paths, out)
    else:
        for damage in run.damaged:
            out.write(to_json_line({"kind": "capture_error", "detail": damage}) + "\n")
    return 1 if run.damaged else 0


def _write_report(run: MonitorRun, paths: Sequence[str], out: TextIO) -> None:
    out.write(
        f"{run.messages} SIP messages in {len(paths)} capture(s): {run.malformed} malformed, "
        f"{run.events} security events, {run.bans} bans decided\n"
    )
    for damage in run.damaged:
        out.write(f"damaged capture (analysed up to the damage): {damage}\n")
    out.write("\n")
    run.report.write(out)
