"""A lean passive view of SIP transactions and dialogs: which ones are going on, and in what state.

The sans-IO machines of :mod:`sipwarden.sip.transaction` and
:mod:`sipwarden.sip.dialog` are written for an element that takes part in the
signalling: they hold the request, the last response, route sets and targets,
and run every timer. Out-of-state detection only asks whether a message fits
a transaction or a dialog that is going on, and asks it for every message of
a busy trunk and for as many transactions as a flood can create. This view
keeps only what the answer needs:

* a transaction is its key -- the RFC 3261 17.2.3 match, built by the pure key
  functions of :mod:`sipwarden.sip.transaction` (top Via branch with the magic
  cookie, sent-by and method; the RFC 2543 fallback without the cookie; ACK
  and CANCEL lead to their INVITE) -- and the time it entered its phase;
* a dialog is its Call-ID and two tags, sorted so that either direction finds
  it (RFC 3261 12.2), and the time it was last active.

The phase or state of an entry is the queue that holds it. Every queue waits
one RFC timer of one length, so it stays in deadline order and expiry only
looks at its front: no heap, no per-entry timer.

What the full machines do and this view leaves out: messages, route sets
and targets, and CSeq ordering inside a dialog (a CSeq out of order is
answered 500, not 481), none of which changes an out-of-state finding; the
Request-URI and To tag comparisons of the RFC 2543 fallback (a request with
the same Call-ID, From tag, CSeq and top Via is taken for a retransmission),
and the ending of the early dialogs of other forks of a failed or answered
INVITE (RFC 3261 12.3, 13.2.2.4: here they run out at their own early
timeout). Those two change a finding only in corner cases, and then towards
"in state": never a false alarm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from math import inf
from typing import Final, NamedTuple, TypeAlias, TypeVar

from sipwarden.errors import ConfigError
from sipwarden.sip.dialog import (
    DIALOG_METHODS,
    DIALOG_TABLE,
    DialogEvent,
    DialogState,
    creates_dialog,
)
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.timers import DEFAULT_TIMERS, Timers
from sipwarden.sip.transaction import MAX_TRANSACTION_AGE, TransactionKey, is_reliable_transport

__all__ = [
    "DialogFit",
    "DialogKey",
    "PassiveDialog",
    "PassiveDialogs",
    "PassiveTransactions",
    "dialog_key",
]

DialogKey: TypeAlias = tuple[str, str, str]
"""Call-ID and the dialog's two tags in sorted order: the same from either party."""

K = TypeVar("K", bound=Hashable)


class _Queue(OrderedDict[K, float]):
    """Keys, each with the time it entered, that all wait ``delay`` seconds; oldest first.

    With one delay for all, the order of entry is the order of the deadlines,
    so the front is always the next one due. (A mapping, so that ``in`` and
    ``len`` cost what a dict's do: every message asks.)
    """

    __slots__ = ("delay",)

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def refresh(self, key: K, now: float) -> None:
        """Restart ``key``'s wait from ``now``: it goes to the back."""
        self[key] = now
        self.move_to_end(key)

    def next_deadline(self) -> float:
        """When the front entry is due (infinity when the queue is empty)."""
        return self[next(iter(self))] + self.delay if self else inf

    def pop_first(self) -> None:
        self.popitem(last=False)

    def pop_due(self, now: float) -> int:
        """Drop the entries whose wait is over; returns how many went."""
        count = 0
        while self.next_deadline() <= now:
            self.pop_first()
            count += 1
        return count


def _reliable(message: Message) -> bool:
    # Timers I and J are zero on transports that retransmit on their own (17.2.1, 17.2.2).
    via = message.top_via
    return via is not None and is_reliable_transport(via.transport)


