"""The embedded default store: SQLite in WAL mode, written in batches.

Events and bans are appended to a buffer and written in one transaction per
:meth:`SqliteStore.flush` (the monitor flushes every ``batch_size`` records
and on exit; the ban manager on every tick), so a capture of a flood costs a
few hundred transactions, not one per event. A store that cannot be opened
(corrupt, locked, read-only) raises :class:`~sipwarden.errors.StoreError`
naming the file and the cause.

Bans are kept as history: every ban (and every extension of one) is a row,
and lifting a ban marks the rows of its source as lifted. The bans in force
are the unlifted rows that have not expired, merged per source; that is what
a restart restores. One store is used by the caller's thread and the ban
manager's, so every access holds a lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sipwarden.alerts.records import event_record
from sipwarden.enforce.ban import Ban
from sipwarden.engine.contract import SecurityEvent
from sipwarden.errors import StoreError

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 2
MAX_BUFFERED = 100_000  # records of each kind kept while the store cannot be written

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
    record TEXT NOT NULL,           -- the full JSON record (enforce.ban.Ban.record)
    lifted REAL                     -- when the ban was lifted early, NULL if never
);
CREATE INDEX IF NOT EXISTS bans_by_source ON bans (source, until);
CREATE INDEX IF NOT EXISTS bans_by_expiry ON bans (until);
CREATE TABLE IF NOT EXISTS lifts (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    source TEXT NOT NULL
);
"""

# One statement each: the schema is created inside a transaction, which
# executescript would commit first.
_SCHEMA_STATEMENTS = tuple(part.strip() for part in _SCHEMA.split(";") if part.strip())

# Version 1 (before bans could be lifted) lacked the lifted column; its records
# are ban decisions, which Ban.from_record cannot read, so they stay history.
_MIGRATIONS = {1: "ALTER TABLE bans ADD COLUMN lifted REAL"}  # lifts is created by _SCHEMA


