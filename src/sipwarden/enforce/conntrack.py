"""Deleting a banned source's connection-tracking entries.

A ban that drops packets before connection tracking stops new flows, but the
entries of flows already established stay until they time out (UDP "streams"
for minutes, TCP for days), and a user's own ruleset that accepts
``established`` traffic early would honour them. Deleting them makes the ban
take effect on existing flows at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sipwarden.errors import EnforcementError

from .tools import run_tool

__all__ = ["MAX_FLUSHES_PER_BATCH", "flush_conntrack"]

log = logging.getLogger("sipwarden.enforce")

# One `conntrack` process per source: under a flood of (short, unproven) bans
# flushing every source would cost more than it saves. Proven sources first.
MAX_FLUSHES_PER_BATCH = 64


def flush_conntrack(sources: Sequence[str]) -> int:
    """Delete the entries of up to :data:`MAX_FLUSHES_PER_BATCH` sources; returns how many ran.

    Prefix bans are skipped (``conntrack -s`` takes one address). A failure is
    logged, not raised: the ban itself is already in force.
    """
    done = 0
    for source in sources:
        if "/" in source:
            continue
        if done == MAX_FLUSHES_PER_BATCH:
            log.info("conntrack flush skipped for %d more banned sources", len(sources) - done)
            break
        family = "ipv6" if ":" in source else "ipv4"
        try:
            run_tool(["conntrack", "-D", "-f", family, "-s", source])
        except EnforcementError as error:
            # conntrack exits 1 with "0 flow entries have been deleted" when there were none.
            if "0 flow entries" not in str(error):
                log.warning("conntrack flush of %s failed: %s", source, error)
        done += 1
    return done
