"""SIP transactions (RFC 3261 17, amended by RFC 6026): four state machines, matching, a table.

Each machine is one mapping ``(State, Event) -> Transition`` named after the
RFC figure it transcribes; a :class:`Transition` is the arrow's target state
plus the actions written on the arrow (``"300-699 / ACK sent, resp. to TU"``).
The code around the tables only performs those actions and manages timers, so
reading a table is reading the figure. A pair that is not in a table is
handled deliberately: remote input and timers produce an :class:`Ignored`
action (absorbed and reported: a stray response, an ACK for nothing), and a
misuse by our own transaction user raises
:class:`~sipwarden.errors.LocalProtocolError` -- unless the transaction is an
``observer`` (the passive monitor), where the "TU" is a peer we only watch and
its mistakes are reported too.

The machines are sans-IO in aioquic's shape: every input takes ``now`` and
returns a list of actions (messages to send, things to tell the TU); the
caller arms one timer at :meth:`Transaction.get_timer` and calls
:meth:`Transaction.handle_timer` when it expires.

Matching (17.1.3, 17.2.3, 9.2) is by key: :func:`client_key` for responses,
:func:`server_key` for requests, with the RFC 2543 fallback when the top Via
branch lacks the ``z9hG4bK`` magic cookie (or is nothing but the cookie, RFC
4475 ``badbranch``). :class:`TransactionTable` holds transactions under those
keys, bounded in number and age, and is what the gateway and the monitor use.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from math import inf
from types import MappingProxyType
from typing import ClassVar, Final, NamedTuple, TypeAlias

from sipwarden.errors import ConfigError, LocalProtocolError

from .fields import Via
from .headers import Headers
from .message import Message, Request, Response
from .timers import DEFAULT_TIMERS, RETRANSMISSION_TIMERS, Timer, Timers
from .uri import NameAddr

__all__ = [
    "INVITE_CLIENT_TABLE",
    "INVITE_SERVER_TABLE",
    "MAGIC_COOKIE",
    "MAX_TRANSACTIONS",
    "MAX_TRANSACTION_AGE",
    "NON_INVITE_CLIENT_TABLE",
    "NON_INVITE_SERVER_TABLE",
    "Absorbed",
    "Action",
    "ClientTransaction",
    "Do",
    "Event",
    "Evicted",
    "Ignored",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "PassToTU",
    "Retransmit",
    "SendAck",
    "SendResponse",
    "ServerTransaction",
    "State",
    "Terminated",
    "Timeout",
    "Transaction",
    "TransactionActions",
    "TransactionKey",
    "TransactionTable",
    "Transition",
    "TransportFailed",
    "build_ack",
    "cancel_key",
    "client_key",
    "client_transaction",
    "is_reliable_transport",
    "is_rfc3261_branch",
    "server_key",
    "server_key_of_response",
    "server_transaction",
]

# RFC 3261 8.1.1.7: a branch starting with this cookie was built by an RFC 3261
# element to be unique per transaction, so it can be matched on its own.
MAGIC_COOKIE: Final = "z9hG4bK"

# Bounds of a TransactionTable (DESIGN: everything bounded). Each entry holds
# its request and last response (a few KiB), so the default costs at most a
# few hundred MiB under a flood; at 1000 calls/s with UDP's 32 s lingering
# (Timers J, K, L, M) a gateway keeps roughly 64k entries.
MAX_TRANSACTIONS: Final = 65536
# Proceeding has no timer of its own (17.1.1.2: a UAC waits as long as the user
# lets it ring; a proxy's Timer C cancels after 3 minutes without progress), so
# a transaction whose peer vanished would live forever. Ten minutes is longer
# than any real ringing phase.
MAX_TRANSACTION_AGE: Final = 600.0

# Transports that retransmit on their own (18: TCP, TLS, SCTP; RFC 7118 WS/WSS).
_RELIABLE_TRANSPORTS: Final = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


# -- states, events, actions -------------------------------------------------------------


class State(enum.Enum):
    """Transaction states; each machine uses a subset (RFC 3261 17, RFC 6026 7)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026: an INVITE transaction that saw a 2xx
    TERMINATED = "Terminated"


class Event(enum.Enum):
    """What can happen to a transaction: the labels before the slash on the figures' arrows."""

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_300_699 = "300-699 received"
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_300_699 = "300-699 from TU"
    REQUEST = "request retransmission"
    ACK = "ACK received"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A fires"
    TIMER_B = "Timer B fires"
    TIMER_D = "Timer D fires"
    TIMER_E = "Timer E fires"
    TIMER_F = "Timer F fires"
    TIMER_G = "Timer G fires"
    TIMER_H = "Timer H fires"
    TIMER_I = "Timer I fires"
    TIMER_J = "Timer J fires"
    TIMER_K = "Timer K fires"
    TIMER_L = "Timer L fires"
    TIMER_M = "Timer M fires"


_TIMER_EVENT: Final[Mapping[Timer, Event]] = MappingProxyType(
    {
        Timer.A: Event.TIMER_A,
        Timer.B: Event.TIMER_B,
        Timer.D: Event.TIMER_D,
        Timer.E: Event.TIMER_E,
        Timer.F: Event.TIMER_F,
        Timer.G: Event.TIMER_G,
        Timer.H: Event.TIMER_H,
        Timer.I: Event.TIMER_I,
        Timer.J: Event.TIMER_J,
        Timer.K: Event.TIMER_K,
        Timer.L: Event.TIMER_L,
        Timer.M: Event.TIMER_M,
    }
)


