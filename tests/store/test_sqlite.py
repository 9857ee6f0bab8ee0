"""The embedded SQLite store: round trip, batching, persistence, and clear errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipwarden.engine.contract import BanDecision, EventKind, Evidence, SecurityEvent, Severity
from sipwarden.errors import StoreError
from sipwarden.store.sqlite import SqliteStore


def event(source: str, ts: float, rule: str = "cracking.failures_per_source") -> SecurityEvent:
    return SecurityEvent(
        time=ts,
        kind=EventKind.CRACKING,
        severity=Severity.HIGH,
        source=source,
        rule=rule,
        summary=f"{source} failed",
        account="100",
        evidence=Evidence(messages=("REGISTER sip:pbx",), counts={"failures": 10}, threshold=10),
    )


def test_events_and_bans_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with SqliteStore(path) as store:
        store.add_events([event("198.51.100.1", 1.0), event("198.51.100.2", 2.0)])
        store.add_bans(
            [
                BanDecision(
                    time=1.0,
                    source="198.51.100.1",
                    duration=600.0,
                    rule="r",
                    reason="why",
                    returnable=True,
                )
            ]
        )
    with SqliteStore(path) as reopened:
        records = reopened.events()
        assert [r["source"] for r in records] == ["198.51.100.1", "198.51.100.2"]
        assert records[0]["evidence"]["counts"] == {"failures": 10}
        assert reopened.events(source="198.51.100.2")[0]["account"] == "100"
        assert [b["source"] for b in reopened.bans(active_at=100.0)] == ["198.51.100.1"]
        assert reopened.bans(active_at=700.0) == []


def test_writes_are_batched_until_the_batch_fills(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path, batch_size=3)
    store.add_events([event("198.51.100.1", 1.0), event("198.51.100.1", 2.0)])
    count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count == 0  # still buffered
    store.add_events([event("198.51.100.1", 3.0)])
    count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count == 3
    store.close()


def test_a_corrupt_store_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open the store .*store\.sqlite3"):
        SqliteStore(path)


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def test_a_locked_store_is_reported_not_fatal_to_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    store._db.execute("PRAGMA busy_timeout = 50")
    store.add_events([event("198.51.100.1", 1.0)])
    with pytest.raises(StoreError, match="cannot write"):
        store.flush()
    blocker.rollback()
    store.flush()  # nothing was lost: the buffer is kept until a write succeeds
    assert len(store.events()) == 1
    blocker.close()
    store.close()