class SqliteStore:
    """Events and bans in one SQLite file (``:memory:`` for tests)."""

    def __init__(
        self, path: str | Path, *, batch_size: int = 500, busy_timeout: float = 5.0
    ) -> None:
        self.path = str(path)
        self.batch_size = batch_size
        self.dropped = 0  # records given up after the store stayed unwritable too long
        self._events: list[tuple[Any, ...]] = []
        self._bans: list[tuple[Any, ...]] = []
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False)
            self._retry_while_busy(self._set_up, busy_timeout)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {self.path}: {error}") from error

    @staticmethod
    def _retry_while_busy(work: Callable[[], None], timeout: float) -> None:
        """Run ``work``, again while SQLite says the database is busy, for ``timeout`` s.

        The busy handler does not cover everything a process opening the store
        meets while others use it: switching a file to WAL, or a connection
        running WAL recovery, answer "database is locked" at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                work()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    raise
            else:
                return
            time.sleep(0.01)

    def _set_up(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._initialise()

    def _initialise(self) -> None:
        """Create or upgrade the schema in one write transaction.

        Several processes (gateway workers) open the store at once. BEGIN
        IMMEDIATE takes the write lock first, waiting on the busy handler, so
        they queue up. Reading the version first and writing after was a read
        transaction upgraded to a write, which SQLite refuses at once, without
        waiting, when another process wrote in between ("database is locked").
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            rows = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
            version = None if not rows else int(rows[0][0]) if str(rows[0][0]).isdigit() else -1
            if version is not None and version != SCHEMA_VERSION:
                self._migrate(version)
            for statement in _SCHEMA_STATEMENTS:
                db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _migrate(self, version: int) -> None:
        if version not in _MIGRATIONS:
            raise StoreError(
                f"the store {self.path} has schema version {version}; "
                f"this sipwarden reads version {SCHEMA_VERSION}"
            )
        self._db.execute(_MIGRATIONS[version])
        self._db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )

    def add_events(self, events: Iterable[SecurityEvent]) -> None:
        rows = [
            (
                event.time,
                event.kind.value,
                event.severity.label,
                event.source,
                event.account,
                event.rule,
                event.summary,
                json.dumps(event_record(event), ensure_ascii=True),
            )
            for event in events
        ]
        with self._lock:
            self._events += rows
        self._maybe_flush()

    def save_ban(self, ban: Ban) -> None:
        """Keep ``ban`` (a new ban, or the extended form of one already kept)."""
        row = (
            ban.since,
            ban.source,
            ban.until,
            ban.rule,
            ban.reason,
            int(ban.returnable),
            ban.offence,
            json.dumps(ban.record(), ensure_ascii=True),
        )
        with self._lock:
            self._bans.append(row)
        self._maybe_flush()

    def lift_ban(self, source: str, now: float) -> None:
        """Mark the bans of ``source`` in force at ``now`` as lifted."""
        self.flush()
        with self._lock, self._writing():
            self._db.execute(
                "UPDATE bans SET lifted = ? WHERE source = ? AND until > ? AND lifted IS NULL",
                (now, source, now),
            )
            self._db.execute("INSERT INTO lifts (ts, source) VALUES (?, ?)", (now, source))

    def change_marks(self) -> tuple[int, int]:
        """The newest ban row and lift row ids: where :meth:`changes_since` starts."""
        self.flush()
        with self._lock:
            (bans,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM bans").fetchone()
            (lifts,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM lifts").fetchone()
        return int(bans), int(lifts)

    def changes_since(
        self, marks: tuple[int, int], now: float
    ) -> tuple[list[Ban], list[tuple[float, str]], tuple[int, int]]:
        """Bans in force and lifts written after ``marks`` (by any process), and the new marks.

        This is how a running gateway hears of ``sipwarden bans ban``/``unban``
        run on the same host without shared state.
        """
        with self._lock:
            ban_rows = self._db.execute(
                "SELECT id, record FROM bans WHERE id > ? AND until > ? AND lifted IS NULL"
                " ORDER BY id",
                (marks[0], now),
            ).fetchall()
            lift_rows = self._db.execute(
                "SELECT id, ts, source FROM lifts WHERE id > ? ORDER BY id", (marks[1],)
            ).fetchall()
            (ban_mark,) = self._db.execute(
                "SELECT COALESCE(MAX(id), ?) FROM bans", (marks[0],)
            ).fetchone()
        bans = []
        for _, text in ban_rows:
            try:
                bans.append(Ban.from_record(json.loads(text)))
            except ValueError:
                continue
        lifts = [(float(ts), str(source)) for _, ts, source in lift_rows]
        lift_mark = lift_rows[-1][0] if lift_rows else marks[1]
        return bans, lifts, (int(ban_mark), int(lift_mark))

    def active_bans(self, now: float) -> list[Ban]:
        """The bans in force at ``now``, one per source (extensions merged)."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM bans WHERE until > ? AND lifted IS NULL ORDER BY ts, id",
                (now,),
            ).fetchall()
        merged: dict[str, Ban] = {}
        for (text,) in rows:
            try:
                ban = Ban.from_record(json.loads(text))
            except ValueError:
                continue  # a version-1 decision record: history only
            kept = merged.get(ban.source)
            merged[ban.source] = kept.merged(ban) if kept is not None else ban
        return list(merged.values())

    def ban_history(self, *, source: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Every ban kept, newest first, with ``lifted`` (ISO time or None) added."""
        self.flush()
        query = "SELECT record, lifted FROM bans"
        params: list[object] = []
        if source is not None:
            query += " WHERE source = ?"
            params.append(source)
        query += " ORDER BY ts DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [{**json.loads(text), "lifted": lifted} for text, lifted in rows]

    def _maybe_flush(self) -> None:
        if len(self._events) + len(self._bans) >= self.batch_size:
            self.flush()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction: committed, or rolled back with the failure as a StoreError."""
        try:
            with self._db:
                yield
        except sqlite3.Error as error:
            raise StoreError(f"cannot write to the store {self.path}: {error}") from error

    def flush(self) -> None:
        """Write everything buffered in one transaction.

        On failure the records stay buffered for the next flush, up to
        :data:`MAX_BUFFERED` (the oldest are then given up and counted in
        ``dropped``), so a store locked for a while loses nothing and a store
        that stays broken costs bounded memory.
        """
        with self._lock:
            if not self._events and not self._bans:
                return
            try:
                with self._writing():
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
            except StoreError:
                self._bound_buffers()
                raise
            self._events.clear()
            self._bans.clear()

    def _bound_buffers(self) -> None:
        for buffer in (self._events, self._bans):
            excess = len(buffer) - MAX_BUFFERED
            if excess > 0:
                del buffer[:excess]
                self.dropped += excess

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

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