class Do(enum.Enum):
    """What an arrow does: the labels after the slash on the figures' arrows."""

    TO_TU = "pass the message to the TU"
    SEND_ACK = "send (or resend) the ACK for a non-2xx final response"
    RETRANSMIT = "retransmit the request"
    SEND_RESPONSE = "send the TU's response and remember it"
    RESEND_RESPONSE = "resend the last response"
    REARM = "re-arm the timer that fired, backed off"
    INFORM_TIMEOUT = "tell the TU the transaction timed out"
    INFORM_TRANSPORT_ERROR = "tell the TU the transport failed"
    ABSORB = "absorb the message (a retransmission the RFC swallows)"


class Transition(NamedTuple):
    """One arrow of a figure: where it leads and what it does on the way."""

    target: State
    do: tuple[Do, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PassToTU:
    """Hand ``message`` to the transaction user (a response, or an ACK in Accepted)."""

    message: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResponse:
    """Transmit the TU's ``response`` (its first transmission through this transaction)."""

    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class Retransmit:
    """Transmit ``message`` again: the request (A, E) or the last response (G, or a
    retransmitted request); ``timer`` is the timer that fired, ``None`` when a
    request retransmission triggered it."""

    message: Message
    timer: Timer | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAck:
    """Transmit the ACK the INVITE client transaction built for a non-2xx final (17.1.1.3)."""

    ack: Request
    retransmission: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout:
    """The transaction timed out (Timer B, F or H); the TU treats it as a 408 (8.1.3.1)."""

    timer: Timer


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """The transport reported an error; the TU is informed (17.1.4, 17.2.4)."""

    state: State


@dataclass(frozen=True, slots=True, kw_only=True)
class Absorbed:
    """``message`` matched and was swallowed, as the RFC asks (a retransmission)."""

    message: Message
    state: State
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    """``event`` has no arrow in ``state``: the input was dropped and is reported.

    This is the out-of-state signal: a response to a finished transaction, an
    ACK before any final response, a timer for a state already left.
    """

    state: State
    event: Event
    message: Message | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Terminated:
    """The transaction reached Terminated and must be destroyed (17.1.1.2)."""

    previous: State


@dataclass(frozen=True, slots=True, kw_only=True)
class Evicted:
    """The table dropped the transaction before it terminated (``max_entries``/``max_age``)."""

    reason: str


Action: TypeAlias = (
    PassToTU
    | SendResponse
    | Retransmit
    | SendAck
    | Timeout
    | TransportFailed
    | Absorbed
    | Ignored
    | Terminated
    | Evicted
)

_S = State
_E = Event
_D = Do

# -- the four figures --------------------------------------------------------------------

# RFC 3261 Figure 5 (INVITE client transaction, 17.1.1.2), as amended by RFC 6026
# 7.2: a 2xx leads to Accepted (Timer M) instead of Terminated, so 2xx
# retransmissions and 2xx from other forks still reach the TU.
INVITE_CLIENT_TABLE: Final[Mapping[tuple[State, Event], Transition]] = MappingProxyType(
    {
        (_S.CALLING, _E.TIMER_A): Transition(_S.CALLING, (_D.RETRANSMIT, _D.REARM)),
        (_S.CALLING, _E.TIMER_B): Transition(_S.TERMINATED, (_D.INFORM_TIMEOUT,)),
        (_S.CALLING, _E.TRANSPORT_ERROR): Transition(_S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.CALLING, _E.RECV_1XX): Transition(_S.PROCEEDING, (_D.TO_TU,)),
        (_S.CALLING, _E.RECV_2XX): Transition(_S.ACCEPTED, (_D.TO_TU,)),
        (_S.CALLING, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.SEND_ACK, _D.TO_TU)),
        (_S.PROCEEDING, _E.RECV_1XX): Transition(_S.PROCEEDING, (_D.TO_TU,)),
        (_S.PROCEEDING, _E.RECV_2XX): Transition(_S.ACCEPTED, (_D.TO_TU,)),
        (_S.PROCEEDING, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.SEND_ACK, _D.TO_TU)),
        # 17.1.1.2: a retransmitted final is ACKed again but not passed up.
        (_S.COMPLETED, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.SEND_ACK,)),
        (_S.COMPLETED, _E.TRANSPORT_ERROR): Transition(_S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _E.TIMER_D): Transition(_S.TERMINATED),
        # RFC 6026 7.2: every 2xx in Accepted goes to the TU, which ACKs it.
        (_S.ACCEPTED, _E.RECV_2XX): Transition(_S.ACCEPTED, (_D.TO_TU,)),
        (_S.ACCEPTED, _E.TIMER_M): Transition(_S.TERMINATED),
    }
)

