"""The nftables ban backend: a table of sipwarden's own with timed IPv4 and IPv6 sets.

The table (family ``inet``, so one table serves both address families) holds
four sets, addresses and prefixes apart (an interval set rejects an address
inside a prefix it already holds, a hash set takes addresses at full speed),
and one chain hooked at prerouting priority -300: before connection tracking
(-200), so a banned packet is dropped before it creates any state, and before
any filter chain of the user's. Elements carry their own timeout, so a ban
expires in the kernel even if sipwarden is not running.

All changes go through ``nft -f -`` as one transaction per batch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from sipwarden.errors import EnforcementError

from .ban import Ban
from .kernel import add_one_by_one, flush_banned_flows
from .tools import run_tool

__all__ = ["NftablesBackend", "ban_table_script", "set_name"]

CHAIN: Final = "drop_banned"
PRIORITY: Final = -300  # the "raw" priority: before conntrack (-200) and every filter chain


def set_name(source: str) -> str:
    """The set a source belongs in: banned4, banned6, banned4_nets or banned6_nets."""
    family = "6" if ":" in source else "4"
    return f"banned{family}_nets" if "/" in source else f"banned{family}"


def ban_table_script(table: str, size: int, allowlist: Sequence[str] = ()) -> str:
    """The nft script that creates sipwarden's ban table (idempotent: ``add``, never ``flush``).

    The rule generator (``sipwarden rules nftables``) prints the same text, so the
    ruleset a user loads and the table the backend manages are one definition.
    """
    sets = "\n".join(
        f"add set inet {table} {name} {{ type {kind}; flags {flags}; size {size}; "
        f'comment "sipwarden bans: {what}"; }}'
        for name, kind, flags, what in (
            ("banned4", "ipv4_addr", "timeout", "IPv4 addresses"),
            ("banned6", "ipv6_addr", "timeout", "IPv6 addresses"),
            ("banned4_nets", "ipv4_addr", "interval, timeout", "IPv4 prefixes"),
            ("banned6_nets", "ipv6_addr", "interval, timeout", "IPv6 prefixes (/64s)"),
        )
    )
    return f"""\
add table inet {table}
{sets}
add chain inet {table} {CHAIN} {{ type filter hook prerouting priority {PRIORITY}; policy accept; }}
flush chain inet {table} {CHAIN}
{_allowlist_rules(table, allowlist)}\
add rule inet {table} {CHAIN} ip saddr @banned4 counter drop comment "banned by sipwarden"
add rule inet {table} {CHAIN} ip saddr @banned4_nets counter drop comment "banned by sipwarden"
add rule inet {table} {CHAIN} ip6 saddr @banned6 counter drop comment "banned by sipwarden"
add rule inet {table} {CHAIN} ip6 saddr @banned6_nets counter drop comment "banned by sipwarden"
"""


def _allowlist_rules(table: str, allowlist: Sequence[str]) -> str:
    """Accept rules for bans.allowlist ahead of the drops: the manager never bans an
    allowlisted network, and this keeps it so even for an element someone else adds."""
    rules = []
    parsed = [ipaddress.ip_network(entry, strict=False) for entry in allowlist]
    for family, version in (("ip", 4), ("ip6", 6)):
        # Canonical and merged, so every caller's spelling gives the same table.
        networks = [
            str(net)
            for net in ipaddress.collapse_addresses(n for n in parsed if n.version == version)  # type: ignore[type-var]
        ]
        if networks:
            rules.append(
                f"add rule inet {table} {CHAIN} {family} saddr {{ {', '.join(networks)} }} "
                'accept comment "bans.allowlist: never banned"\n'
            )
    return "".join(rules)


def _timeout(ban: Ban, now: float) -> str:
    # nft counts timeouts in whole seconds (at least 1).
    return f"{max(1, round(ban.until - now))}s"


class NftablesBackend:
    """Bans as elements of the nftables sets, with the kernel doing the expiry."""

    name = "nftables"

    def __init__(
        self,
        *,
        table: str = "sipwarden",
        size: int = 262_144,
        flush_conntrack: bool = True,
        allowlist: Sequence[str] = (),
    ) -> None:
        self.allowlist = tuple(allowlist)
        self.table = table
        self.size = size
        self.flush_conntrack = flush_conntrack

    def _apply(self, script: str) -> None:
        run_tool(["nft", "-f", "-"], stdin=script)

    def install(self) -> None:
        self._apply(ban_table_script(self.table, self.size, self.allowlist))

    def _element_lines(self, ban: Ban, now: float) -> str:
        where = f"inet {self.table} {set_name(ban.source)}"
        element = f"{{ {ban.source} timeout {_timeout(ban, now)} }}"
        # add (no error if present), delete, add again: one transaction that
        # creates the element or replaces its timeout, which a plain add would
        # leave unchanged for an element already in a hash set.
        return (
            f"add element {where} {{ {ban.source} }}\n"
            f"delete element {where} {{ {ban.source} }}\n"
            f"add element {where} {element}\n"
        )

    def add(self, bans: Sequence[Ban], now: float) -> None:
        live = [ban for ban in bans if ban.active(now)]
        if not live:
            return
        try:
            self._apply("".join(self._element_lines(ban, now) for ban in live))
        except EnforcementError:
            # One bad element (a prefix overlapping another, a full set) aborts
            # the whole transaction: apply one by one, so only it is lost.
            self._add_one_by_one(live, now)
        if self.flush_conntrack:
            flush_banned_flows(live)

    def _add_one_by_one(self, bans: Sequence[Ban], now: float) -> None:
        add_one_by_one(self.name, bans, lambda ban: self._apply(self._element_lines(ban, now)))

    def remove(self, sources: Sequence[str]) -> None:
        lines = []
        for source in sources:
            where = f"inet {self.table} {set_name(source)}"
            lines.append(
                f"add element {where} {{ {source} }}\ndelete element {where} {{ {source} }}\n"
            )
        if lines:
            self._apply("".join(lines))

    def sync(self, bans: Sequence[Ban], now: float) -> None:
        flushes = "".join(
            f"flush set inet {self.table} {name}\n"
            for name in ("banned4", "banned6", "banned4_nets", "banned6_nets")
        )
        live = [ban for ban in bans if ban.active(now)]
        try:
            self._apply(flushes + "".join(self._element_lines(ban, now) for ban in live))
        except EnforcementError:
            self._apply(flushes)
            if live:
                self._add_one_by_one(live, now)

    def close(self) -> None:
        """Nothing to release: the table and its bans stay, expiring on their own."""