class PassiveTransactions:
    """Server transactions as a monitor sees them (RFC 3261 17.2, RFC 6026): key and phase.

    The phases follow Figures 7 and 8 as far as a finding depends on them:

    * *proceeding*: no final response yet (Trying or Proceeding), where an ACK
      has nothing to acknowledge (17.2.1). No timer ends this phase; after
      ``max_age`` the entry is dropped and counted in :attr:`evicted` (its late
      answer would look stray);
    * *awaiting ACK*: an INVITE answered 300-699 (Completed, Timer H);
    * *confirmed*: that answer ACKed (Confirmed, Timer I; zero on reliable
      transports);
    * *answered*: an INVITE answered 2xx (RFC 6026 Accepted, Timer L) or a
      non-INVITE answered with a final response (Completed, Timer J; zero on
      reliable transports).

    A request that matches a transaction is a retransmission and is absorbed,
    and so is a response after the first final one; only an ACK moves an
    INVITE on (awaiting ACK to confirmed). At ``max_entries`` a new
    transaction first drops what is due, then the entry closest to its end
    (the least state lost); :attr:`evicted` counts every entry dropped before
    its time.
    """

    __slots__ = (
        "_answered",
        "_awaiting_ack",
        "_confirmed",
        "_ending",
        "_proceeding",
        "evicted",
        "max_entries",
    )

    def __init__(
        self,
        *,
        max_entries: int,
        max_age: float = MAX_TRANSACTION_AGE,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if max_entries < 1:
            raise ConfigError(f"must be at least 1, not {max_entries}", key_path="max_entries")
        self.max_entries = max_entries
        self.evicted = 0
        # Timers H, L and (on UDP) J are all 64*T1 (RFC 3261 Table 4, RFC 6026 8.7);
        # Timer I is T4 (on UDP).
        self._proceeding: _Queue[TransactionKey] = _Queue(max_age)
        self._awaiting_ack: _Queue[TransactionKey] = _Queue(64 * timers.t1)
        self._confirmed: _Queue[TransactionKey] = _Queue(timers.t4)
        self._answered: _Queue[TransactionKey] = _Queue(64 * timers.t1)
        # The phases after the final response, each ended by its timer.
        self._ending = (self._awaiting_ack, self._confirmed, self._answered)

    def __len__(self) -> int:
        return len(self._proceeding) + sum(map(len, self._ending))

    def __contains__(self, key: object) -> bool:
        return key in self._proceeding or self._ended(key)

    def begin(self, key: TransactionKey, now: float) -> None:
        """A request that matched no transaction starts one (17.2.3); ``key`` is not held."""
        if len(self) >= self.max_entries:
            self._make_room(now)
        self._proceeding[key] = now

    def acknowledge(self, key: TransactionKey, ack: Request, now: float) -> bool:
        """An ACK matched the INVITE transaction ``key``; False when it has no final response yet.

        Figure 7 has no arrow for an ACK in Proceeding (17.2.1).
        """
        if key in self._proceeding:
            return False
        if key in self._awaiting_ack:
            del self._awaiting_ack[key]
            if not _reliable(ack):
                self._confirmed[key] = now
        return True

    def respond(self, key: TransactionKey, response: Response, now: float) -> bool:
        """A response the transaction ``key`` sent; False when no such transaction is held.

        The first final response ends the proceeding phase; anything after it,
        and a provisional response before it, changes nothing.
        """
        if key not in self._proceeding:
            return self._ended(key)
        status = response.status
        cseq = response.cseq
        if status >= 200 and cseq is not None:
            del self._proceeding[key]
            if cseq.method != "INVITE":
                if not _reliable(response):
                    self._answered[key] = now
            elif status < 300:
                self._answered[key] = now
            else:
                self._awaiting_ack[key] = now
        return True

    def expire(self, now: float) -> None:
        """Drop the transactions whose timer ran out; count those that never got a final answer."""
        self.evicted += self._proceeding.pop_due(now)
        for phase in self._ending:
            phase.pop_due(now)

    def _ended(self, key: object) -> bool:
        # Held after its final response, absorbing retransmissions and ACKs.
        return key in self._answered or key in self._awaiting_ack or key in self._confirmed

    def _make_room(self, now: float) -> None:
        self.expire(now)
        while len(self) >= self.max_entries:
            closest = min((self._proceeding, *self._ending), key=_Queue.next_deadline)
            closest.pop_first()
            self.evicted += 1


def dialog_key(message: Message) -> DialogKey | None:
    """The key of the dialog ``message`` belongs to; ``None`` without Call-ID or To tag (12.2).

    An RFC 2543 caller may have no From tag (12.1.2): it keys as the empty tag.
    """
    call_id = message.call_id
    to = message.to
    to_tag = None if to is None else to.tag
    if call_id is None or not to_tag:
        return None
    from_ = message.from_
    from_tag = (None if from_ is None else from_.tag) or ""
    if from_tag <= to_tag:
        return (call_id, from_tag, to_tag)
    return (call_id, to_tag, from_tag)


class DialogFit(NamedTuple):
    """How an in-dialog request fits: the state of its dialog before it, and whether it fits."""

    state: DialogState | None  # None: no dialog has its Call-ID and tags
    fits: bool  # DIALOG_TABLE has a row for the request in that state


class PassiveDialog(NamedTuple):
    """One dialog of the view, as :meth:`PassiveDialogs.__iter__` lists it."""

    key: DialogKey
    state: DialogState

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED


_NO_DIALOG: Final = DialogFit(None, fits=False)
_REQUEST_EVENTS: Final = {"BYE": DialogEvent.BYE, "ACK": DialogEvent.ACK}
# Dialogs that are over go first, then ringing ones before established ones:
# a flood of calls that ring pushes out other ringing calls, not the
# established calls a forged BYE would target.
_EVICTION_ORDER: Final = (DialogState.TERMINATED, DialogState.EARLY, DialogState.CONFIRMED)


def _answered_method(response: Response) -> str | None:
    # The method a response answers, when the response may touch a dialog: a
    # 100 (Trying) is hop-by-hop, and without a CSeq nothing is known.
    cseq = response.cseq
    return None if response.status <= 100 or cseq is None else cseq.method


def _response_event(status: int, method: str) -> DialogEvent:
    if status in (408, 481) and method != "CANCEL":
        # 12.2.1.2: a 481 or 408 ends the dialog (a 481 to a CANCEL only means
        # the cancelled transaction is gone).
        return DialogEvent.ENDING_RESPONSE
    if method == "INVITE":
        # The INVITE that set the dialog up, or a re-INVITE: in a confirmed
        # dialog both rows leave it as it is.
        if status < 200:
            return DialogEvent.PROVISIONAL
        return DialogEvent.SUCCESS if status < 300 else DialogEvent.FAILURE
    return DialogEvent.RESPONSE


class PassiveDialogs:
    """Dialogs (RFC 3261 12) as a monitor sees them: key and state, found from either side.

    States move along :data:`~sipwarden.sip.dialog.DIALOG_TABLE`, the table of
    the full dialog machine; a message without a row there is out of state
    and changes nothing. Lifetimes are that machine's: an early dialog lives
    Timer C past its last message, a confirmed one ``idle_timeout``, a
    terminated one lingers 64*T1 for the stragglers of its last exchange. At
    ``max_dialogs`` a new dialog first drops what is due, then the least
    recently active terminated, early, then confirmed dialog;
    :attr:`evicted` counts them.
    """

    __slots__ = ("_by_state", "evicted", "max_dialogs", "methods")

    def __init__(
        self,
        *,
        max_dialogs: int,
        idle_timeout: float,
        methods: frozenset[str] = DIALOG_METHODS,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if max_dialogs < 1:
            raise ConfigError(f"must be at least 1, not {max_dialogs}", key_path="max_dialogs")
        self.max_dialogs = max_dialogs
        self.methods = methods
        self.evicted = 0
        self._by_state: dict[DialogState, _Queue[DialogKey]] = {
            DialogState.CONFIRMED: _Queue(idle_timeout),
            DialogState.EARLY: _Queue(timers.timer_c),
            DialogState.TERMINATED: _Queue(64 * timers.t1),
        }

    def __len__(self) -> int:
        return sum(map(len, self._by_state.values()))

    def __iter__(self) -> Iterator[PassiveDialog]:
        return iter(
            [PassiveDialog(key, state) for state, queue in self._by_state.items() for key in queue]
        )

    def state_of(self, key: DialogKey) -> DialogState | None:
        for state, queue in self._by_state.items():
            if key in queue:
                return state
        return None

    def on_request(self, key: DialogKey | None, method: str, now: float) -> DialogFit:
        """Apply an in-dialog request (a BYE ends the dialog, 15); say whether it fits."""
        if key is None:
            return _NO_DIALOG
        state = self.state_of(key)
        if state is None:
            return _NO_DIALOG
        event = _REQUEST_EVENTS.get(method, DialogEvent.REQUEST)
        return DialogFit(state, fits=self._move(key, state, event, now))

    def on_response(self, response: Response, now: float) -> None:
        """A response to an observed request: it may create, confirm or end a dialog (12.1, 12.3).

        Only such a response may create one: a response that answers nothing
        is out of state, and would open a dialog for the next forged BYE. One
        that can change no dialog (a 200 to a BYE or an INFO) is not looked
        up: its request already was, and kept the dialog alive.
        """
        method = _answered_method(response)
        if method is None:
            return
        event = _response_event(response.status, method)
        if event is DialogEvent.RESPONSE and method not in self.methods:
            return  # every RESPONSE row leaves the state as it is, and it creates none
        key = dialog_key(response)
        if key is None:
            return
        state = self.state_of(key)
        if state is not None:
            self._move(key, state, event, now)
        elif response.from_ is not None and creates_dialog(response, self.methods):
            status = response.status
            self._create(key, DialogState.EARLY if status < 200 else DialogState.CONFIRMED, now)

    def on_late_response(self, response: Response, now: float) -> bool:
        """A response no transaction is waiting for: True when its dialog is held.

        A 2xx the UAS retransmits until the ACK arrives outlives its
        transaction (13.3.1.4); it is applied to its dialog like any response.
        """
        key = dialog_key(response)
        if key is None:
            return False
        state = self.state_of(key)
        if state is None:
            return False
        method = _answered_method(response)
        if method is not None:
            self._move(key, state, _response_event(response.status, method), now)
        return True

    def expire(self, now: float) -> None:
        """Drop the dialogs whose time is up (not counted: they ended, nothing was lost)."""
        for queue in self._by_state.values():
            queue.pop_due(now)

    def _move(self, key: DialogKey, state: DialogState, event: DialogEvent, now: float) -> bool:
        target = DIALOG_TABLE.get((state, event))
        if target is None:
            return False  # out of state: changes nothing, keeps nothing alive
        if target is not state:
            del self._by_state[state][key]
            self._by_state[target][key] = now
        elif target is not DialogState.TERMINATED:
            self._by_state[state].refresh(key, now)  # activity; a terminated one only lingers
        return True

    def _create(self, key: DialogKey, state: DialogState, now: float) -> None:
        if len(self) >= self.max_dialogs:
            self.expire(now)
        while len(self) >= self.max_dialogs:
            self._evict_one()
        self._by_state[state][key] = now

    def _evict_one(self) -> None:
        for state in _EVICTION_ORDER:
            queue = self._by_state[state]
            if queue:
                queue.pop_first()
                self.evicted += 1
                return