# RFC 3261 Figure 6 (non-INVITE client transaction, 17.1.2.2).
NON_INVITE_CLIENT_TABLE: Final[Mapping[tuple[State, Event], Transition]] = MappingProxyType(
    {
        (_S.TRYING, _E.TIMER_E): Transition(_S.TRYING, (_D.RETRANSMIT, _D.REARM)),
        (_S.TRYING, _E.TIMER_F): Transition(_S.TERMINATED, (_D.INFORM_TIMEOUT,)),
        (_S.TRYING, _E.TRANSPORT_ERROR): Transition(_S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.TRYING, _E.RECV_1XX): Transition(_S.PROCEEDING, (_D.TO_TU,)),
        (_S.TRYING, _E.RECV_2XX): Transition(_S.COMPLETED, (_D.TO_TU,)),
        (_S.TRYING, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.TO_TU,)),
        # 17.1.2.2: in Proceeding, E is reset to T2 (see Transaction._rearm).
        (_S.PROCEEDING, _E.TIMER_E): Transition(_S.PROCEEDING, (_D.RETRANSMIT, _D.REARM)),
        (_S.PROCEEDING, _E.TIMER_F): Transition(_S.TERMINATED, (_D.INFORM_TIMEOUT,)),
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): Transition(
            _S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)
        ),
        (_S.PROCEEDING, _E.RECV_1XX): Transition(_S.PROCEEDING, (_D.TO_TU,)),
        (_S.PROCEEDING, _E.RECV_2XX): Transition(_S.COMPLETED, (_D.TO_TU,)),
        (_S.PROCEEDING, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.TO_TU,)),
        # 17.1.2.2: Completed exists "to buffer any additional response retransmissions".
        (_S.COMPLETED, _E.RECV_2XX): Transition(_S.COMPLETED, (_D.ABSORB,)),
        (_S.COMPLETED, _E.RECV_300_699): Transition(_S.COMPLETED, (_D.ABSORB,)),
        (_S.COMPLETED, _E.TIMER_K): Transition(_S.TERMINATED),
    }
)

