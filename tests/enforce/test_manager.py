"""The ban manager: memory first, then store, kernel and shares in batches; failures safe.

The kernel backends are exercised for real in test_nftables/test_ipset; here a
recording backend (our own protocol, not a stand-in for a peer) shows what the
manager asks of a backend and when.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sipwarden.enforce.ban import Ban
from sipwarden.enforce.manager import RESYNC_INTERVAL, AllowlistedError, BanManager
from sipwarden.engine.contract import BanDecision
from sipwarden.errors import EnforcementError, StoreError
from sipwarden.store.sqlite import SqliteStore


class RecordingBackend:
    """Keeps what it was told; fails on demand."""

    name = "recording"

    def __init__(self) -> None:
        self.members: dict[str, float] = {}
        self.calls: list[str] = []
        self.failing = False

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.failing:
            raise EnforcementError("`nft` failed: Operation not permitted")

    def install(self) -> None:
        self._check("install")

    def add(self, bans: Sequence[Ban], now: float) -> None:
        self._check(f"add {len(bans)}")
        self.members.update({ban.source: ban.until for ban in bans})

    def remove(self, sources: Sequence[str]) -> None:
        self._check(f"remove {len(sources)}")
        for source in sources:
            self.members.pop(source, None)

    def sync(self, bans: Sequence[Ban], now: float) -> None:
        self._check(f"sync {len(bans)}")
        self.members = {ban.source: ban.until for ban in bans}

    def close(self) -> None:
        self.calls.append("close")


def decision(source: str, at: float = 1000.0, duration: float = 600.0) -> BanDecision:
    return BanDecision(
        time=at,
        source=source,
        duration=duration,
        rule="scanner.sipvicious",
        reason="SIPVicious svmap",
        returnable=True,
        evidence=("OPTIONS sip:100@pbx from " + source,),
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "bans.sqlite3")


def test_a_decision_is_enforced_in_memory_at_once_and_elsewhere_on_the_next_tick(
    store: SqliteStore,
) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    made = manager.apply(decision("198.51.100.7"))
    assert made is not None
    assert manager.banned("198.51.100.7", 1000.5) == made
    assert "198.51.100.7" not in backend.members  # the hot path never waits on a tool
    manager.tick(1000.5)
    assert backend.members == {"198.51.100.7": 1600.0}
    assert [ban.source for ban in store.active_bans(1001.0)] == ["198.51.100.7"]
    assert store.active_bans(1001.0)[0].evidence == ("OPTIONS sip:100@pbx from 198.51.100.7",)


def test_a_flood_of_decisions_costs_one_backend_call_per_tick(store: SqliteStore) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    for host in range(1000):
        manager.apply(decision(f"10.{host // 256}.{host % 256}.1"))
    backend.calls.clear()
    manager.tick(1000.1)
    assert backend.calls == ["add 1000"]
    assert len(store.active_bans(1000.2)) == 1000


def test_allowlisted_sources_are_never_banned(store: SqliteStore) -> None:
    manager = BanManager(store=store, allowlist=["192.0.2.0/24", "2001:db8:5::/48"])
    assert manager.apply(decision("192.0.2.10")) is None
    with pytest.raises(AllowlistedError, match=r"192\.0\.2\.0/24 is in bans\.allowlist"):
        manager.ban("192.0.2.0/24", duration=60, reason="x", now=1.0)
    with pytest.raises(AllowlistedError):
        manager.ban("192.0.0.0/16", duration=60, reason="x", now=1.0)  # covers trusted hosts
    manager.receive(
        Ban(source="2001:db8:5:1::/64", since=1, until=99, rule="r", reason="x", returnable=True)
    )
    assert manager.banned("2001:db8:5:1::9", 2.0) is None
    assert manager.apply(decision("198.51.100.1")) is not None


def test_a_restart_restores_every_ban_in_force_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite3"
    with SqliteStore(path) as first_store:
        first = BanManager(store=first_store)
        first.start(1000.0)
        first.apply(decision("198.51.100.1", duration=600))
        first.apply(decision("198.51.100.2", duration=10))  # expires before the restart
        first.ban("203.0.113.0/24", duration=3600, reason="by hand", now=1000.0)
        first.apply(decision("198.51.100.3"))
        first.tick(1000.0)
        first.lift("198.51.100.3")
        first.tick(1001.0)
    backend = RecordingBackend()
    with SqliteStore(path) as second_store:
        second = BanManager(backends=[backend], store=second_store)
        second.start(1100.0)
        assert {ban.source for ban in second.active(1100.0)} == {"198.51.100.1", "203.0.113.0/24"}
        assert backend.calls[:2] == ["install", "sync 2"]  # the kernel gets them back too
        assert second.banned("203.0.113.99", 1100.0) is not None


def test_a_failing_backend_is_reported_once_and_caught_up_when_it_returns(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store, retry_interval=5.0)
    manager.start(1000.0)
    backend.failing = True
    manager.apply(decision("198.51.100.1"))
    with caplog.at_level(logging.ERROR, logger="sipwarden.enforce"):
        manager.tick(1000.0)
        manager.apply(decision("198.51.100.2"))
        manager.tick(1001.0)  # before the retry time: not even tried
        manager.tick(1003.0)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert "Operation not permitted" in failures[0].getMessage()
    assert "bans stay enforced in memory" in failures[0].getMessage()
    assert not manager.status()[0].healthy
    assert manager.banned("198.51.100.2", 1003.0) is not None  # memory keeps working
    backend.failing = False
    manager.tick(1006.0)
    assert set(backend.members) == {"198.51.100.1", "198.51.100.2"}  # nothing lost
    assert manager.status()[0].healthy


def test_a_lift_reaches_memory_store_and_backend(store: SqliteStore) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    manager.apply(decision("198.51.100.1"))
    manager.tick(1000.0)
    lifted = manager.lift("198.51.100.1")
    assert lifted is not None
    assert manager.banned("198.51.100.1", 1000.1) is None
    manager.tick(1000.2)
    assert backend.members == {}
    assert store.active_bans(1000.3) == []
    assert manager.lift("198.51.100.1") is None


def test_bans_and_lifts_made_by_another_process_are_adopted_from_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bans.sqlite3"
    with SqliteStore(path) as gateway_store, SqliteStore(path) as command_store:
        gateway = BanManager(store=gateway_store)
        gateway.start(1000.0)
        command = BanManager(store=command_store)  # `sipwarden bans ban` on the same host
        command.start(1000.0)
        command.ban("203.0.113.9", duration=60, reason="by hand", now=1000.0)
        command.tick(1000.0)
        gateway.tick(1000.1)
        assert gateway.banned("203.0.113.9", 1000.2) is not None
        command.lift("203.0.113.9")
        command.tick(1000.3)
        gateway.tick(1000.4)
        assert gateway.banned("203.0.113.9", 1000.5) is None


def test_capture_bans_past_their_expiry_stay_out_of_the_kernel(store: SqliteStore) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(5000.0)
    manager.apply(decision("198.51.100.1", at=1000.0, duration=60))
    manager.tick(5000.0)
    assert backend.members == {}


def test_a_store_that_fails_is_logged_and_enforcement_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenStore(SqliteStore):
        def save_ban(self, ban: Ban) -> None:
            raise StoreError("cannot write to the store x: disk I/O error")

    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=BrokenStore(tmp_path / "s.sqlite3"))
    manager.start(1000.0)
    manager.apply(decision("198.51.100.1"))
    with caplog.at_level(logging.ERROR, logger="sipwarden.enforce"):
        manager.tick(1000.0)
    assert "bans not saved" in caplog.text
    assert "198.51.100.1" in backend.members


def test_the_background_tick_applies_a_ban_within_a_fraction_of_a_second(
    store: SqliteStore,
) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(time.time())
    manager.run_in_background(interval=0.05)
    try:
        started = time.monotonic()
        manager.apply(decision("198.51.100.1", at=time.time()))
        while "198.51.100.1" not in backend.members and time.monotonic() - started < 2:
            time.sleep(0.01)
        assert time.monotonic() - started < 0.5
    finally:
        manager.close()
    assert backend.calls[-1] == "close"


def test_a_lift_then_a_new_ban_in_one_tick_leaves_the_new_ban_everywhere(
    store: SqliteStore,
) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    manager.apply(decision("198.51.100.1", duration=3600))
    manager.tick(1000.0)
    manager.lift("198.51.100.1")
    manager.apply(decision("198.51.100.1", at=1001.0, duration=60))
    manager.tick(1001.0)
    assert backend.members == {"198.51.100.1": 1061.0}
    (kept,) = store.active_bans(1002.0)
    assert kept.until == 1061.0  # the lifted hour is gone, the new minute stays


def test_a_ban_then_a_lift_in_one_tick_leaves_nothing(store: SqliteStore) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    manager.apply(decision("198.51.100.1"))
    manager.lift("198.51.100.1")
    manager.tick(1000.0)
    assert backend.members == {}
    assert store.active_bans(1000.5) == []


def test_a_backend_emptied_behind_our_back_is_refilled_by_the_periodic_resync(
    store: SqliteStore,
) -> None:
    backend = RecordingBackend()
    manager = BanManager(backends=[backend], store=store)
    manager.start(1000.0)
    manager.apply(decision("198.51.100.1", duration=86400))
    manager.tick(1000.0)
    backend.members.clear()  # `nft flush ruleset` by someone else
    manager.tick(1000.0 + RESYNC_INTERVAL)
    assert set(backend.members) == {"198.51.100.1"}
