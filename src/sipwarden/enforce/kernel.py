"""What the kernel backends (nftables, ipset) share: one-by-one fallback, conntrack flush.

Both backends apply a batch of bans in one tool run; when the tool refuses
the batch because of one element (a full set, a prefix it cannot hold), they
fall back to one run per ban so that only the refused bans are lost. After
adding, both delete the banned sources' connection-tracking entries, proven
sources first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sipwarden.errors import EnforcementError

from .ban import Ban
from .conntrack import flush_conntrack

__all__ = ["add_one_by_one", "flush_banned_flows"]

log = logging.getLogger("sipwarden.enforce")


def add_one_by_one(backend: str, bans: Sequence[Ban], add_one: Callable[[Ban], None]) -> None:
    """Apply ``bans`` with one ``add_one`` call each; a refused ban is logged and kept in memory.

    Raises:
        EnforcementError: every ban was refused (the backend itself is failing,
            not one element), so the manager treats the backend as down.
    """
    failures: list[str] = []
    for ban in bans:
        try:
            add_one(ban)
        except EnforcementError as error:
            failures.append(f"{ban.source}: {error}")
    if len(failures) == len(bans):
        raise EnforcementError(f"{backend} refused every ban of the batch; first: {failures[0]}")
    for failure in failures:
        log.warning("%s refused a ban (kept in memory): %s", backend, failure)


def flush_banned_flows(bans: Sequence[Ban]) -> None:
    """Delete the conntrack entries of the banned sources.

    Proven (returnable) sources go first: the flush is capped per batch, and a
    source that proved it receives our replies is the one with real flows.
    """
    proven_first = sorted(bans, key=lambda ban: not ban.returnable)
    flush_conntrack([ban.source for ban in proven_first])
