"""The ban manager: applies the engine's ban decisions, persists, shares and lifts them.

The hot path (:meth:`BanManager.apply`, :meth:`BanManager.banned`) touches
memory only: a decision goes into the in-process :class:`~.ban.BanTable` at
once, so the gateway drops the source from its next datagram on, and is queued
for the slow parts. :meth:`BanManager.tick` does the slow parts in batches:
it writes the store, pushes bans into the kernel backends, publishes them to
the other nodes, expires old bans and brings failed backends back. Run it
every fraction of a second, from :meth:`BanManager.run_in_background` or the
caller's own loop; a batch keeps a flood of bans from costing one ``nft``
process per ban.

Failures are loud and safe: a backend that fails is logged once per outage
and left out until it works again; meanwhile bans stay enforced in memory
and in the store, and when it is back the manager re-applies every active
ban to it, so nothing is lost. Allowlisted networks are never banned, not
even by hand or by another node.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sipwarden.engine.contract import BanDecision
from sipwarden.errors import EnforcementError, StoreError

from .backend import BanBackend, BanShare, BanStore
from .ban import Ban, BanTable, ban_from_decision, canonical_source

__all__ = ["AllowlistedError", "BackendStatus", "BanManager"]

log = logging.getLogger("sipwarden.enforce")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TICK_INTERVAL = 0.2  # seconds between background ticks: a ban reaches the kernel within this
# A kernel backend is re-installed and re-synchronised this often even when it
# reports no error: `nft flush ruleset`, a firewall reload or an `ipset destroy`
# by someone else removes sipwarden's sets silently.
RESYNC_INTERVAL = 300.0


class AllowlistedError(EnforcementError):
    """A ban was asked for a source in an allowlisted network."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendStatus:
    name: str
    healthy: bool
    error: str = ""


@dataclass(slots=True)
class _Slot:
    """A backend or share, with its health."""

    name: str
    healthy: bool = False
    error: str = ""
    retry_at: float = 0.0
    resync_at: float = 0.0


@dataclass(slots=True)
class _Pending:
    """Work queued by the hot path for the next tick.

    The store gets every ban and lift in order (a lift then a new ban must
    leave the new ban in force); the kernel and the share only need where each
    source ends up.
    """

    store: list[Ban | str] = field(default_factory=list)  # a str is a lifted source
    kernel: dict[str, Ban] = field(default_factory=dict)
    kernel_lifts: set[str] = field(default_factory=set)
    publish: dict[str, Ban] = field(default_factory=dict)

    def take(self) -> _Pending:
        taken = _Pending(self.store, self.kernel, self.kernel_lifts, self.publish)
        self.store, self.kernel, self.kernel_lifts, self.publish = [], {}, set(), {}
        return taken