# RFC 3261 Figure 7 (INVITE server transaction, 17.2.1), as amended by RFC 6026
# 7.1: a 2xx from the TU leads to Accepted (Timer L), where INVITE
# retransmissions are absorbed and ACKs go to the TU; and a transport error
# never ends the transaction, it only informs the TU ("MUST remain in its
# current state"; the timers end it).
INVITE_SERVER_TABLE: Final[Mapping[tuple[State, Event], Transition]] = MappingProxyType(
    {
        (_S.PROCEEDING, _E.REQUEST): Transition(_S.PROCEEDING, (_D.RESEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_1XX): Transition(_S.PROCEEDING, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_2XX): Transition(_S.ACCEPTED, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_300_699): Transition(_S.COMPLETED, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): Transition(
            _S.PROCEEDING, (_D.INFORM_TRANSPORT_ERROR,)
        ),
        (_S.COMPLETED, _E.REQUEST): Transition(_S.COMPLETED, (_D.RESEND_RESPONSE,)),
        (_S.COMPLETED, _E.TIMER_G): Transition(_S.COMPLETED, (_D.RESEND_RESPONSE, _D.REARM)),
        (_S.COMPLETED, _E.TIMER_H): Transition(_S.TERMINATED, (_D.INFORM_TIMEOUT,)),
        (_S.COMPLETED, _E.TRANSPORT_ERROR): Transition(_S.COMPLETED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _E.ACK): Transition(_S.CONFIRMED, (_D.ABSORB,)),
        # 17.2.1: Confirmed exists "to absorb any additional ACK messages".
        (_S.CONFIRMED, _E.ACK): Transition(_S.CONFIRMED, (_D.ABSORB,)),
        (_S.CONFIRMED, _E.TIMER_I): Transition(_S.TERMINATED),
        (_S.ACCEPTED, _E.REQUEST): Transition(_S.ACCEPTED, (_D.ABSORB,)),
        (_S.ACCEPTED, _E.ACK): Transition(_S.ACCEPTED, (_D.TO_TU,)),
        (_S.ACCEPTED, _E.TU_2XX): Transition(_S.ACCEPTED, (_D.SEND_RESPONSE,)),
        (_S.ACCEPTED, _E.TRANSPORT_ERROR): Transition(_S.ACCEPTED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.ACCEPTED, _E.TIMER_L): Transition(_S.TERMINATED),
    }
)

# RFC 3261 Figure 8 (non-INVITE server transaction, 17.2.2).
NON_INVITE_SERVER_TABLE: Final[Mapping[tuple[State, Event], Transition]] = MappingProxyType(
    {
        # 17.2.2: "any further request retransmissions are discarded" in Trying.
        (_S.TRYING, _E.REQUEST): Transition(_S.TRYING, (_D.ABSORB,)),
        (_S.TRYING, _E.TU_1XX): Transition(_S.PROCEEDING, (_D.SEND_RESPONSE,)),
        (_S.TRYING, _E.TU_2XX): Transition(_S.COMPLETED, (_D.SEND_RESPONSE,)),
        (_S.TRYING, _E.TU_300_699): Transition(_S.COMPLETED, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.REQUEST): Transition(_S.PROCEEDING, (_D.RESEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_1XX): Transition(_S.PROCEEDING, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_2XX): Transition(_S.COMPLETED, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TU_300_699): Transition(_S.COMPLETED, (_D.SEND_RESPONSE,)),
        (_S.PROCEEDING, _E.TRANSPORT_ERROR): Transition(
            _S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)
        ),
        (_S.COMPLETED, _E.REQUEST): Transition(_S.COMPLETED, (_D.RESEND_RESPONSE,)),
        (_S.COMPLETED, _E.TRANSPORT_ERROR): Transition(_S.TERMINATED, (_D.INFORM_TRANSPORT_ERROR,)),
        (_S.COMPLETED, _E.TIMER_J): Transition(_S.TERMINATED),
    }
)


# -- matching (17.1.3, 17.2.3, 9.2) ------------------------------------------------------

TransactionKey: TypeAlias = tuple[str, ...]
"""A hashable transaction identity; the first element says which rule built it
(``"client"``, ``"server"`` for RFC 3261 branches, ``"2543"`` for the fallback)."""


def is_rfc3261_branch(branch: str | None) -> bool:
    """True for a branch an RFC 3261 element made unique: the cookie and more (8.1.1.7).

    A branch that is exactly the cookie (RFC 4475 3.2.1 ``badbranch``) carries
    no unique part, so it is matched the RFC 2543 way.
    """
    return (
        branch is not None and len(branch) > len(MAGIC_COOKIE) and branch.startswith(MAGIC_COOKIE)
    )


def is_reliable_transport(transport: str) -> bool:
    """Whether a Via transport retransmits on its own (no Timers A, E, G)."""
    return transport.upper() in _RELIABLE_TRANSPORTS


def client_key(message: Message) -> TransactionKey | None:
    """The client transaction key of a response, or of the request that makes one (17.1.3).

    The top Via branch plus the CSeq method: a CANCEL shares its INVITE's
    branch but is its own transaction, told apart by the method. A response
    whose CSeq says ACK matches nothing (ACK has no client transaction).
    ``None`` when the message has no top Via branch or CSeq. Raises
    :class:`~sipwarden.errors.RemoteProtocolError` when those headers are malformed.
    """
    via = message.top_via
    if via is None:
        return None
    branch = via.branch
    if not branch:
        return None
    if isinstance(message, Request):
        method = message.method
    else:
        cseq = message.cseq
        if cseq is None:
            return None
        method = cseq.method
    return ("client", branch, method)


def server_key(request: Request) -> TransactionKey | None:
    """The server transaction key of a request (17.2.3); ACK keys to its INVITE.

    RFC 3261 branch: (branch, sent-by, method). Otherwise the RFC 2543 rule:
    Call-ID, From tag, CSeq number, method and the top Via's identity; the
    Request-URI and To tag that rule also compares are checked by
    :meth:`ServerTransaction.matches` (they cannot be part of the key: the
    ACK's To tag is the one the server's response added). ``None`` when the
    request lacks what the rule needs.
    """
    method = request.method
    return _server_key(request, "INVITE" if method == "ACK" else method)


def cancel_key(cancel: Request) -> TransactionKey | None:
    """The key of the transaction a CANCEL cancels (9.2): its own key with method INVITE."""
    if cancel.method != "CANCEL":
        raise LocalProtocolError(f"cancel_key() needs a CANCEL, not {cancel.method}")
    return _server_key(cancel, "INVITE")


def server_key_of_response(response: Response) -> TransactionKey | None:
    """The key of the server transaction that sent ``response`` (a monitor's view).

    A response carries its request's Via list and CSeq (8.2.6.2), so it leads
    back to the server transaction that an observed request created.
    """
    cseq = response.cseq
    if cseq is None:
        return None
    return _server_key(response, cseq.method)


def _server_key(message: Message, method: str) -> TransactionKey | None:
    via = message.top_via
    if via is None:
        return None
    branch = via.branch
    if is_rfc3261_branch(branch):
        assert branch is not None
        return ("server", branch, _sent_by(via), method)
    # RFC 2543 fallback (17.2.3, last paragraphs).
    cseq = message.cseq
    call_id = message.call_id
    from_ = message.from_
    if cseq is None or call_id is None or from_ is None:
        return None
    return ("2543", call_id, from_.tag or "", str(cseq.seq), method, _via_identity(via))


def _sent_by(via: Via) -> str:
    # Host names compare case-insensitively (RFC 3261 19.1.4); the port as written.
    host = via.host.lower()
    return host if via.port is None else f"{host}:{via.port}"


def _via_identity(via: Via) -> str:
    # "the top Via header field match[es]" (17.2.3). received/rport are left
    # out: the server's transport adds them (18.2.1), so the response a monitor
    # sees carries them while the request did not.
    return f"{via.protocol.upper()}/{via.version}/{via.transport} {_sent_by(via)};{via.branch}"


def _tag(address: NameAddr | None) -> str | None:
    return None if address is None else address.tag


# -- the machines ------------------------------------------------------------------------

Listener: TypeAlias = Callable[["Transaction"], None]


class Transaction:
    """What the four machines share: state, timers, the dispatch through the table.

    Not instantiated directly; use :func:`client_transaction` /
    :func:`server_transaction` or the concrete classes.
    """

    __slots__ = (
        "_deadlines",
        "_intervals",
        "_listener",
        "_scheduled",
        "_uid",
        "created_at",
        "key",
        "last_response",
        "reliable",
        "request",
        "state",
        "timers",
    )

    FIGURE: ClassVar[str]
    TABLE: ClassVar[Mapping[tuple[State, Event], Transition]]
    INITIAL: ClassVar[State]
    # Timers started on entering a state, and timers a state keeps running from
    # the state before (17.1.2.2: E and F carry on from Trying into Proceeding).
    STARTS: ClassVar[Mapping[State, tuple[Timer, ...]]]
    KEEPS: ClassVar[Mapping[State, frozenset[Timer]]] = MappingProxyType({})

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        key = self._key_of(request)
        if key is None:
            raise LocalProtocolError(
                f"{request.method} lacks the Via/CSeq (and for RFC 2543, Call-ID/From) "
                "a transaction is keyed by (RFC 3261 17.1.3, 17.2.3)"
            )
        self.key: TransactionKey = key
        self.request = request
        self.state = self.INITIAL
        if reliable is None:
            via = request.top_via
            reliable = via is not None and is_reliable_transport(via.transport)
        self.reliable = reliable
        self.timers = timers
        self.created_at = now
        self.last_response: Response | None = None
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}
        self._listener: Listener | None = None
        self._scheduled = inf  # earliest deadline the owning table has queued
        self._uid = 0
        self._start_timers(self.INITIAL, now)

    @staticmethod
    def _key_of(request: Request) -> TransactionKey | None:
        raise NotImplementedError

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- timers (aioquic shape) -------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must be called, or ``None``."""
        return min(self._deadlines.values()) if self._deadlines else None

    def timer_deadline(self, timer: Timer) -> float | None:
        """When ``timer`` fires, or ``None`` when it is not armed."""
        return self._deadlines.get(timer)

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` (earliest first; on a tie, timeouts first)."""
        actions: list[Action] = []
        while True:
            due = [
                (deadline, timer) for timer, deadline in self._deadlines.items() if deadline <= now
            ]
            if not due:
                break
            # On equal deadlines a timeout wins over a retransmission: there is
            # no point sending once more what is about to be given up.
            _, timer = min(due, key=lambda item: (item[0], item[1] in RETRANSMISSION_TIMERS))
            del self._deadlines[timer]
            self._step(_TIMER_EVENT[timer], now, None, actions, timer)
        self._changed()
        return actions

    def transport_error(self, now: float) -> list[Action]:
        """The transport failed to send this transaction's message (17.1.4, 17.2.4)."""
        return self._handle(Event.TRANSPORT_ERROR, now, None)

    # -- the engine ---------------------------------------------------------------------

    def _handle(self, event: Event, now: float, message: Message | None) -> list[Action]:
        actions: list[Action] = []
        self._step(event, now, message, actions, None)
        self._changed()
        return actions

    def _step(
        self,
        event: Event,
        now: float,
        message: Message | None,
        actions: list[Action],
        timer: Timer | None,
    ) -> None:
        transition = self.TABLE.get((self.state, event))
        if transition is None:
            actions.append(Ignored(state=self.state, event=event, message=message))
            return
        for do in transition.do:
            self._perform(do, event, now, message, actions, timer)
        if transition.target is not self.state:
            self._enter(transition.target, now, actions)

    def _perform(  # noqa: PLR0917 - internal, called from _step only
        self,
        do: Do,
        event: Event,
        now: float,
        message: Message | None,
        actions: list[Action],
        timer: Timer | None,
    ) -> None:
        match do:
            case Do.TO_TU:
                assert message is not None
                actions.append(PassToTU(message=message))
            case Do.RETRANSMIT:
                actions.append(Retransmit(message=self.request, timer=timer))
            case Do.REARM:
                assert timer is not None
                self._rearm(timer, now)
            case Do.SEND_RESPONSE:
                assert isinstance(message, Response)
                self.last_response = message
                actions.append(SendResponse(response=message))
            case Do.RESEND_RESPONSE:
                if self.last_response is None:
                    # 17.2.1/17.2.2: resend "the most recent provisional
                    # response"; before there is one there is nothing to send.
                    assert message is not None
                    actions.append(
                        Absorbed(message=message, state=self.state, reason="no response yet")
                    )
                else:
                    actions.append(Retransmit(message=self.last_response, timer=timer))
            case Do.SEND_ACK:
                assert isinstance(message, Response)
                actions.append(self._ack_for(message))
            case Do.INFORM_TIMEOUT:
                assert timer is not None
                actions.append(Timeout(timer=timer))
            case Do.INFORM_TRANSPORT_ERROR:
                actions.append(TransportFailed(state=self.state))
            case Do.ABSORB:
                assert message is not None
                actions.append(Absorbed(message=message, state=self.state, reason=event.value))

    def _ack_for(self, response: Response) -> SendAck:
        raise LocalProtocolError(f"{type(self).__name__} does not send ACKs")

    def _rearm(self, timer: Timer, now: float) -> None:
        interval = self._intervals.get(timer, self.timers.t1)
        if timer is Timer.E and self.state is State.PROCEEDING:
            # 17.1.2.2: "If Timer E fires while in the Proceeding state ... Timer
            # E MUST be reset with a value of T2 seconds."
            interval = self.timers.t2
        else:
            interval = self.timers.backoff(timer, interval)
        self._intervals[timer] = interval
        self._deadlines[timer] = now + interval

    def _enter(self, state: State, now: float, actions: list[Action]) -> None:
        previous = self.state
        self.state = state
        if state is State.TERMINATED:
            self._deadlines.clear()
            actions.append(Terminated(previous=previous))
            return
        kept = self.KEEPS.get(state, frozenset())
        for timer in [t for t in self._deadlines if t not in kept]:
            del self._deadlines[timer]
        for timer in self._start_timers(state, now):
            # A zero duration (D, I, J, K on reliable transports) fires at once.
            if self.state is state:
                self._step(_TIMER_EVENT[timer], now, None, actions, timer)

    def _start_timers(self, state: State, now: float) -> list[Timer]:
        immediate: list[Timer] = []
        for timer in self.STARTS.get(state, ()):
            duration = self.timers.duration(timer, reliable=self.reliable)
            if duration is None:
                continue
            if duration <= 0:
                immediate.append(timer)
                continue
            self._intervals[timer] = duration
            self._deadlines[timer] = now + duration
        return immediate

    def _changed(self) -> None:
        if self._listener is not None:
            self._listener(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {self.key}>"


class ClientTransaction(Transaction):
    """A client transaction: created when the TU sends a request (17.1).

    The caller transmits :attr:`request` once after creating the transaction;
    the transaction asks for every retransmission through :class:`Retransmit`.
    """

    __slots__ = ()

    @staticmethod
    def _key_of(request: Request) -> TransactionKey | None:
        if not is_rfc3261_branch(request.top_via.branch if request.top_via else None):
            # 8.1.1.7: what we send carries an RFC 3261 branch; a client
            # transaction is matched by nothing else (17.1.3).
            return None
        return client_key(request)

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """A response matched this transaction (17.1.3)."""
        status = response.status
        if status < 200:
            event = Event.RECV_1XX
        elif status < 300:
            event = Event.RECV_2XX
        else:
            event = Event.RECV_300_699
        actions = self._handle(event, now, response)
        if not any(isinstance(action, Ignored) for action in actions):
            self.last_response = response
        return actions


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 Figure 5 with RFC 6026's Accepted state."""

    __slots__ = ("ack",)

    FIGURE = "RFC 3261 Figure 5 (17.1.1), RFC 6026 7.2"
    TABLE = INVITE_CLIENT_TABLE
    INITIAL = State.CALLING
    STARTS = MappingProxyType(
        {
            State.CALLING: (Timer.A, Timer.B),
            State.COMPLETED: (Timer.D,),
            State.ACCEPTED: (Timer.M,),
        }
    )

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"an INVITE client transaction cannot send {request.method}")
        for name in ("from", "to", "call-id", "cseq"):
            # 17.1.1.3 copies these into the ACK; a request we send always has them.
            if request.headers.get(name) is None:
                raise LocalProtocolError(f"the INVITE has no {name} header (RFC 3261 8.1.1)")
        super().__init__(request, now=now, reliable=reliable, timers=timers)
        self.ack: Request | None = None

    def _ack_for(self, response: Response) -> SendAck:
        # 17.1.1.3: one ACK per transaction, resent for every retransmitted final.
        if self.ack is not None:
            return SendAck(ack=self.ack, retransmission=True)
        self.ack = build_ack(self.request, response)
        return SendAck(ack=self.ack)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 Figure 6."""

    __slots__ = ()

    FIGURE = "RFC 3261 Figure 6 (17.1.2)"
    TABLE = NON_INVITE_CLIENT_TABLE
    INITIAL = State.TRYING
    STARTS = MappingProxyType(
        {
            State.TRYING: (Timer.E, Timer.F),
            State.COMPLETED: (Timer.K,),
        }
    )
    KEEPS = MappingProxyType({State.PROCEEDING: frozenset({Timer.E, Timer.F})})

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{request.method} has no non-INVITE client transaction")
        super().__init__(request, now=now, reliable=reliable, timers=timers)


class ServerTransaction(Transaction):
    """A server transaction: created when a request arrives that matched none (17.2).

    ``observer=True`` is for a passive monitor, where the TU's responses are a
    watched peer's: a response the figure has no arrow for is reported as
    :class:`Ignored` (or :class:`Absorbed`, for a retransmitted final) instead
    of raising :class:`~sipwarden.errors.LocalProtocolError`.
    """

    __slots__ = ("observer",)

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
        observer: bool = False,
    ) -> None:
        if request.method == "ACK":
            raise LocalProtocolError("an ACK never creates a server transaction (17.2.3)")
        super().__init__(request, now=now, reliable=reliable, timers=timers)
        self.observer = observer

    @staticmethod
    def _key_of(request: Request) -> TransactionKey | None:
        return server_key(request)

    def matches(self, request: Request) -> bool:
        """The parts of 17.2.3's RFC 2543 rule that the key leaves out.

        Request-URI and To tag: a retransmission carries the original's To
        tag; an ACK carries the tag of the response this transaction sent.
        Always true for RFC 3261 keys (branch, sent-by and method decide).
        """
        if self.key[0] != "2543":
            return True
        if request.uri != self.request.uri:
            return False
        to_tag = _tag(request.to)
        if request.method == "ACK":
            sent = self.last_response
            return sent is not None and to_tag == _tag(sent.to)
        return to_tag == _tag(self.request.to)

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A retransmission of the request, or an ACK, matched this transaction (17.2.3)."""
        event = Event.ACK if request.method == "ACK" else Event.REQUEST
        return self._handle(event, now, request)

    def send_response(self, response: Response, now: float) -> list[Action]:
        """The TU hands over a response; the actions say what to transmit.

        Raises :class:`~sipwarden.errors.LocalProtocolError` when the figure has
        no arrow for it (a second final response, a provisional after the
        final), unless the transaction is an ``observer``.
        """
        status = response.status
        if status < 200:
            event = Event.TU_1XX
        elif status < 300:
            event = Event.TU_2XX
        else:
            event = Event.TU_300_699
        if (self.state, event) not in self.TABLE:
            if not self.observer:
                raise LocalProtocolError(
                    f"{type(self).__name__} in {self.state.value} cannot send a {status} "
                    f"({self.FIGURE} has no arrow for {event.value})"
                )
            last = self.last_response
            if last is not None and last.status == status:
                # The watched server retransmitting its final response (Timer G).
                actions: list[Action] = [
                    Absorbed(message=response, state=self.state, reason="response retransmission")
                ]
                self._changed()
                return actions
        return self._handle(event, now, response)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 Figure 7 with RFC 6026's Accepted state.

    The TU sends 100 (Trying) itself when it will not answer within 200 ms
    (17.2.1); the transaction does not build responses.
    """

    __slots__ = ()

    FIGURE = "RFC 3261 Figure 7 (17.2.1), RFC 6026 7.1"
    TABLE = INVITE_SERVER_TABLE
    INITIAL = State.PROCEEDING
    STARTS = MappingProxyType(
        {
            State.COMPLETED: (Timer.G, Timer.H),
            State.CONFIRMED: (Timer.I,),
            State.ACCEPTED: (Timer.L,),
        }
    )

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
        observer: bool = False,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"an INVITE server transaction cannot serve {request.method}")
        super().__init__(request, now=now, reliable=reliable, timers=timers, observer=observer)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 Figure 8."""

    __slots__ = ()

    FIGURE = "RFC 3261 Figure 8 (17.2.2)"
    TABLE = NON_INVITE_SERVER_TABLE
    INITIAL = State.TRYING
    STARTS = MappingProxyType({State.COMPLETED: (Timer.J,)})

    def __init__(
        self,
        request: Request,
        *,
        now: float,
        reliable: bool | None = None,
        timers: Timers = DEFAULT_TIMERS,
        observer: bool = False,
    ) -> None:
        if request.method == "INVITE":
            raise LocalProtocolError("INVITE has an INVITE server transaction")
        super().__init__(request, now=now, reliable=reliable, timers=timers, observer=observer)


