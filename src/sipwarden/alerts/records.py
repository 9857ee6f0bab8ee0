"""Security events and bans as JSON-ready records: the format of ``--json`` and of the store.

The JSON line of an event carries at least ``time`` (ISO 8601 UTC), ``kind``
(one of :class:`~sipwarden.engine.contract.EventKind`), ``severity``,
``source`` (the transport address), ``account`` (when known), ``rule`` and
``evidence``. Values that came from the wire are strings: a SIEM never has to
guess a type, and nothing the attacker wrote is interpreted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from sipwarden.engine.contract import BanDecision, SecurityEvent, iso_time

__all__ = ["ban_record", "event_record", "to_json_line"]


def _plain(value: object) -> object:
    """A JSON-safe copy: containers recursed, numbers kept, everything else as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return str(value)


def event_record(event: SecurityEvent) -> dict[str, object]:
    evidence = event.evidence
    return {
        "time": iso_time(event.time),
        "kind": event.kind.value,
        "severity": event.severity.label,
        "source": event.source,
        "source_port": event.source_port,
        "account": event.account,
        "rule": event.rule,
        "summary": event.summary,
        "evidence": {
            "messages": list(evidence.messages),
            "counts": _plain(evidence.counts),
            "threshold": evidence.threshold,
            "window": evidence.window,
        },
        "detail": _plain(event.detail),
    }


def ban_record(ban: BanDecision) -> dict[str, object]:
    return {
        "time": iso_time(ban.time),
        "kind": "ban",
        "source": ban.source,
        "duration": ban.duration,
        "until": iso_time(ban.time + ban.duration),
        "rule": ban.rule,
        "reason": ban.reason,
        "returnable": ban.returnable,
        "offence": ban.offence,
        "evidence": list(ban.evidence),
    }


def to_json_line(record: Mapping[str, object]) -> str:
    """One line of JSON; non-ASCII escaped so any log shipper takes it."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))