class BanManager:
    """Bans in memory, in the store, in the kernel and across nodes."""

    def __init__(
        self,
        *,
        backends: Sequence[BanBackend] = (),
        store: BanStore | None = None,
        share: BanShare | None = None,
        allowlist: Iterable[str] = (),
        origin: str = "",
        retry_interval: float = 10.0,
    ) -> None:
        self.table = BanTable()
        self.origin = origin
        self.retry_interval = retry_interval
        self._backends = list(backends)
        self._store = store
        self._share = share
        self._allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in allowlist
        )
        parts: list[BanBackend | BanShare] = [*self._backends, *self._share_list]
        self._slots = {id(part): _Slot(part.name) for part in parts}
        self._lock = threading.RLock()
        self._pending = _Pending()
        # A lift waiting for the share to come back (other nodes must hear of it).
        self._unshared_lifts: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_marks = (0, 0)

    @property
    def _share_list(self) -> list[BanShare]:
        return [self._share] if self._share is not None else []

    # ------------------------------------------------------------------ start, stop

    def start(self, now: float) -> None:
        """Restore bans from the store and the share, then bring every backend up to date."""
        restored: list[Ban] = []
        if self._store is not None:
            restored += self._store.active_bans(now)
        for ban in restored:
            self._adopt(ban)
        if self._store is not None:
            self._store_marks = self._store.change_marks()
        if self._share is not None:
            self._start_share(self._share, now)
        for backend in self._backends:
            self._recover(backend, now)
        if restored:
            log.info("restored %d active bans from the store", len(restored))

    def _start_share(self, share: BanShare, now: float) -> None:
        share.start(self.receive, self.receive_lift)
        self._recover_share(share, now)

    def run_in_background(self, interval: float = TICK_INTERVAL) -> None:
        """Tick on a daemon thread with the wall clock until :meth:`close`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.tick(time.time())

        self._thread = threading.Thread(target=loop, name="sipwarden-enforce", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop ticking, write what is queued, release the backends (kernel bans stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.tick(time.time())
        for backend in self._backends:
            backend.close()
        if self._share is not None:
            self._share.close()

    # ------------------------------------------------------------------ hot path

    def banned(self, address: str, now: float) -> Ban | None:
        """The ban in force on ``address``, if any (one dict lookup for most addresses)."""
        return self.table.banned(address, now)

    def is_allowlisted(self, source: str) -> bool:
        try:
            network = ipaddress.ip_network(source, strict=False)
        except ValueError:
            return False
        # Overlap, not containment: banning 10.0.0.0/8 must not cover a trusted 10.1.2.3.
        return any(
            network.version == allowed.version and network.overlaps(allowed)
            for allowed in self._allow
        )

    def apply(self, decision: BanDecision) -> Ban | None:
        """Apply an engine decision; ``None`` when the source is allowlisted."""
        ban = ban_from_decision(decision, origin=self.origin)
        if self.is_allowlisted(ban.source):
            log.warning("not banning allowlisted %s (%s)", ban.source, ban.rule)
            return None
        return self._put(ban, publish=True)

    def ban(
        self, source: str, *, duration: float, reason: str, now: float, rule: str = "manual"
    ) -> Ban:
        """A ban by hand (``sipwarden bans ban``); extends an existing ban.

        Raises:
            ValueError: ``source`` is not an address or network.
            AllowlistedError: ``source`` overlaps an allowlisted network.
        """
        canonical = canonical_source(source)
        if self.is_allowlisted(canonical):
            raise AllowlistedError(f"{canonical} is in bans.allowlist and is never banned")
        ban = Ban(
            source=canonical,
            since=now,
            until=now + duration,
            rule=rule,
            reason=reason,
            returnable=True,  # an administrator's word needs no proof of routability
            origin=self.origin,
        )
        return self._put(ban, publish=True)

    def receive(self, ban: Ban) -> None:
        """A ban another node made (called from the share's thread)."""
        if not self.is_allowlisted(ban.source):
            self._put(ban, publish=False)

    def _adopt(self, ban: Ban) -> None:
        """A ban already applied elsewhere (the store, another local process): memory only."""
        if not self.is_allowlisted(ban.source):
            with self._lock:
                self.table.put(ban)

    def _put(self, ban: Ban, *, publish: bool) -> Ban:
        with self._lock:
            kept = self.table.put(ban)
            source = kept.source
            self._pending.store.append(kept)
            self._pending.kernel[source] = kept
            self._pending.kernel_lifts.discard(source)
            if publish:
                self._pending.publish[source] = kept
                self._unshared_lifts.discard(source)  # the new ban supersedes the lift
        return kept

    def lift(self, source: str) -> Ban | None:
        """Lift the ban on ``source`` everywhere; returns the ban lifted, if there was one."""
        canonical = canonical_source(source)
        self._drop(canonical)
        with self._lock:
            self._unshared_lifts.add(canonical)
            return self.table.remove(canonical)

    def receive_lift(self, source: str) -> None:
        """Another node lifted a ban (called from the share's thread)."""
        self._drop(source)
        with self._lock:
            self.table.remove(source)

    def _drop(self, source: str) -> None:
        with self._lock:
            self._pending.store.append(source)
            self._pending.kernel.pop(source, None)
            self._pending.kernel_lifts.add(source)
            self._pending.publish.pop(source, None)

    def active(self, now: float) -> list[Ban]:
        """The bans in force, soonest to expire last."""
        with self._lock:
            return sorted((ban for ban in self.table if ban.active(now)), key=lambda ban: ban.until)

    def status(self) -> list[BackendStatus]:
        return [
            BackendStatus(name=slot.name, healthy=slot.healthy, error=slot.error)
            for slot in self._slots.values()
        ]

    # ------------------------------------------------------------------ slow path

    def tick(self, now: float) -> None:
        """Do the queued work: store, kernel, share; expire; retry failed backends."""
        with self._lock:
            pending = self._pending.take()
            self.table.expire(now)
        self._write_store(pending, now)
        live = [ban for ban in pending.kernel.values() if ban.active(now)]
        lifts = sorted(pending.kernel_lifts)
        for backend in self._backends:
            self._push(backend, live, lifts, now)
        if self._share is not None:
            self._publish(self._share, list(pending.publish.values()), now)

    def _write_store(self, pending: _Pending, now: float) -> None:
        if self._store is None:
            return
        try:
            for change in pending.store:
                if isinstance(change, Ban):
                    self._store.save_ban(change)
                else:
                    self._store.lift_ban(change, now)
            self._store.flush()
            self._follow_store(self._store, now)
        except StoreError as error:
            # The bans stay in force in memory and in the kernel; only their
            # persistence is lost, and that is what the administrator must hear.
            log.error("bans not saved: %s", error)  # noqa: TRY400 - the message is the point

    def _follow_store(self, store: BanStore, now: float) -> None:
        """Adopt what other processes on this host (``sipwarden bans ban``/``unban``) wrote."""
        bans, lifts, self._store_marks = store.changes_since(self._store_marks, now)
        for ban in bans:
            self._adopt(ban)  # our own rows merge into themselves: no change
        with self._lock:
            for lifted_at, source in lifts:
                current = self.table.get(source)
                if current is not None and current.since <= lifted_at:  # not a newer ban
                    self.table.remove(source)

    def _push(self, backend: BanBackend, bans: list[Ban], lifts: list[str], now: float) -> None:
        slot = self._slots[id(backend)]
        if not slot.healthy and now < slot.retry_at:
            return
        if not slot.healthy or now >= slot.resync_at:
            self._recover(backend, now)  # everything active, these bans included
            return
        try:
            if bans:
                backend.add(bans, now)
            if lifts:
                backend.remove(lifts)
        except EnforcementError as error:
            self._failed(slot, error, now)

    def _publish(self, share: BanShare, bans: list[Ban], now: float) -> None:
        slot = self._slots[id(share)]
        if not slot.healthy:
            if now >= slot.retry_at:
                self._recover_share(share, now)
            return
        try:
            # Called even with no bans: it is also the share's health check (a
            # Redis share that lost its subscription raises, so we catch up).
            share.publish(bans)
            self._share_lifts(share)
        except EnforcementError as error:
            self._failed(slot, error, now)

    def _share_lifts(self, share: BanShare) -> None:
        with self._lock:
            lifts = sorted(self._unshared_lifts)
        for source in lifts:
            share.publish_lift(source)
            with self._lock:
                self._unshared_lifts.discard(source)

    def _recover(self, backend: BanBackend, now: float) -> None:
        """Bring a kernel backend up to date with every active ban."""

        def bring_up() -> None:
            backend.install()
            backend.sync(self.active(now), now)

        self._attempt_recovery(self._slots[id(backend)], bring_up, now)

    def _recover_share(self, share: BanShare, now: float) -> None:
        self._attempt_recovery(self._slots[id(share)], lambda: self._catch_up(share, now), now)

    def _attempt_recovery(self, slot: _Slot, bring_up: Callable[[], None], now: float) -> None:
        try:
            bring_up()
        except EnforcementError as error:
            self._failed(slot, error, now)
            return
        if slot.error:
            log.warning("%s works again; every active ban was re-applied to it", slot.name)
        slot.healthy, slot.error = True, ""
        slot.resync_at = now + RESYNC_INTERVAL

    def _catch_up(self, share: BanShare, now: float) -> None:
        """Take the other nodes' bans, then give them ours (and the lifts they missed)."""
        for ban in share.snapshot(now):
            self.receive(ban)
        share.publish(self.active(now))
        self._share_lifts(share)

    def _failed(self, slot: _Slot, error: EnforcementError, now: float) -> None:
        if slot.healthy or slot.error != str(error):
            log.error(
                "%s failed: %s; bans stay enforced in memory, retrying every %g s",
                slot.name,
                error,
                self.retry_interval,
            )
        slot.healthy, slot.error = False, str(error)
        slot.retry_at = now + self.retry_interval
