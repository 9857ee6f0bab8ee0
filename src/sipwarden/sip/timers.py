"""RFC 3261 timer values (Table 4 in Appendix A, with RFC 6026's Timers L and M).

Every duration a transaction or dialog waits is derived here from four
configurable values: T1 (the round-trip estimate), T2 (the cap on non-INVITE
request and INVITE response retransmission intervals), T4 (how long a message
may linger in the network) and Timer D's unreliable-transport wait. Timer C is
the proxy's INVITE timeout (RFC 3261 16.6 step 11); it lives here so the
configuration has one place for all of them.

Timers A, E and G only run on unreliable transports (17.1.1.2, 17.1.2.2,
17.2.1): on TCP/TLS/SCTP the transport retransmits, so :meth:`Timers.duration`
answers ``None`` for them. Timers D, I, J and K exist to absorb retransmissions
and are zero on reliable transports.

All values are seconds as ``float``; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sipwarden.errors import ConfigError, LocalProtocolError

__all__ = [
    "DEFAULT_TIMERS",
    "RETRANSMISSION_TIMERS",
    "T1",
    "T2",
    "T4",
    "TIMER_C",
    "TIMER_D",
    "Timer",
    "Timers",
]

# RFC 3261 17.1.1.1 and Table 4: T1 is an RTT estimate (500 ms default), T2 the
# maximum retransmit interval for non-INVITE requests and INVITE responses
# (4 s), T4 the maximum duration a message remains in the network (5 s).
T1 = 0.5
T2 = 4.0
T4 = 5.0
# Timer C: "> 3 min" (16.6 step 11); Timer D: "> 32 s for UDP" (17.1.1.2).
TIMER_C = 180.0
TIMER_D = 32.0


class Timer(enum.Enum):
    """The timers of RFC 3261 Table 4 and RFC 6026 section 8, by their RFC letter."""

    A = "A"  # INVITE request retransmit interval, unreliable only (17.1.1.2)
    B = "B"  # INVITE transaction timeout (17.1.1.2)
    C = "C"  # proxy INVITE transaction timeout (16.6 step 11)
    D = "D"  # wait time for response retransmits, INVITE client (17.1.1.2)
    E = "E"  # non-INVITE request retransmit interval, unreliable only (17.1.2.2)
    F = "F"  # non-INVITE transaction timeout (17.1.2.2)
    G = "G"  # INVITE response retransmit interval, unreliable only (17.2.1)
    H = "H"  # wait time for ACK receipt (17.2.1)
    I = "I"  # wait time for ACK retransmits (17.2.1)  # noqa: E741 - the RFC's name
    J = "J"  # wait time for non-INVITE request retransmits (17.2.2)
    K = "K"  # wait time for response retransmits, non-INVITE client (17.1.2.2)
    L = "L"  # wait time for INVITE retransmits after a 2xx, server (RFC 6026 8.7)
    M = "M"  # wait time for 2xx retransmits, INVITE client (RFC 6026 8.4)


# The timers whose firing retransmits something and re-arms with a longer interval.
RETRANSMISSION_TIMERS: frozenset[Timer] = frozenset({Timer.A, Timer.E, Timer.G})


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """The configurable RFC 3261 timer base values; every other timer derives from them.

    The RFC lets T1 be raised (and lowered on networks known to be fast, 17.1.1.1)
    and T2/T4 be tuned; the derived timers follow Table 4.
    """

    t1: float = T1
    """RTT estimate; A, E and G start at T1 and B, F, H, J, L, M are 64*T1 (seconds)."""
    t2: float = T2
    """Cap on the E and G retransmit intervals (seconds); at least T1."""
    t4: float = T4
    """How long a message may linger in the network: Timers I and K (seconds)."""
    timer_c: float = TIMER_C
    """A proxy's wait for a final INVITE response; the RFC asks for more than 3 minutes."""
    timer_d: float = TIMER_D
    """INVITE client wait in Completed on unreliable transports; RFC: at least 32 s."""

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4", "timer_c"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, not {getattr(self, name)!r}", key_path=name)
        if not self.timer_d >= 0:
            raise ConfigError(f"must be >= 0, not {self.timer_d!r}", key_path="timer_d")
        if self.t2 < self.t1:
            # 17.1.2.2: E doubles "up to T2"; a T2 below T1 would shrink the interval.
            raise ConfigError(f"T2 ({self.t2}) must not be below T1 ({self.t1})", key_path="t2")

    def duration(self, timer: Timer, *, reliable: bool) -> float | None:
        """The initial duration of ``timer`` on this kind of transport (RFC 3261 Table 4).

        ``None`` means the timer is not started at all on that transport (A, E
        and G on reliable transports); ``0.0`` means it fires at once (D, I, J, K
        on reliable transports).
        """
        t1_64 = 64 * self.t1
        match timer:
            case Timer.A | Timer.E | Timer.G:
                return None if reliable else self.t1
            case Timer.B | Timer.F | Timer.H | Timer.L | Timer.M:
                return t1_64
            case Timer.C:
                return self.timer_c
            case Timer.D:
                return 0.0 if reliable else self.timer_d
            case Timer.I | Timer.K:
                return 0.0 if reliable else self.t4
            case Timer.J:
                return 0.0 if reliable else t1_64
        raise AssertionError(timer)  # pragma: no cover - the match is exhaustive

    def backoff(self, timer: Timer, interval: float) -> float:
        """The next interval of a retransmission timer that fired after ``interval``.

        Timer A doubles without a cap (17.1.1.2: Timer B ends it after 64*T1);
        Timers E and G double up to T2 (17.1.2.2, 17.2.1). A non-INVITE client
        in Proceeding resets E to T2 outright; the transaction applies that rule.
        """
        if timer is Timer.A:
            return 2 * interval
        if timer in (Timer.E, Timer.G):
            return min(2 * interval, self.t2)
        raise LocalProtocolError(f"Timer {timer.value} is not a retransmission timer")


DEFAULT_TIMERS = Timers()
