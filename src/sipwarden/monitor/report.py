"""What the monitor tells a person: top offenders, what each did, when, and the evidence."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from sipwarden.engine.contract import BanDecision, SecurityEvent, Severity, iso_time

__all__ = ["OffenderReport"]

MAX_OFFENDERS = 100_000  # bounded like everything else
SHOWN = 10


@dataclass(slots=True)
class _Offender:
    source: str
    first: float
    last: float
    worst: Severity = Severity.INFO
    events: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    accounts: Counter[str] = field(default_factory=Counter)
    evidence: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    bans: list[BanDecision] = field(default_factory=list)


@dataclass(slots=True)
class OffenderReport:
    """Aggregates events per source for the human summary (bounded)."""

    offenders: dict[str, _Offender] = field(default_factory=dict)
    dropped: int = 0

    def add(self, event: SecurityEvent) -> None:
        offender = self.offenders.get(event.source)
        if offender is None:
            if len(self.offenders) >= MAX_OFFENDERS:
                self.dropped += 1
                return
            offender = self.offenders[event.source] = _Offender(
                event.source, event.time, event.time
            )
        offender.first = min(offender.first, event.time)
        offender.last = max(offender.last, event.time)
        offender.worst = max(offender.worst, event.severity)
        offender.events += 1
        if len(offender.rules) < 32 or event.rule in offender.rules:
            offender.rules[event.rule] += 1
        if event.account and (len(offender.accounts) < 32 or event.account in offender.accounts):
            offender.accounts[event.account] += 1
        if len(offender.summaries) < 8:
            offender.summaries.append(event.summary)
        for line in event.evidence.messages:
            if len(offender.evidence) >= 3:
                break
            offender.evidence.append(line)

    def add_ban(self, ban: BanDecision) -> None:
        offender = self.offenders.get(ban.source)
        if offender is not None and len(offender.bans) < 4:
            offender.bans.append(ban)

    def write(self, out: TextIO, *, shown: int = SHOWN) -> None:
        ranked = sorted(self.offenders.values(), key=lambda o: (-o.worst, -o.events, o.source))[
            :shown
        ]
        if not ranked:
            out.write("no security events\n")
            return
        out.write(f"top offenders ({len(self.offenders)} sources with events):\n")
        for offender in ranked:
            rules = ", ".join(f"{rule} x{n}" for rule, n in offender.rules.most_common(6))
            out.write(
                f"\n{offender.source}  [{offender.worst.label}]  {offender.events} events\n"
                f"  seen      {iso_time(offender.first)} .. {iso_time(offender.last)}\n"
                f"  rules     {rules}\n"
            )
            if offender.accounts:
                accounts = ", ".join(a for a, _ in offender.accounts.most_common(8))
                out.write(f"  accounts  {accounts}\n")
            for summary in offender.summaries[:4]:
                out.write(f"  - {summary}\n")
            for line in offender.evidence:
                out.write(f"    evidence: {line}\n")
            for ban in offender.bans:
                kind = "returnable" if ban.returnable else "unproven (possibly spoofed)"
                out.write(f"  ban       {ban.duration:.0f} s, {kind}, offence {ban.offence}\n")
