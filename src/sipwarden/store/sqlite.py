"""The embedded default store: SQLite in WAL mode, written in batches.

Events and bans are appended to a buffer and written in one transaction per
:meth:`SqliteStore.flush` (the monitor flushes every ``batch_size`` records
and on exit), so a capture of a flood costs a few hundred transactions, not
one per event. A store that cannot be opened (corrupt, locked, read-only)
raises :class:`~sipwarden.errors.StoreError` naming the file and the cause.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sipwarden.alerts.records import ban_record, event_record
from sipwarden.engine.contract import BanDecision, SecurityEvent
from sipwarden.errors import StoreError

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    account TEXT,
    rule TEXT NOT NULL,
    summary TEXT NOT NULL,
    record TEXT NOT NULL            -- the full JSON record, as --json prints it
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
CREATE INDEX IF NOT EXISTS events_by_source ON events (source, ts);
CREATE TABLE IF NOT EXISTS bans (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    until REAL NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    returnable INTEGER NOT NULL,
    offence INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_by_source ON bans (source, until);
"""


class SqliteStore:
    """Events and bans in one SQLite file (``:memory:`` for tests)."""

    def __init__(self, path: str | Path, *, batch_size: int = 500) -> None:
        self.path = str(path)
        self.batch_size = batch_size
        self._events: list[tuple[Any, ...]] = []
        self._bans: list[tuple[Any, ...]] = []
        try:
            self._db = sqlite3.connect(self.path, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {self.path}: {error}") from error

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._db.commit()
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"the store {self.path} has schema version {row[0]}; "
                f"this sipwarden reads version {SCHEMA_VERSION}"
            )

    def add_events(self, events: Iterable[SecurityEvent]) -> None:
        for event in events:
            record = event_record(event)
            self._events.append(
                (
                    event.time,
                    event.kind.value,
                    event.severity.label,
                    event.source,
                    event.account,
                    event.rule,
                    event.summary,
                    json.dumps(record, ensure_ascii=True),
                )
            )
        self._maybe_flush()

    def add_bans(self, bans: Iterable[BanDecision]) -> None:
        for ban in bans:
            self._bans.append(
                (
                    ban.time,
                    ban.source,
                    ban.time + ban.duration,
                    ban.rule,
                    ban.reason,
                    int(ban.returnable),
                    ban.offence,
                    json.dumps(ban_record(ban), ensure_ascii=True),
                )
            )
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._events) + len(self._bans) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered in one transaction."""
        if not self._events and not self._bans:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT INTO events (ts, kind, severity, source, account, rule, summary,"
                    " record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    self._events,
                )
                self._db.executemany(
                    "INSERT INTO bans (ts, source, until, rule, reason, returnable, offence,"
                    " record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    self._bans,
                )
        except sqlite3.Error as error:
            raise StoreError(f"cannot write to the store {self.path}: {error}") from error
        self._events.clear()
        self._bans.clear()

    def events(
        self, *, source: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored event records, oldest first, optionally filtered."""
        self.flush()
        query = "SELECT record FROM events"
        clauses: list[str] = []
        params: list[object] = []
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY ts, id LIMIT ?"
        params.append(limit)
        return [json.loads(row[0]) for row in self._db.execute(query, params)]

    def bans(self, *, active_at: float | None = None) -> list[dict[str, Any]]:
        self.flush()
        if active_at is None:
            rows = self._db.execute("SELECT record FROM bans ORDER BY ts, id")
        else:
            rows = self._db.execute(
                "SELECT record FROM bans WHERE until > ? ORDER BY ts, id", (active_at,)
            )
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
