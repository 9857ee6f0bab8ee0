"""Helpers every detector shares: evidence lines and safe access to attacker-written fields."""

from __future__ import annotations

from datetime import UTC, datetime

from sipwarden.engine.contract import Observation
from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.message import Request, Response

__all__ = ["MAX_EVIDENCE_MESSAGES", "describe", "iso_time", "safe_user_agent"]

# Evidence keeps a bounded sample of the triggering messages.
MAX_EVIDENCE_MESSAGES = 8


def iso_time(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (the JSON ``time`` format)."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_user_agent(obs: Observation) -> str | None:
    message = obs.message
    if message is None:
        return None
    agent = message.headers.get("user-agent") or message.headers.get("server")
    return agent[:120] if agent else None


def describe(obs: Observation) -> str:
    """One line of evidence: time, transport source, start line, User-Agent.

    Everything the attacker wrote is cut to a bounded length and printed with
    ``repr``-style escaping by the log sinks, never interpreted.
    """
    message = obs.message
    where = f"{iso_time(obs.ts)} {obs.transport} {obs.src}:{obs.sport} -> {obs.dst}:{obs.dport}"
    if message is None:
        rule = obs.error.rule if obs.error is not None else "unparsable"
        return f"{where} unparsable ({rule})"
    if isinstance(message, Request):
        start = f"{message.method[:32]} {message.uri[:120]}"
    elif isinstance(message, Response):
        start = f"{message.status} {message.reason[:40]}"
    else:  # pragma: no cover - a Message is a Request or a Response
        start = "?"
    try:
        cseq = message.cseq
        seq = f" CSeq {cseq}" if cseq is not None else ""
    except RemoteProtocolError:
        seq = ""
    agent = safe_user_agent(obs)
    return f"{where} {start}{seq}" + (f" UA={agent!r}" if agent else "")
