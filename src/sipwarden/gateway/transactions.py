"""The gateway's transaction memory: retransmissions absorbed, hidden Vias restored.

A transaction-stateful proxy (RFC 3261 16) remembers, per forwarded request,
where its responses go and the last response it relayed, so that:

* a retransmitted request is answered with that last response instead of
  reaching the PBX again (17.2.1, 17.2.2), and an INVITE retransmitted before
  any answer is forwarded again (the phone's retransmission timer then drives
  the PBX leg, which keeps the gateway free of timers of its own);
* an answer is sent to where its request came from (the phone's connection,
  for streams), not to an address written in a header.

What must survive a restart or reach another worker (the PBX's Vias hidden
from the outside, routes, contacts) is not kept here but sealed into the
messages (:mod:`.routing`).

Entries live 32 s (64*T1, Timer B/F) after their last use, and the table is
bounded, so a flood of requests costs a fixed amount of memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwarden.engine.state import BoundedTable

from .model import Endpoint

__all__ = ["MAX_TRANSACTIONS", "TRANSACTION_TTL", "Transaction", "TransactionTable"]

TRANSACTION_TTL = 32.0  # 64*T1 with T1 = 500 ms (RFC 3261 17.1.1.2)
MAX_TRANSACTIONS = 100_000


@dataclass(slots=True)
class Transaction:
    """One forwarded request and what the gateway needs to answer for it."""

    reply_to: Endpoint  # where its responses go
    upstream: int  # the PBX it went to (-1: not a PBX)
    had_credentials: bool = False
    offered: bool = True  # the request carried an SDP offer (False: a late offer comes back)
    last_response: bytes | None = field(default=None, repr=False)


class TransactionTable:
    """Transactions by (our branch, method): CANCEL and ACK are transactions of their own."""

    def __init__(
        self, *, max_entries: int = MAX_TRANSACTIONS, ttl: float = TRANSACTION_TTL
    ) -> None:
        self._table: BoundedTable[tuple[str, str], Transaction] = BoundedTable(
            max_entries=max_entries, ttl=ttl
        )
        self._next_expiry = 0.0
        self._ttl = ttl

    def __len__(self) -> int:
        return len(self._table)

    def get(self, branch: str, method: str) -> Transaction | None:
        return self._table.get((branch, method))

    def put(self, branch: str, method: str, transaction: Transaction, now: float) -> None:
        if now >= self._next_expiry:
            self._table.expire(now)
            self._next_expiry = now + self._ttl / 4
        self._table.put((branch, method), transaction, now)
