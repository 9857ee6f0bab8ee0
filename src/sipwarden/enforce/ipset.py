"""The ipset + iptables/ip6tables ban backend, for hosts that still use iptables.

Two ipset sets hold the bans: ``PREFIX-v4`` and ``PREFIX-v6``, of type
``hash:net``, which takes addresses (as /32 and /128) and prefixes alike and,
unlike an nftables interval set, holds a prefix and an address inside it side
by side. Every member carries its own timeout, so a ban expires in the kernel
even when sipwarden is not running.

One chain, ``PREFIX`` upper-cased, drops the members' packets; it lives in the
``raw`` table of iptables and of ip6tables and is jumped to first thing from
PREROUTING. The raw table, not the filter table's INPUT and FORWARD, because:

* raw PREROUTING runs before connection tracking, so a banned flood creates no
  conntrack entries (it cannot fill the table) and costs the least per packet;
  it is the hook the nftables backend uses too (priority -300), so the two
  backends drop the same packets at the same point;
* it sees packets to the host and packets routed through it, INPUT and
  FORWARD in one rule;
* the tools that rewrite INPUT and FORWARD on every reload (ufw, Docker)
  leave the raw table alone, so the jump survives them.

``iptables`` and ``ip6tables`` are whatever the host's alternatives name (the
nf_tables variant on current Debian, or legacy): the same commands the
administrator uses, so ``iptables -t raw -S`` shows our chain.

Set changes go through one ``ipset -exist restore`` per batch; a full
:meth:`IpsetBackend.sync` fills fresh sets and swaps them in, so there is no
moment without the bans.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Final, Literal

from sipwarden.errors import EnforcementError

from .ban import Ban
from .kernel import add_one_by_one, flush_banned_flows
from .tools import run_tool

__all__ = [
    "MAX_TIMEOUT",
    "IpsetBackend",
    "chain_name",
    "chain_script",
    "create_set_args",
    "set_names",
]

log = logging.getLogger("sipwarden.enforce")

Version = Literal[4, 6]

TABLE: Final = "raw"
HOOK: Final = "PREROUTING"
MAX_TIMEOUT: Final = 2_147_483  # seconds (about 24.8 days): the largest timeout ipset accepts
# ipset names hold 31 characters and the longest we make is "PREFIX-v6-new";
# iptables chain names hold 28, more than the prefix can have.
_PREFIX: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,23}")
_NEW: Final = "-new"  # suffix of the sets a sync fills before swapping them in
_WAIT: Final = ("-w", "5")  # wait for the xtables lock (legacy iptables) rather than fail
_TOOLS: Final = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}
_ALREADY_EXISTS: Final = "set with the same name already exists"


def set_names(prefix: str) -> dict[Version, str]:
    """The ban set of each address family: ``{4: "PREFIX-v4", 6: "PREFIX-v6"}``."""
    return {4: f"{prefix}-v4", 6: f"{prefix}-v6"}


def chain_name(prefix: str) -> str:
    """The iptables chain that drops the sets' members: the prefix upper-cased."""
    return prefix.upper()


def create_set_args(name: str, version: Version, max_elements: int) -> list[str]:
    """The arguments of ``ipset create`` for a ban set (``timeout 0``: members carry their own)."""
    family = "inet" if version == 4 else "inet6"
    return [name, "hash:net", "family", family, "timeout", "0", "maxelem", str(max_elements)]


def chain_script(prefix: str, version: Version) -> str:
    """The ``iptables-restore --noflush`` input that (re)creates the drop chain.

    Declaring the chain flushes it if it exists, and the whole table commits
    at once: re-running it never duplicates the rule nor leaves a gap. The
    rule generator can print the same text next to ``ipset create``.
    """
    chain = chain_name(prefix)
    return (
        f"*{TABLE}\n"
        f":{chain} - [0:0]\n"
        f"-A {chain} -m set --match-set {set_names(prefix)[version]} src "
        f'-m comment --comment "banned by sipwarden" -j DROP\n'
        "COMMIT\n"
    )


def _version(source: str) -> Version:
    return 6 if ":" in source else 4


def _timeout(ban: Ban, now: float) -> int:
    # Whole seconds, at least 1. A ban longer than ipset's limit leaves the
    # kernel early; the in-memory table still holds it.
    return max(1, min(MAX_TIMEOUT, round(ban.until - now)))


