"""Benign traffic recorded through real peers raises nothing.

Registrations with digest auth, re-registrations, OPTIONS keep-alives,
authenticated calls and exactly one mistyped password, recorded on loopback
through a real Kamailio and SIPp (tests/peers), then replayed through the
monitor with every detector: a security product that cries wolf on an
office's ordinary day is switched off by its users.
"""

from __future__ import annotations

from pathlib import Path

from peers import BENIGN_MIX, record_benign_traffic
from sipwarden.detect.registry import build_engine
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.message import Response


def test_benign_office_traffic_raises_no_event(tmp_path: Path) -> None:
    capture = record_benign_traffic(tmp_path)
    engine = build_engine()
    observations = list(observations_from_pcap(capture))
    assert len(observations) >= sum(BENIGN_MIX.values())
    events = [event for obs in observations for event in engine.inspect(obs).events]
    assert events == [], [f"{e.rule}: {e.summary}" for e in events]
    # The mistyped password was seen (one 403) and still raised nothing.
    statuses = [o.message.status for o in observations if isinstance(o.message, Response)]
    assert statuses.count(403) == 1