def client_transaction(
    request: Request,
    *,
    now: float,
    reliable: bool | None = None,
    timers: Timers = DEFAULT_TIMERS,
) -> ClientTransaction:
    """The client transaction for a request we send (INVITE or not).

    ``reliable=None`` reads the transport from the top Via.
    """
    if request.method == "INVITE":
        return InviteClientTransaction(request, now=now, reliable=reliable, timers=timers)
    return NonInviteClientTransaction(request, now=now, reliable=reliable, timers=timers)


def server_transaction(
    request: Request,
    *,
    now: float,
    reliable: bool | None = None,
    timers: Timers = DEFAULT_TIMERS,
    observer: bool = False,
) -> ServerTransaction:
    """The server transaction for a request that matched none (INVITE or not)."""
    if request.method == "INVITE":
        return InviteServerTransaction(
            request, now=now, reliable=reliable, timers=timers, observer=observer
        )
    return NonInviteServerTransaction(
        request, now=now, reliable=reliable, timers=timers, observer=observer
    )


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``invite`` (RFC 3261 17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, method ACK;
    To from the response (it carries the UAS's tag); exactly one Via, the
    INVITE's top one; the INVITE's Route header fields.
    """
    source = invite.headers
    headers = Headers(strict=source.strict)
    vias = source.values("via")
    if not vias:
        raise LocalProtocolError("the INVITE has no Via to copy into the ACK")
    cseq = invite.cseq
    if cseq is None:
        raise LocalProtocolError("the INVITE has no CSeq to copy into the ACK")
    headers.add("Via", vias[0])
    headers.add("Max-Forwards", "70")
    for route in source.get_all("route"):
        headers.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        value = (response.headers.get(name) if name == "To" else None) or source.get(name)
        if value is None:
            raise LocalProtocolError(f"the INVITE has no {name} to copy into the ACK")
        headers.add(name, value)
    headers.add("CSeq", f"{cseq.seq} ACK")
    headers.add("Content-Length", "0")
    return Request("ACK", invite.uri, headers=headers)


# -- the table ---------------------------------------------------------------------------


class TransactionActions(NamedTuple):
    """What :meth:`TransactionTable.expire` reports for one transaction."""

    transaction: Transaction
    actions: list[Action]


class TransactionTable:
    """Transactions by key, bounded in number and age, driven with ``now``.

    Bounds (DESIGN: everything bounded):

    * a transaction is removed the moment it reaches Terminated (17.1.1.2:
      "destroyed the instant it enters the Terminated state");
    * :meth:`expire` drops transactions older than ``max_age`` (a peer that
      vanished while we were in Proceeding), reporting :class:`Evicted`;
    * :meth:`add` on a full table first drops over-age transactions, then
      evicts the oldest (creation order). A flood therefore costs at most
      ``max_entries`` transactions, and what it pushes out is counted in
      :attr:`evicted`.

    Timers: :meth:`get_timer` is the earliest deadline over all transactions
    (a heap, so the table wakes up once per deadline, not once per entry);
    :meth:`expire` (alias :meth:`handle_timer`) fires what is due.
    """

    __slots__ = ("_entries", "_heap", "_next_uid", "evicted", "max_age", "max_entries")

    def __init__(
        self, *, max_entries: int = MAX_TRANSACTIONS, max_age: float = MAX_TRANSACTION_AGE
    ) -> None:
        if max_entries < 1:
            raise ConfigError(f"must be at least 1, not {max_entries}", key_path="max_entries")
        if not max_age > 0:
            raise ConfigError(f"must be > 0, not {max_age}", key_path="max_age")
        self.max_entries = max_entries
        self.max_age = max_age
        self.evicted = 0
        self._entries: dict[TransactionKey, Transaction] = {}
        self._heap: list[tuple[float, int, TransactionKey]] = []
        self._next_uid = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._entries.values()))

    def __contains__(self, transaction: object) -> bool:
        return (
            isinstance(transaction, Transaction)
            and self._entries.get(transaction.key) is transaction
        )

    def get(self, key: TransactionKey) -> Transaction | None:
        return self._entries.get(key)

    # -- adding and removing -----------------------------------------------------------

    def add(self, transaction: Transaction, now: float) -> list[Transaction]:
        """Hold ``transaction`` under its key; returns the transactions this pushed out.

        A transaction already under the same key is replaced (and returned):
        the caller matched first, so this only happens when matching cannot
        tell two requests apart (RFC 2543 requests differing in Request-URI or
        To tag only, or a forged branch); the newer request wins.
        """
        if transaction.terminated:
            raise LocalProtocolError("a terminated transaction is not kept")
        if transaction._listener is not None:
            raise LocalProtocolError("the transaction is already in a table")
        pushed_out: list[Transaction] = []
        existing = self._entries.get(transaction.key)
        if existing is not None:
            self._drop(existing)
            pushed_out.append(existing)
        if len(self._entries) >= self.max_entries:
            pushed_out.extend(self._drop_over_age(now))
        while len(self._entries) >= self.max_entries:
            oldest = next(iter(self._entries.values()))
            self._drop(oldest)
            pushed_out.append(oldest)
        self.evicted += len(pushed_out)
        self._next_uid += 1
        transaction._uid = self._next_uid
        transaction._scheduled = inf
        transaction._listener = self._reschedule
        self._entries[transaction.key] = transaction
        self._reschedule(transaction)
        return pushed_out

    def remove(self, transaction: Transaction) -> None:
        """Forget ``transaction`` (no-op when it is not held)."""
        if self._entries.get(transaction.key) is transaction:
            self._drop(transaction)

    def _drop(self, transaction: Transaction) -> None:
        del self._entries[transaction.key]
        transaction._listener = None

    def _drop_over_age(self, now: float) -> list[Transaction]:
        dropped: list[Transaction] = []
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.created_at + self.max_age > now:
                break
            self._drop(oldest)
            dropped.append(oldest)
        return dropped

    def _reschedule(self, transaction: Transaction) -> None:
        # Called by the transaction after every input it handled.
        if transaction.terminated:
            self.remove(transaction)
            return
        deadline = transaction.get_timer()
        if deadline is not None and deadline < transaction._scheduled:
            heapq.heappush(self._heap, (deadline, transaction._uid, transaction.key))
            transaction._scheduled = deadline
            if len(self._heap) > 2 * len(self._entries) + 64:
                self._compact()

    def _prune(self) -> None:
        # Pop stale entries off the top of the heap, so the earliest entry is a
        # real deadline: a transaction that left, or whose timer moved later
        # (requeued at its current deadline) or was cancelled.
        # (self._heap is read afresh each turn: rescheduling may compact it.)
        while self._heap:
            queued, uid, key = self._heap[0]
            transaction = self._entries.get(key)
            heapq.heappop(self._heap)
            if transaction is not None and transaction._uid == uid:
                current = transaction.get_timer()
                if current is not None and current <= queued:
                    heapq.heappush(self._heap, (queued, uid, key))
                    return
                transaction._scheduled = inf
                self._reschedule(transaction)

    def _compact(self) -> None:
        # Stale heap entries (deadlines that moved, transactions that left)
        # are skipped lazily; rebuilding bounds their number.
        heap: list[tuple[float, int, TransactionKey]] = []
        for transaction in self._entries.values():
            deadline = transaction.get_timer()
            transaction._scheduled = inf if deadline is None else deadline
            if deadline is not None:
                heap.append((deadline, transaction._uid, transaction.key))
        heapq.heapify(heap)
        self._heap = heap

    # -- matching -------------------------------------------------------------------------

    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction ``request`` belongs to (17.2.3): a retransmission or an ACK.

        ``None`` means a new request: the caller creates a server transaction
        (or, for an ACK, hands it to the TU: the ACK for a 2xx is its own
        transaction with a new branch, 17.1.1.3).
        """
        key = server_key(request)
        if key is None:
            return None
        transaction = self._entries.get(key)
        if isinstance(transaction, ServerTransaction) and transaction.matches(request):
            return transaction
        return None

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction ``response`` answers (17.1.3), or ``None`` (a stray)."""
        key = client_key(response)
        if key is None:
            return None
        transaction = self._entries.get(key)
        return transaction if isinstance(transaction, ClientTransaction) else None

    def match_server_response(self, response: Response) -> ServerTransaction | None:
        """The server transaction that sent ``response`` (for a monitor watching both ways)."""
        key = server_key_of_response(response)
        if key is None:
            return None
        transaction = self._entries.get(key)
        return transaction if isinstance(transaction, ServerTransaction) else None

    def match_cancel(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL cancels (9.2), or ``None``.

        The CANCEL's own server transaction is a separate one, matched by
        :meth:`match_request` like any request.
        """
        key = cancel_key(cancel)
        if key is None:
            return None
        transaction = self._entries.get(key)
        if isinstance(transaction, InviteServerTransaction) and transaction.matches(cancel):
            return transaction
        return None

    # -- time -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest time :meth:`expire` has something to do, or ``None``."""
        self._prune()
        deadline = self._heap[0][0] if self._heap else None
        if self._entries:
            oldest = next(iter(self._entries.values())).created_at + self.max_age
            deadline = oldest if deadline is None else min(deadline, oldest)
        return deadline

    def expire(self, now: float) -> list[TransactionActions]:
        """Fire due timers, drop what terminated or outlived ``max_age``; report it all.

        The gateway transmits the :class:`Retransmit`/:class:`SendAck` actions
        and tells its TU about :class:`Timeout`; a monitor records them.
        """
        results: list[TransactionActions] = [
            TransactionActions(transaction, [Evicted(reason="max_age")])
            for transaction in self._drop_over_age(now)
        ]
        self.evicted += len(results)
        # (self._heap is read afresh each turn: rescheduling may compact it.)
        while self._heap and self._heap[0][0] <= now:
            _, uid, key = heapq.heappop(self._heap)
            transaction = self._entries.get(key)
            if transaction is None or transaction._uid != uid:
                continue  # it left the table, or the key was reused
            transaction._scheduled = inf
            actions = transaction.handle_timer(now)  # reschedules or removes itself
            if actions:
                results.append(TransactionActions(transaction, actions))
        return results

    handle_timer = expire