class IpsetBackend:
    """Bans as members of two ipset sets matched by iptables and ip6tables rules."""

    name = "ipset"

    def __init__(
        self,
        *,
        prefix: str = "sipwarden",
        max_elements: int = 262_144,
        flush_conntrack: bool = True,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(
                f"ipset prefix {prefix!r}: a letter, then up to 23 letters, digits or underscores"
            )
        self.prefix = prefix
        self.max_elements = max_elements
        self.flush_conntrack = flush_conntrack
        self.sets = set_names(prefix)
        self.chain = chain_name(prefix)

    # ------------------------------------------------------------------ install

    def install(self) -> None:
        """Create the sets, the drop chains and their jumps if missing; members are kept."""
        for version, name in self.sets.items():
            self._create_set(name, version)
        for version in self.sets:
            self._install_chain(version)

    def _create_set(self, name: str, version: Version) -> None:
        args = create_set_args(name, version, self.max_elements)
        try:
            run_tool(["ipset", "-exist", "create", *args])
        except EnforcementError as error:
            if _ALREADY_EXISTS not in str(error):
                raise
            # Created with other parameters (max_kernel_bans changed): keep it
            # and its bans; the sync that follows an install swaps in a set
            # made with the current ones.
            log.warning(
                "ipset set %s exists with other parameters; the next sync replaces it", name
            )

    def _install_chain(self, version: Version) -> None:
        iptables, restore = _TOOLS[version]
        run_tool([restore, *_WAIT, "--noflush"], stdin=chain_script(self.prefix, version))
        listing = run_tool([iptables, *_WAIT, "-t", TABLE, "-S", HOOK]).splitlines()
        jump = f"-A {HOOK} -j {self.chain}"
        jumps = listing.count(jump)
        if jumps == 0:
            run_tool([iptables, *_WAIT, "-t", TABLE, "-I", HOOK, "1", "-j", self.chain])
        # Two sipwarden processes installing at once may both have inserted it.
        for _ in range(jumps - 1):
            run_tool([iptables, *_WAIT, "-t", TABLE, "-D", HOOK, "-j", self.chain])

    # ------------------------------------------------------------------ members

    def _restore(self, script: str) -> None:
        # -exist: adding a member replaces its timeout, deleting a missing one is no error.
        run_tool(["ipset", "-exist", "restore"], stdin=script)

    def _add_lines(self, bans: Sequence[Ban], now: float, suffix: str = "") -> str:
        return "".join(
            f"add {self.sets[_version(ban.source)]}{suffix} {ban.source} "
            f"timeout {_timeout(ban, now)}\n"
            for ban in bans
        )

    def add(self, bans: Sequence[Ban], now: float) -> None:
        live = [ban for ban in bans if ban.active(now)]
        if not live:
            return
        try:
            self._restore(self._add_lines(live, now))
        except EnforcementError:
            # ipset restore stops at the first line it refuses (a full set, a
            # prefix it cannot hold): apply one by one, so only that ban is lost.
            add_one_by_one(self.name, live, lambda ban: self._restore(self._add_lines([ban], now)))
        if self.flush_conntrack:
            flush_banned_flows(live)

    def remove(self, sources: Sequence[str]) -> None:
        script = "".join(f"del {self.sets[_version(source)]} {source}\n" for source in sources)
        if script:
            self._restore(script)

    def sync(self, bans: Sequence[Ban], now: float) -> None:
        """Fill fresh sets with ``bans`` and swap them in: the old members go in one step.

        The iptables rules follow a swap (they name the set, not its members),
        and the fresh sets are made with the current ``max_elements``.
        """
        live = [ban for ban in bans if ban.active(now)]
        prepare = self._prepare_fresh_sets()
        swap = "".join(
            f"swap {name}{_NEW} {name}\ndestroy {name}{_NEW}\n" for name in self.sets.values()
        )
        try:
            self._restore(prepare + self._add_lines(live, now, _NEW) + swap)
        except EnforcementError:
            self._restore(prepare)
            if live:
                add_one_by_one(
                    self.name, live, lambda ban: self._restore(self._add_lines([ban], now, _NEW))
                )
            self._swap_in(swap)

    def _swap_in(self, script: str) -> None:
        try:
            self._restore(script)
        except EnforcementError as error:
            if "cannot be swapped" not in str(error):
                raise
            # Only a set of another type (hash:ip, or the other family) refuses the swap.
            names = " and ".join(self.sets.values())
            raise EnforcementError(
                f"{error} ({names} must be hash:net sets of their family: delete the "
                "iptables rules that use the one in the way, then `ipset destroy` it)"
            ) from None

    def _prepare_fresh_sets(self) -> str:
        # Destroy first: a sync that failed half-way may have left one behind,
        # possibly made with other parameters.
        return "".join(
            f"destroy {name}{_NEW}\n"
            f"create {' '.join(create_set_args(name + _NEW, version, self.max_elements))}\n"
            for version, name in self.sets.items()
        )

    def close(self) -> None:
        """Nothing to release: the sets, the rules and the bans stay, expiring on their own."""
