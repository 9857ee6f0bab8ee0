"""The embedded SQLite store: round trip, batching, persistence, and clear errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipwarden.enforce.ban import Ban
from sipwarden.engine.contract import EventKind, Evidence, SecurityEvent, Severity
from sipwarden.errors import StoreError
from sipwarden.store.sqlite import SCHEMA_VERSION, SqliteStore


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


def ban(source: str, *, since: float, until: float, reason: str = "why") -> Ban:
    return Ban(source=source, since=since, until=until, rule="r", reason=reason, returnable=True)


def test_events_and_bans_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with SqliteStore(path) as store:
        store.add_events([event("198.51.100.1", 1.0), event("198.51.100.2", 2.0)])
        store.save_ban(ban("198.51.100.1", since=1.0, until=601.0))
    with SqliteStore(path) as reopened:
        records = reopened.events()
        assert [r["source"] for r in records] == ["198.51.100.1", "198.51.100.2"]
        assert records[0]["evidence"]["counts"] == {"failures": 10}
        assert reopened.events(source="198.51.100.2")[0]["account"] == "100"
        assert [b.source for b in reopened.active_bans(100.0)] == ["198.51.100.1"]
        assert reopened.active_bans(700.0) == []


def test_extensions_merge_and_lifts_end_a_ban_but_keep_its_history(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.sqlite3") as store:
        store.save_ban(ban("198.51.100.1", since=1.0, until=601.0))
        store.save_ban(ban("198.51.100.1", since=50.0, until=3650.0, reason="again"))
        store.save_ban(ban("203.0.113.0/24", since=2.0, until=602.0))
        (merged,) = [b for b in store.active_bans(100.0) if b.source == "198.51.100.1"]
        assert (merged.since, merged.until, merged.reason) == (1.0, 3650.0, "again")
        store.lift_ban("198.51.100.1", 200.0)
        assert [b.source for b in store.active_bans(300.0)] == ["203.0.113.0/24"]
        history = store.ban_history(source="198.51.100.1")
        assert [record["lifted"] for record in history] == [200.0, 200.0]
        assert store.ban_history()[0]["source"] == "198.51.100.1"  # newest first


def test_changes_by_other_connections_are_seen_after_a_mark(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with SqliteStore(path) as mine, SqliteStore(path) as theirs:
        marks = mine.change_marks()
        theirs.save_ban(ban("198.51.100.9", since=10.0, until=70.0))
        theirs.flush()
        theirs.lift_ban("198.51.100.8", 11.0)
        bans, lifts, marks = mine.changes_since(marks, 20.0)
        assert [b.source for b in bans] == ["198.51.100.9"]
        assert lifts == [(11.0, "198.51.100.8")]
        assert mine.changes_since(marks, 20.0)[:2] == ([], [])


def test_a_version_1_store_is_migrated_and_its_old_records_stay_history(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE bans (id INTEGER PRIMARY KEY, ts REAL NOT NULL, source TEXT NOT NULL,
                until REAL NOT NULL, rule TEXT NOT NULL, reason TEXT NOT NULL,
                returnable INTEGER NOT NULL, offence INTEGER NOT NULL, record TEXT NOT NULL);
            INSERT INTO bans VALUES (1, 1.0, '198.51.100.1', 9e9, 'r', 'why', 1, 1,
                '{"time": "1970-01-01T00:00:01.000Z", "kind": "ban", "source": "198.51.100.1"}');
            """
        )
    with SqliteStore(path) as store:
        assert store.active_bans(2.0) == []  # a decision record is not a restorable ban
        assert store.ban_history()[0]["source"] == "198.51.100.1"
        store.save_ban(ban("198.51.100.2", since=1.0, until=100.0))
        assert [b.source for b in store.active_bans(2.0)] == ["198.51.100.2"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)


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


def test_processes_creating_the_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Gateway workers start together and open one new store file."""
    import multiprocessing  # noqa: PLC0415

    path = str(tmp_path / "store.sqlite3")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(8)
    workers = [context.Process(target=_open_together, args=(path, start)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * 8


def _open_together(path: str, start: object) -> None:
    # Each opens the store twice while the others write to it: a worker's store
    # connection, then its ban manager's reading what the others wrote.
    start.wait()  # type: ignore[attr-defined]
    for round_ in range(10):
        store = SqliteStore(path, batch_size=1)
        store.add_events([event(f"198.51.100.{round_}", 1000.0 + round_)])
        store.flush()
        SqliteStore(path).close()
        store.close()
