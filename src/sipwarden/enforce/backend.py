"""What the ban manager needs from a kernel backend, a store and a shared state.

Three small protocols, so the manager never knows whether bans end up in
nftables, ipset, SQLite or Redis, and tests can count what reached each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .ban import Ban

__all__ = ["BanBackend", "BanShare", "BanStore"]


class BanBackend(Protocol):
    """A place bans are enforced outside this process (the kernel).

    Every method raises :class:`~sipwarden.errors.EnforcementError` on failure;
    the manager then keeps the bans in memory and calls :meth:`sync` when the
    backend works again.
    """

    name: str

    def install(self) -> None:
        """Create what the backend needs (table, sets, hooks) if missing; idempotent."""

    def add(self, bans: Sequence[Ban], now: float) -> None:
        """Enforce ``bans`` until each one's ``until`` (an existing element is extended)."""

    def remove(self, sources: Sequence[str]) -> None:
        """Stop enforcing bans on ``sources``; a source not banned is no error."""

    def sync(self, bans: Sequence[Ban], now: float) -> None:
        """Make the backend hold exactly ``bans`` (after an outage, or at start)."""

    def close(self) -> None:
        """Release resources; kernel bans stay in force (they expire on their own)."""


class BanStore(Protocol):
    """Where bans persist across restarts (SQLite by default)."""

    def save_ban(self, ban: Ban) -> None: ...

    def lift_ban(self, source: str, now: float) -> None: ...

    def active_bans(self, now: float) -> list[Ban]: ...

    def flush(self) -> None: ...

    def change_marks(self) -> tuple[int, int]: ...

    def changes_since(
        self, marks: tuple[int, int], now: float
    ) -> tuple[list[Ban], list[tuple[float, str]], tuple[int, int]]:
        """Bans and lifts other processes wrote since ``marks``, and the new marks."""
        ...


BanListener = Callable[[Ban], None]
LiftListener = Callable[[str], None]


class BanShare(Protocol):
    """State shared with other nodes (Redis): bans made here go out, theirs come in.

    Methods raise :class:`~sipwarden.errors.EnforcementError` when the shared
    server is unreachable; the manager retries and re-publishes every active
    ban when it is back, so nothing is lost in an outage.
    """

    name: str

    def start(self, on_ban: BanListener, on_lift: LiftListener) -> None:
        """Begin receiving other nodes' bans and lifts (listeners run on another thread).

        Never fails for want of the server: the receiving thread reconnects on
        its own, and the manager's :meth:`snapshot` on recovery covers the gap.
        """

    def publish(self, bans: Sequence[Ban]) -> None:
        """Persist ``bans`` cluster-wide and tell every node now.

        Called on every tick, often with no bans: it doubles as the health
        check. Raising there (e.g. the subscription was lost and the server may
        have restarted empty) makes the manager catch up: snapshot, then
        re-publish every active ban.
        """

    def publish_lift(self, source: str) -> None:
        """Lift the ban on ``source`` cluster-wide."""

    def snapshot(self, now: float) -> list[Ban]:
        """The bans in force cluster-wide (a node that starts later catches up with these)."""

    def close(self) -> None: ...
