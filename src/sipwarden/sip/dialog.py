"""SIP dialogs (RFC 3261 12): identity, early/confirmed state, route set, CSeq order, a table.

A dialog is the peer-to-peer relationship an INVITE creates with each UAS that
answers it with a tagged 1xx or a 2xx (12.1); forking creates one early dialog
per answering UAS, all sharing the Call-ID and the caller's tag. Its state
machine is one mapping, :data:`DIALOG_TABLE`, ``(DialogState, DialogEvent) ->
DialogState``; a pair that is not in it is dropped and reported
(:attr:`DialogOutcome.ignored`), never raised.

A :class:`Dialog` holds RFC 3261's dialog state as one UA sees it
(:class:`Role`): local and remote tag, URI, CSeq and target, and the route set
(the Record-Route of the request, reversed on the UAC side: 12.1.1, 12.1.2).
It also works out who sent a message from its From tag, so an element in the
middle -- the gateway, or the monitor that sees both directions -- keeps one
dialog per call leg, viewed from the caller's side by default.

:class:`DialogTable` holds dialogs bounded in number and lifetime and answers
"which dialog is this?" from either direction: it is what out-of-state
detection asks about a BYE, a re-INVITE or a response.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from math import inf
from types import MappingProxyType
from typing import Final, NamedTuple

from sipwarden.errors import ConfigError, LocalProtocolError, RemoteProtocolError

from .message import Message, Request, Response
from .timers import DEFAULT_TIMERS, Timers
from .uri import NameAddr

__all__ = [
    "DIALOG_IDLE_TIMEOUT",
    "DIALOG_METHODS",
    "DIALOG_TABLE",
    "MAX_DIALOGS",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogEvent",
    "DialogId",
    "DialogOutcome",
    "DialogState",
    "DialogTable",
    "Role",
    "creates_dialog",
]

# RFC 3261 12.1: "only 2xx and 101-199 responses with a To tag, where the
# request was INVITE, will establish a dialog". SUBSCRIBE and REFER create
# dialogs too (RFC 6665, RFC 3515); a table can be told to track them.
DIALOG_METHODS: Final = frozenset({"INVITE"})
# Requests whose Contact replaces the remote target (RFC 3261 12.2: re-INVITE;
# RFC 3311: UPDATE; RFC 6665: SUBSCRIBE and NOTIFY).
TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
# Bounds of a DialogTable. A dialog holds a few short strings (tags, URIs,
# route set), well under 2 KiB, so the default costs at most ~100 MiB.
MAX_DIALOGS: Final = 65536
# A confirmed dialog that carries no request for this long is assumed dead (its
# BYE was lost, or the peer crashed). Long enough for a long call without
# session timers (RFC 4028 refreshes far more often, 1800 s by default).
DIALOG_IDLE_TIMEOUT: Final = 4 * 3600.0


class Role(enum.Enum):
    """Whose view of the dialog ``local`` and ``remote`` describe (RFC 3261 12.1)."""

    UAC = "UAC"  # the caller: the party that sent the dialog-creating request
    UAS = "UAS"  # the callee: the party that answered it


class DialogState(enum.Enum):
    EARLY = "Early"  # created by a tagged 101-199 (12.1)
    CONFIRMED = "Confirmed"  # created or confirmed by a 2xx (12.1, 13.2.2.4)
    TERMINATED = "Terminated"


class DialogEvent(enum.Enum):
    """What happens to a dialog; the columns of :data:`DIALOG_TABLE`."""

    PROVISIONAL = "101-199 to the initial request"
    SUCCESS = "2xx to the initial request"
    FAILURE = "300-699 to the initial request"
    REQUEST = "in-dialog request"
    ACK = "ACK"
    BYE = "BYE"
    RESPONSE = "response to an in-dialog request"
    ENDING_RESPONSE = "481 or 408 to an in-dialog request"
    EXPIRED = "timeout"


_DS = DialogState
_DE = DialogEvent

# RFC 3261 12 (12.1 creation, 12.2 in-dialog requests, 12.3 termination), 13.2.2.4
# (a 2xx confirms an early dialog), 15 (BYE) and 12.2.1.2 (481/408 end the dialog;
# RFC 5057 5.1 says a 481 ends the dialog usage, the only usage tracked here).
DIALOG_TABLE: Final[Mapping[tuple[DialogState, DialogEvent], DialogState]] = MappingProxyType(
    {
        (_DS.EARLY, _DE.PROVISIONAL): _DS.EARLY,
        (_DS.EARLY, _DE.SUCCESS): _DS.CONFIRMED,
        # 12.3: a non-2xx final response ends every early dialog of the request.
        (_DS.EARLY, _DE.FAILURE): _DS.TERMINATED,
        # PRACK (RFC 3262), UPDATE (RFC 3311), INFO run inside early dialogs.
        (_DS.EARLY, _DE.REQUEST): _DS.EARLY,
        (_DS.EARLY, _DE.RESPONSE): _DS.EARLY,
        # 15: "The caller's UA MAY send a BYE for either confirmed or early dialogs".
        (_DS.EARLY, _DE.BYE): _DS.TERMINATED,
        (_DS.EARLY, _DE.ENDING_RESPONSE): _DS.TERMINATED,
        (_DS.EARLY, _DE.EXPIRED): _DS.TERMINATED,
        # A 1xx overtaken by its 2xx on an unreliable transport.
        (_DS.CONFIRMED, _DE.PROVISIONAL): _DS.CONFIRMED,
        # 13.3.1.4: the UAS retransmits the 2xx until the ACK arrives.
        (_DS.CONFIRMED, _DE.SUCCESS): _DS.CONFIRMED,
        (_DS.CONFIRMED, _DE.REQUEST): _DS.CONFIRMED,
        (_DS.CONFIRMED, _DE.ACK): _DS.CONFIRMED,
        (_DS.CONFIRMED, _DE.RESPONSE): _DS.CONFIRMED,
        (_DS.CONFIRMED, _DE.BYE): _DS.TERMINATED,
        (_DS.CONFIRMED, _DE.ENDING_RESPONSE): _DS.TERMINATED,
        (_DS.CONFIRMED, _DE.EXPIRED): _DS.TERMINATED,
        # While a terminated dialog lingers, the stragglers of its last
        # exchange are absorbed: a retransmitted BYE, or the other party's BYE
        # when both hung up at once, the BYE's response, a late ACK or 2xx.
        (_DS.TERMINATED, _DE.BYE): _DS.TERMINATED,
        (_DS.TERMINATED, _DE.ACK): _DS.TERMINATED,
        (_DS.TERMINATED, _DE.RESPONSE): _DS.TERMINATED,
        (_DS.TERMINATED, _DE.ENDING_RESPONSE): _DS.TERMINATED,
        (_DS.TERMINATED, _DE.SUCCESS): _DS.TERMINATED,
    }
)


class DialogId(NamedTuple):
    """RFC 3261 12: Call-ID, local tag, remote tag (as the dialog's :class:`Role` sees them)."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogOutcome:
    """What one message (or a timeout) did to a dialog.

    ``from_local`` says who sent the message's request: the local party
    (True), the remote one (False), or nobody (None, a timeout). ``ignored``
    means the table has no row for (``previous``, ``event``): the message was
    out of state and changed nothing. ``status`` is what a UAS answers instead
    of processing the request: 500 for a CSeq out of order (12.2.2), 481 for a
    request in a dialog that is over.
    """

    dialog: Dialog
    event: DialogEvent
    previous: DialogState
    state: DialogState
    from_local: bool | None
    created: bool = False
    ignored: bool = False
    status: int | None = None
    reason: str = ""


def _tag(address: NameAddr | None) -> str | None:
    return None if address is None else address.tag


def _contact_uri(message: Message) -> str | None:
    # The target is the first Contact's URI (12.1.1, 12.1.2). A Contact that
    # does not parse leaves the target unknown rather than dropping the
    # dialog: the defect is the parser's to report.
    try:
        contacts = message.contact
    except RemoteProtocolError:
        return None
    return str(contacts[0].uri) if contacts else None


def _is_sips(request: Request | None) -> bool:
    # 12.1.1/12.1.2: secure when the Request-URI is a SIPS URI (and the request
    # came over TLS, which the transport layer, not this module, knows).
    return request is not None and request.uri[:5].lower() == "sips:"


def creates_dialog(response: Response, methods: frozenset[str] = DIALOG_METHODS) -> bool:
    """Whether ``response`` establishes a dialog (RFC 3261 12.1).

    A 2xx to one of ``methods``, or a 101-199 to an INVITE, with a To tag.
    """
    cseq = response.cseq
    status = response.status
    if cseq is None or not 101 <= status < 300 or not _tag(response.to):
        return False
    if status < 200:
        return cseq.method == "INVITE" and "INVITE" in methods
    return cseq.method in methods


class Dialog:
    """RFC 3261 12 dialog state as the :class:`Role` ``role`` sees it.

    Built by :meth:`create` from the response that established it (and the
    request, when the caller has it: the UAS side takes its route set and
    remote target from the request). :meth:`handle_request` and
    :meth:`handle_response` take the dialog's later messages in either
    direction; the From tag tells who sent them.
    """

    __slots__ = (
        "_scheduled",
        "_uid",
        "call_id",
        "confirmed_at",
        "created_at",
        "early_until",
        "expires_at",
        "initial_method",
        "initial_seq",
        "local_seq",
        "local_tag",
        "local_target",
        "local_uri",
        "remote_seq",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "role",
        "route_set",
        "secure",
        "state",
        "terminated_at",
        "updated_at",
    )

    def __init__(
        self,
        *,
        role: Role,
        state: DialogState,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        local_seq: int | None,
        remote_seq: int | None,
        local_target: str | None,
        remote_target: str | None,
        route_set: tuple[str, ...],
        secure: bool,
        initial_method: str,
        initial_seq: int,
        now: float,
    ) -> None:
        self.role = role
        self.state = state
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_target = local_target
        self.remote_target = remote_target
        self.route_set = route_set
        self.secure = secure
        self.initial_method = initial_method
        self.initial_seq = initial_seq
        self.created_at = now
        self.updated_at = now
        self.confirmed_at: float | None = now if state is DialogState.CONFIRMED else None
        self.terminated_at: float | None = None
        # Managed by a DialogTable: when the dialog expires, and the latest an
        # early dialog may live once a sibling fork was answered (13.2.2.4).
        self.expires_at = inf
        self.early_until = inf
        self._scheduled = inf
        self._uid = 0

    @classmethod
    def create(
        cls,
        response: Response,
        *,
        role: Role,
        now: float,
        request: Request | None = None,
        methods: frozenset[str] = DIALOG_METHODS,
    ) -> Dialog:
        """The dialog ``response`` establishes (12.1.1 for the UAS, 12.1.2 for the UAC).

        Raises :class:`~sipwarden.errors.LocalProtocolError` when the response
        creates no dialog (check with :func:`creates_dialog` first).
        """
        if not creates_dialog(response, methods):
            raise LocalProtocolError(
                f"a {response.status} without To tag or to a method outside "
                f"{sorted(methods)} creates no dialog (RFC 3261 12.1)"
            )
        cseq = response.cseq
        call_id = response.call_id
        caller = response.from_
        callee = response.to
        if cseq is None or call_id is None or caller is None or callee is None:
            raise LocalProtocolError("a response without Call-ID, From or CSeq creates no dialog")
        caller_tag = caller.tag or ""  # an RFC 2543 caller may have none (12.1.2)
        callee_tag = callee.tag or ""
        state = DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED
        if role is Role.UAC:
            # 12.1.2: route set = Record-Route of the response, reversed;
            # remote target = the response's Contact.
            return cls(
                role=role,
                state=state,
                call_id=call_id,
                local_tag=caller_tag,
                remote_tag=callee_tag,
                local_uri=str(caller.uri),
                remote_uri=str(callee.uri),
                local_seq=cseq.seq,
                remote_seq=None,
                local_target=None if request is None else _contact_uri(request),
                remote_target=_contact_uri(response),
                route_set=tuple(reversed(response.headers.values("record-route"))),
                secure=_is_sips(request),
                initial_method=cseq.method,
                initial_seq=cseq.seq,
                now=now,
            )
        # 12.1.1: route set = Record-Route of the request, in order (the
        # response copies it, 12.1.1, when the request is not at hand);
        # remote target = the request's Contact.
        source: Message = response if request is None else request
        return cls(
            role=role,
            state=state,
            call_id=call_id,
            local_tag=callee_tag,
            remote_tag=caller_tag,
            local_uri=str(callee.uri),
            remote_uri=str(caller.uri),
            local_seq=None,
            remote_seq=cseq.seq,
            local_target=_contact_uri(response),
            remote_target=None if request is None else _contact_uri(request),
            route_set=tuple(source.headers.values("record-route")),
            secure=_is_sips(request),
            initial_method=cseq.method,
            initial_seq=cseq.seq,
            now=now,
        )

    # -- identity ------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def caller_tag(self) -> str:
        """The From tag of the dialog-creating request, whichever role we play."""
        return self.local_tag if self.role is Role.UAC else self.remote_tag

    @property
    def callee_tag(self) -> str:
        return self.remote_tag if self.role is Role.UAC else self.local_tag

    @property
    def early(self) -> bool:
        return self.state is DialogState.EARLY

    @property
    def confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    # -- messages ------------------------------------------------------------------------

    def handle_request(self, request: Request, now: float) -> DialogOutcome:
        """An in-dialog request, from either party (12.2).

        Checks CSeq order (12.2.2: lower than the last one from the same party
        is out of order, answered with 500) except for ACK and CANCEL, which
        reuse the CSeq number of the request they belong to; updates the
        targets on target refresh requests; a BYE terminates the dialog (15).
        """
        from_local = _tag(request.from_) == self.local_tag
        method = request.method
        if method == "BYE":
            event = DialogEvent.BYE
        elif method == "ACK":
            event = DialogEvent.ACK
        else:
            event = DialogEvent.REQUEST
        previous = self.state
        target = DIALOG_TABLE.get((previous, event))
        if target is None:
            return DialogOutcome(
                dialog=self,
                event=event,
                previous=previous,
                state=previous,
                from_local=from_local,
                ignored=True,
                # 12.2.2: no such dialog (any more): 481. An ACK gets no response.
                status=None if method == "ACK" else 481,
                reason=f"{method} in a {previous.value.lower()} dialog",
            )
        cseq = request.cseq
        if cseq is not None and method not in ("ACK", "CANCEL"):
            last = self.local_seq if from_local else self.remote_seq
            if last is not None and cseq.seq < last:
                return DialogOutcome(
                    dialog=self,
                    event=event,
                    previous=previous,
                    state=previous,
                    from_local=from_local,
                    status=500,
                    reason=f"CSeq {cseq.seq} is lower than the last {last} (RFC 3261 12.2.2)",
                )
            if last is None or cseq.seq > last:
                if from_local:
                    self.local_seq = cseq.seq
                else:
                    self.remote_seq = cseq.seq
        if method in TARGET_REFRESH_METHODS and target is not DialogState.TERMINATED:
            # 12.2.2: the receiver of a target refresh request takes its Contact.
            self._refresh_target(request, sender_is_local=from_local)
        return self._move(event, previous, target, now, from_local)

    def handle_response(self, response: Response, now: float) -> DialogOutcome:
        """A response in this dialog: to the initial request, or to an in-dialog one."""
        from_local_request = _tag(response.from_) == self.local_tag
        cseq = response.cseq
        status = response.status
        initial = (
            cseq is not None
            and cseq.seq == self.initial_seq
            and cseq.method == self.initial_method
            and _tag(response.from_) == self.caller_tag
        )
        if initial:
            if status < 200:
                event = DialogEvent.PROVISIONAL
            elif status < 300:
                event = DialogEvent.SUCCESS
            else:
                event = DialogEvent.FAILURE
        elif status in (408, 481) and (cseq is None or cseq.method != "CANCEL"):
            # 12.2.1.2: "If the response for a request within a dialog is a 481
            # or a 408, the UAC SHOULD terminate the dialog." (A 481 to a
            # CANCEL only means the cancelled transaction is gone.)
            event = DialogEvent.ENDING_RESPONSE
        else:
            event = DialogEvent.RESPONSE
        previous = self.state
        target = DIALOG_TABLE.get((previous, event))
        if target is None:
            return DialogOutcome(
                dialog=self,
                event=event,
                previous=previous,
                state=previous,
                from_local=from_local_request,
                ignored=True,
                reason=f"{status} ({event.value}) in a {previous.value.lower()} dialog",
            )
        if 200 <= status < 300 and target is not DialogState.TERMINATED:
            if event is DialogEvent.SUCCESS and previous is DialogState.EARLY:
                self._confirm(response, now)
            elif cseq is not None and cseq.method in TARGET_REFRESH_METHODS:
                # 12.2.1.2: a 2xx to a target refresh carries the new target.
                self._refresh_target(response, sender_is_local=not from_local_request)
        return self._move(event, previous, target, now, from_local_request)

    def timeout(self, now: float) -> DialogOutcome:
        """The dialog expired without ending (never confirmed, or idle for too long)."""
        previous = self.state
        target = DIALOG_TABLE.get((previous, DialogEvent.EXPIRED))
        if target is None:
            return DialogOutcome(
                dialog=self,
                event=DialogEvent.EXPIRED,
                previous=previous,
                state=previous,
                from_local=None,
                ignored=True,
                reason="already terminated",
            )
        return self._move(DialogEvent.EXPIRED, previous, target, now, None)

    def _move(
        self,
        event: DialogEvent,
        previous: DialogState,
        target: DialogState,
        now: float,
        from_local: bool | None,
    ) -> DialogOutcome:
        self.state = target
        self.updated_at = now
        if target is not previous:
            if target is DialogState.CONFIRMED:
                self.confirmed_at = now
            elif target is DialogState.TERMINATED:
                self.terminated_at = now
        return DialogOutcome(
            dialog=self, event=event, previous=previous, state=target, from_local=from_local
        )

    def _confirm(self, response: Response, now: float) -> None:
        # 13.2.2.4: when a 2xx confirms an early dialog, the UAC recomputes the
        # route set and remote target from the 2xx (12.2.1.2 procedures).
        if self.role is Role.UAC:
            self.route_set = tuple(reversed(response.headers.values("record-route")))
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target
        else:
            target = _contact_uri(response)
            if target is not None:
                self.local_target = target

    def _refresh_target(self, message: Message, *, sender_is_local: bool) -> None:
        target = _contact_uri(message)
        if target is None:
            return
        if sender_is_local:
            self.local_target = target
        else:
            self.remote_target = target

    def __repr__(self) -> str:
        return (
            f"<Dialog {self.role.value} {self.state.value} {self.call_id} "
            f"local={self.local_tag} remote={self.remote_tag}>"
        )


class DialogTable:
    """Dialogs by :class:`DialogId`, bounded, found from either direction.

    ``role`` is the view the table keeps (the caller's, :attr:`Role.UAC`, for
    a proxy or a monitor). Bounds and lifetimes (DESIGN: everything bounded):

    * an early dialog lives ``early_timeout`` past its last message (Timer C,
      3 minutes: a UAS refreshes a ringing call with a provisional every
      minute, 13.3.1.1); once another fork of the same INVITE is answered, at
      most 64*T1 more (13.2.2.4);
    * a confirmed dialog lives ``idle_timeout`` past its last message;
    * a terminated dialog lingers ``linger`` (64*T1) so the stragglers of its
      last exchange still match, then goes;
    * at ``max_dialogs`` a new dialog first evicts the oldest terminated one,
      else the oldest one; :attr:`evicted` counts them.

    Expiry is a heap, so :meth:`get_timer`/:meth:`expire` cost O(log n) per
    deadline, not a scan.
    """

    __slots__ = (
        "_dialogs",
        "_forks",
        "_heap",
        "_next_uid",
        "_terminated",
        "early_timeout",
        "evicted",
        "idle_timeout",
        "linger",
        "max_dialogs",
        "methods",
        "role",
        "timers",
    )

    def __init__(
        self,
        *,
        role: Role = Role.UAC,
        max_dialogs: int = MAX_DIALOGS,
        timers: Timers = DEFAULT_TIMERS,
        early_timeout: float | None = None,
        idle_timeout: float = DIALOG_IDLE_TIMEOUT,
        linger: float | None = None,
        methods: frozenset[str] = DIALOG_METHODS,
    ) -> None:
        if max_dialogs < 1:
            raise ConfigError(f"must be at least 1, not {max_dialogs}", key_path="max_dialogs")
        self.role = role
        self.max_dialogs = max_dialogs
        self.timers = timers
        self.early_timeout = timers.timer_c if early_timeout is None else early_timeout
        self.idle_timeout = idle_timeout
        self.linger = 64 * timers.t1 if linger is None else linger
        for name in ("early_timeout", "idle_timeout", "linger"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"must be >= 0, not {getattr(self, name)!r}", key_path=name)
        self.methods = methods
        self.evicted = 0
        self._dialogs: dict[DialogId, Dialog] = {}
        # (Call-ID, caller tag) -> the dialogs of that call: the forks of one
        # INVITE and the dialogs of its retries (12.3, 13.2.2.4).
        self._forks: dict[tuple[str, str], list[DialogId]] = {}
        self._terminated: dict[DialogId, None] = {}  # in termination order
        self._heap: list[tuple[float, int, DialogId]] = []
        self._next_uid = 0

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    # -- lookup ----------------------------------------------------------------------------

    def find(self, call_id: str, from_tag: str, to_tag: str) -> Dialog | None:
        """The dialog of a message with these Call-ID, From tag and To tag, either direction.

        A request from the local party carries (local tag, remote tag) in
        (From, To); one from the remote party carries them swapped (12.2).
        """
        dialog = self._dialogs.get(DialogId(call_id, from_tag, to_tag))
        if dialog is None:
            dialog = self._dialogs.get(DialogId(call_id, to_tag, from_tag))
        return dialog

    def match(self, message: Message) -> Dialog | None:
        """The dialog ``message`` belongs to, by its Call-ID and tags; ``None`` without a To tag."""
        call_id = message.call_id
        to_tag = _tag(message.to)
        if call_id is None or not to_tag:
            return None
        return self.find(call_id, _tag(message.from_) or "", to_tag)

    def forks(self, call_id: str, caller_tag: str) -> list[Dialog]:
        """Every dialog of one call leg: the early dialogs a forked INVITE created, and more."""
        ids = self._forks.get((call_id, caller_tag), [])
        return [self._dialogs[dialog_id] for dialog_id in ids]

    # -- messages ---------------------------------------------------------------------------

    def on_request(self, request: Request, now: float) -> DialogOutcome | None:
        """Apply an in-dialog request; ``None`` when it matches no dialog.

        A request without a To tag is not in a dialog (``None``: the
        transaction layer and TU deal with it). A request with a To tag that
        matches nothing is answered 481 by a UAS (12.2.2) and is the
        out-of-state signal for a monitor.
        """
        dialog = self.match(request)
        if dialog is None:
            return None
        outcome = dialog.handle_request(request, now)
        self._after(dialog, outcome, now)
        return outcome

    def on_response(
        self, response: Response, now: float, *, request: Request | None = None
    ) -> list[DialogOutcome]:
        """Apply a response: create, confirm or end dialogs; empty when it concerns none.

        ``request`` is the request it answers, when the caller has it (the
        server transaction's): a UAS-side table takes route set and remote
        target from it, a UAC-side one its local target and secure flag.
        A 100 (Trying) is hop-by-hop and never touches a dialog.

        Creation trusts the response: match it to a transaction first (a 2xx
        nobody asked for is out of state, and would otherwise open a dialog
        that lives until ``idle_timeout`` or eviction).
        """
        status = response.status
        cseq = response.cseq
        call_id = response.call_id
        if status < 101 or cseq is None or call_id is None:
            return []
        from_tag = _tag(response.from_) or ""
        to_tag = _tag(response.to)
        if to_tag:
            dialog = self.find(call_id, from_tag, to_tag)
            if dialog is not None:
                outcome = dialog.handle_response(response, now)
                self._after(dialog, outcome, now)
                outcomes = [outcome]
                if outcome.ignored:
                    return outcomes
                if outcome.event is DialogEvent.SUCCESS:
                    self._cap_forks(dialog, now)
                elif outcome.event is DialogEvent.FAILURE:
                    outcomes.extend(self._end_forks(call_id, from_tag, cseq.seq, now))
                return outcomes
            if creates_dialog(response, self.methods):
                return [self._create(response, request, now)]
        if status >= 300 and cseq.method in self.methods:
            # 12.3: a non-2xx final response ends every early dialog of the
            # request, whatever To tag it carries (a proxy's own 408 or 487).
            return self._end_forks(call_id, from_tag, cseq.seq, now)
        return []

    def _create(self, response: Response, request: Request | None, now: float) -> DialogOutcome:
        dialog = Dialog.create(
            response, role=self.role, now=now, request=request, methods=self.methods
        )
        while len(self._dialogs) >= self.max_dialogs:
            victim = next(iter(self._terminated or self._dialogs))
            self._remove(self._dialogs[victim])
            self.evicted += 1
        self._next_uid += 1
        dialog._uid = self._next_uid
        dialog_id = dialog.id
        self._dialogs[dialog_id] = dialog
        self._forks.setdefault((dialog.call_id, dialog.caller_tag), []).append(dialog_id)
        outcome = DialogOutcome(
            dialog=dialog,
            event=DialogEvent.PROVISIONAL if dialog.early else DialogEvent.SUCCESS,
            previous=dialog.state,
            state=dialog.state,
            from_local=_tag(response.from_) == dialog.local_tag,
            created=True,
        )
        self._after(dialog, outcome, now)
        if dialog.confirmed:
            self._cap_forks(dialog, now)
        return outcome

    def _siblings(self, call_id: str, caller_tag: str, seq: int) -> list[Dialog]:
        return [
            dialog
            for dialog in self.forks(call_id, caller_tag)
            if dialog.initial_seq == seq and dialog.early
        ]

    def _cap_forks(self, answered: Dialog, now: float) -> None:
        # 13.2.2.4: 64*T1 after the first 2xx, the early dialogs of the other
        # forks that were not answered are terminated.
        cap = now + 64 * self.timers.t1
        for dialog in self._siblings(answered.call_id, answered.caller_tag, answered.initial_seq):
            if dialog is not answered and dialog.early_until > cap:
                dialog.early_until = cap
                self._set_expiry(dialog, min(dialog.expires_at, cap))

    def _end_forks(
        self, call_id: str, caller_tag: str, seq: int, now: float
    ) -> list[DialogOutcome]:
        outcomes: list[DialogOutcome] = []
        for dialog in self._siblings(call_id, caller_tag, seq):
            previous = dialog.state
            outcome = dialog._move(
                DialogEvent.FAILURE,
                previous,
                DIALOG_TABLE[(previous, DialogEvent.FAILURE)],
                now,
                None,
            )
            self._after(dialog, outcome, now)
            outcomes.append(outcome)
        return outcomes

    # -- lifetime ----------------------------------------------------------------------------

    def _after(self, dialog: Dialog, outcome: DialogOutcome, now: float) -> None:
        if outcome.ignored or outcome.status is not None:
            return  # an out-of-state or out-of-order message keeps nothing alive
        if dialog.terminated:
            if outcome.previous is not DialogState.TERMINATED:
                self._terminated[dialog.id] = None
                self._set_expiry(dialog, now + self.linger)
        elif dialog.early:
            self._set_expiry(dialog, min(now + self.early_timeout, dialog.early_until))
        else:
            self._set_expiry(dialog, now + self.idle_timeout)

    def _set_expiry(self, dialog: Dialog, deadline: float) -> None:
        dialog.expires_at = deadline
        # A later deadline is found lazily when the earlier heap entry pops.
        if deadline < dialog._scheduled:
            heapq.heappush(self._heap, (deadline, dialog._uid, dialog.id))
            dialog._scheduled = deadline
            if len(self._heap) > 2 * len(self._dialogs) + 64:
                self._compact()

    def _compact(self) -> None:
        heap: list[tuple[float, int, DialogId]] = []
        for dialog in self._dialogs.values():
            dialog._scheduled = dialog.expires_at
            if dialog.expires_at < inf:
                heap.append((dialog.expires_at, dialog._uid, dialog.id))
        heapq.heapify(heap)
        self._heap = heap

    def _remove(self, dialog: Dialog) -> None:
        dialog_id = dialog.id
        if self._dialogs.get(dialog_id) is not dialog:
            return
        del self._dialogs[dialog_id]
        self._terminated.pop(dialog_id, None)
        fork_key = (dialog.call_id, dialog.caller_tag)
        ids = self._forks.get(fork_key)
        if ids is not None:
            ids.remove(dialog_id)
            if not ids:
                del self._forks[fork_key]

    def remove(self, dialog: Dialog) -> None:
        """Forget ``dialog`` now (no-op when it is not held)."""
        self._remove(dialog)

    def get_timer(self) -> float | None:
        """The earliest time :meth:`expire` has something to do, or ``None``."""
        # Pop stale entries off the top (a dialog that left, or whose expiry
        # moved later: requeued), so the answer is a real deadline.
        while self._heap:
            queued, uid, dialog_id = self._heap[0]
            dialog = self._dialogs.get(dialog_id)
            if dialog is not None and dialog._uid == uid and dialog.expires_at <= queued:
                return queued
            heapq.heappop(self._heap)
            if dialog is not None and dialog._uid == uid:
                dialog._scheduled = inf
                self._set_expiry(dialog, dialog.expires_at)
        return None

    def expire(self, now: float) -> list[DialogOutcome]:
        """Drop dialogs whose time is up; report those that ended by timing out.

        A terminated dialog that stops lingering goes silently (its end was
        reported when it happened); an early or confirmed one reports
        :attr:`DialogEvent.EXPIRED`.
        """
        outcomes: list[DialogOutcome] = []
        # (self._heap is read afresh each turn: requeueing may compact it.)
        while self._heap and self._heap[0][0] <= now:
            _, uid, dialog_id = heapq.heappop(self._heap)
            dialog = self._dialogs.get(dialog_id)
            if dialog is None or dialog._uid != uid:
                continue
            dialog._scheduled = inf
            if dialog.expires_at > now:
                self._set_expiry(dialog, dialog.expires_at)  # it moved later: requeue
                continue
            if not dialog.terminated:
                outcomes.append(dialog.timeout(now))
            self._remove(dialog)
        return outcomes

    handle_timer = expire
