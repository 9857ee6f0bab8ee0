"""Tests for sipwarden.sip.transaction and sipwarden.sip.timers.

Every row of the four transition tables is driven with a fake clock (plain
floats) and annotated with the actions the RFC figure writes on the arrow;
the pairs the tables leave out are driven too and must be reported, never
crash. Retransmission schedules are checked to the exact deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import pytest

from sipwarden.errors import ConfigError, LocalProtocolError
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message
from sipwarden.sip.timers import DEFAULT_TIMERS, Timer, Timers
from sipwarden.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    Absorbed,
    Action,
    Event,
    Evicted,
    Ignored,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    PassToTU,
    Retransmit,
    SendAck,
    SendResponse,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    Transaction,
    TransactionTable,
    Transition,
    TransportFailed,
    build_ack,
    cancel_key,
    client_key,
    client_transaction,
    is_reliable_transport,
    is_rfc3261_branch,
    server_key,
    server_key_of_response,
    server_transaction,
)
from support import shared_path

BRANCH = "z9hG4bK.tx1"
CALL_ID = "call-1@example.com"


# -- message builders ------------------------------------------------------------------


def _via(transport: str, host: str, branch: str | None) -> str:
    return f"SIP/2.0/{transport} {host}" + (f";branch={branch}" if branch is not None else "")


def _to(to_tag: str | None) -> str:
    return "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")


def make_request(
    method: str = "INVITE",
    *,
    branch: str | None = BRANCH,
    host: str = "192.0.2.1:5060",
    transport: str = "UDP",
    uri: str = "sip:bob@example.com",
    to_tag: str | None = None,
    seq: int = 1,
    cseq_method: str | None = None,
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {_via(transport, host, branch)}",
        *extra,
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        f"To: {_to(to_tag)}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {seq} {cseq_method or method}",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def make_response(
    status: int,
    *,
    method: str = "INVITE",
    branch: str | None = BRANCH,
    host: str = "192.0.2.1:5060",
    transport: str = "UDP",
    to_tag: str | None = "b1",
    seq: int = 1,
    extra: tuple[str, ...] = (),
) -> Response:
    lines = [
        f"SIP/2.0 {status} Reason",
        f"Via: {_via(transport, host, branch)}",
        *extra,
        "From: <sip:alice@example.com>;tag=a1",
        f"To: {_to(to_tag)}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {seq} {method}",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Response)
    return message


def names(actions: list[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


# -- timers.py ----------------------------------------------------------------------------

# timer -> (unreliable, reliable) with the default T1=0.5, T2=4, T4=5 (RFC 3261 Table 4)
TABLE_4: dict[Timer, tuple[float | None, float | None]] = {
    Timer.A: (0.5, None),  # T1, UDP only
    Timer.B: (32.0, 32.0),  # 64*T1
    Timer.C: (180.0, 180.0),  # > 3 min
    Timer.D: (32.0, 0.0),  # > 32 s UDP, 0 reliable
    Timer.E: (0.5, None),  # T1, UDP only
    Timer.F: (32.0, 32.0),  # 64*T1
    Timer.G: (0.5, None),  # T1, UDP only
    Timer.H: (32.0, 32.0),  # 64*T1
    Timer.I: (5.0, 0.0),  # T4 UDP, 0 reliable
    Timer.J: (32.0, 0.0),  # 64*T1 UDP, 0 reliable
    Timer.K: (5.0, 0.0),  # T4 UDP, 0 reliable
    Timer.L: (32.0, 32.0),  # 64*T1 (RFC 6026)
    Timer.M: (32.0, 32.0),  # 64*T1 (RFC 6026)
}


@pytest.mark.parametrize(("timer", "expected"), list(TABLE_4.items()), ids=str)
def test_table_4_durations(timer: Timer, expected: tuple[float | None, float | None]) -> None:
    unreliable, reliable = expected
    assert DEFAULT_TIMERS.duration(timer, reliable=False) == unreliable
    assert DEFAULT_TIMERS.duration(timer, reliable=True) == reliable


def test_timers_derive_from_t1() -> None:
    timers = Timers(t1=1.0, t2=8.0)
    assert timers.duration(Timer.B, reliable=False) == 64.0
    assert timers.duration(Timer.A, reliable=False) == 1.0
    assert timers.backoff(Timer.E, 4.0) == 8.0
    assert timers.backoff(Timer.E, 8.0) == 8.0


@pytest.mark.parametrize(
    ("timer", "intervals"),
    [
        (Timer.A, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]),  # doubles, no cap (17.1.1.2)
        (Timer.E, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]),  # doubles up to T2 (17.1.2.2)
        (Timer.G, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]),  # doubles up to T2 (17.2.1)
    ],
)
def test_backoff(timer: Timer, intervals: list[float]) -> None:
    interval = 0.5
    seen = [interval]
    for _ in intervals[1:]:
        interval = DEFAULT_TIMERS.backoff(timer, interval)
        seen.append(interval)
    assert seen == intervals


def test_backoff_of_a_timeout_timer_is_a_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        DEFAULT_TIMERS.backoff(Timer.B, 32.0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"t1": 0.0}, "t1"),
        ({"t2": -1.0}, "t2"),
        ({"t1": 2.0, "t2": 1.0}, "t2"),  # T2 below T1
        ({"timer_d": -1.0}, "timer_d"),
    ],
)
def test_timers_reject_bad_values(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Timers(**kwargs)
    assert info.value.key_path == key


# -- driving a machine into a state ------------------------------------------------------

Kind = type[Transaction]
Table = Mapping[tuple[State, Event], Transition]
MACHINES: dict[str, tuple[Kind, str, Table]] = {
    # name -> (class, request method, transition table)
    "invite-client": (InviteClientTransaction, "INVITE", INVITE_CLIENT_TABLE),
    "non-invite-client": (NonInviteClientTransaction, "OPTIONS", NON_INVITE_CLIENT_TABLE),
    "invite-server": (InviteServerTransaction, "INVITE", INVITE_SERVER_TABLE),
    "non-invite-server": (NonInviteServerTransaction, "OPTIONS", NON_INVITE_SERVER_TABLE),
}

TU_STATUS = {Event.TU_1XX: 180, Event.TU_2XX: 200, Event.TU_300_699: 486}
RECV_STATUS = {Event.RECV_1XX: 180, Event.RECV_2XX: 200, Event.RECV_300_699: 486}
TIMER_OF = {event: Timer(event.name[-1]) for event in Event if event.name.startswith("TIMER_")}


def new(machine: str, *, reliable: bool = False, observer: bool = False) -> Transaction:
    kind, method, _ = MACHINES[machine]
    request = make_request(method)
    if kind in (InviteServerTransaction, NonInviteServerTransaction):
        assert issubclass(kind, InviteServerTransaction | NonInviteServerTransaction)
        return kind(request, now=0.0, reliable=reliable, observer=observer)
    return kind(request, now=0.0, reliable=reliable)


def fire(txn: Transaction, event: Event, now: float, status: int | None = None) -> list[Action]:
    """Apply ``event`` the way the transaction's user would."""
    method = txn.method
    if event in RECV_STATUS:
        assert isinstance(txn, InviteClientTransaction | NonInviteClientTransaction)
        return txn.receive_response(make_response(status or RECV_STATUS[event], method=method), now)
    if event in TU_STATUS:
        assert isinstance(txn, InviteServerTransaction | NonInviteServerTransaction)
        return txn.send_response(make_response(status or TU_STATUS[event], method=method), now)
    if event is Event.REQUEST:
        assert isinstance(txn, InviteServerTransaction | NonInviteServerTransaction)
        return txn.receive_request(make_request(method), now)
    if event is Event.ACK:
        assert isinstance(txn, InviteServerTransaction | NonInviteServerTransaction)
        return txn.receive_request(make_request("ACK", to_tag="b1", cseq_method="ACK"), now)
    if event is Event.TRANSPORT_ERROR:
        return txn.transport_error(now)
    deadline = txn.timer_deadline(TIMER_OF[event])
    assert deadline is not None, f"{TIMER_OF[event]} is not armed in {txn.state}"
    return txn.handle_timer(deadline)


# How each machine reaches each of its states from its initial one.
PATHS: dict[str, dict[State, tuple[Event, ...]]] = {
    "invite-client": {
        State.CALLING: (),
        State.PROCEEDING: (Event.RECV_1XX,),
        State.COMPLETED: (Event.RECV_300_699,),
        State.ACCEPTED: (Event.RECV_2XX,),
        State.TERMINATED: (Event.TRANSPORT_ERROR,),
    },
    "non-invite-client": {
        State.TRYING: (),
        State.PROCEEDING: (Event.RECV_1XX,),
        State.COMPLETED: (Event.RECV_2XX,),
        State.TERMINATED: (Event.TRANSPORT_ERROR,),
    },
    "invite-server": {
        State.PROCEEDING: (),
        State.COMPLETED: (Event.TU_300_699,),
        State.CONFIRMED: (Event.TU_300_699, Event.ACK),
        State.ACCEPTED: (Event.TU_2XX,),
        State.TERMINATED: (Event.TU_2XX, Event.TIMER_L),
    },
    "non-invite-server": {
        State.TRYING: (),
        State.PROCEEDING: (Event.TU_1XX,),
        State.COMPLETED: (Event.TU_2XX,),
        State.TERMINATED: (Event.TU_2XX, Event.TIMER_J),
    },
}


def drive(
    machine: str, state: State, *, reliable: bool = False, observer: bool = False
) -> Transaction:
    txn = new(machine, reliable=reliable, observer=observer)
    for event in PATHS[machine][state]:
        fire(txn, event, 0.0)
    assert txn.state is state
    return txn


# -- every row of every table --------------------------------------------------------------


class Row(NamedTuple):
    state: State
    event: Event
    target: State
    actions: list[str]
    reliable: bool = False  # True where A/E/G would otherwise fire first


S, E = State, Event
ROWS: dict[str, list[Row]] = {
    # RFC 3261 Figure 5 + RFC 6026 7.2
    "invite-client": [
        Row(S.CALLING, E.TIMER_A, S.CALLING, ["Retransmit"]),  # reset A, INVITE sent
        Row(S.CALLING, E.TIMER_B, S.TERMINATED, ["Timeout", "Terminated"], True),  # inform TU
        Row(S.CALLING, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.CALLING, E.RECV_1XX, S.PROCEEDING, ["PassToTU"]),  # 1xx to TU
        Row(S.CALLING, E.RECV_2XX, S.ACCEPTED, ["PassToTU"]),  # 2xx to TU (RFC 6026)
        Row(S.CALLING, E.RECV_300_699, S.COMPLETED, ["SendAck", "PassToTU"]),  # ACK sent
        Row(S.PROCEEDING, E.RECV_1XX, S.PROCEEDING, ["PassToTU"]),
        Row(S.PROCEEDING, E.RECV_2XX, S.ACCEPTED, ["PassToTU"]),
        Row(S.PROCEEDING, E.RECV_300_699, S.COMPLETED, ["SendAck", "PassToTU"]),
        Row(S.COMPLETED, E.RECV_300_699, S.COMPLETED, ["SendAck"]),  # ACK again, not to TU
        Row(S.COMPLETED, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.COMPLETED, E.TIMER_D, S.TERMINATED, ["Terminated"]),
        Row(S.ACCEPTED, E.RECV_2XX, S.ACCEPTED, ["PassToTU"]),  # 2xx retransmission / fork
        Row(S.ACCEPTED, E.TIMER_M, S.TERMINATED, ["Terminated"]),
    ],
    # RFC 3261 Figure 6
    "non-invite-client": [
        Row(S.TRYING, E.TIMER_E, S.TRYING, ["Retransmit"]),
        Row(S.TRYING, E.TIMER_F, S.TERMINATED, ["Timeout", "Terminated"], True),
        Row(S.TRYING, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.TRYING, E.RECV_1XX, S.PROCEEDING, ["PassToTU"]),
        Row(S.TRYING, E.RECV_2XX, S.COMPLETED, ["PassToTU"]),
        Row(S.TRYING, E.RECV_300_699, S.COMPLETED, ["PassToTU"]),
        Row(S.PROCEEDING, E.TIMER_E, S.PROCEEDING, ["Retransmit"]),
        Row(S.PROCEEDING, E.TIMER_F, S.TERMINATED, ["Timeout", "Terminated"], True),
        Row(S.PROCEEDING, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.PROCEEDING, E.RECV_1XX, S.PROCEEDING, ["PassToTU"]),
        Row(S.PROCEEDING, E.RECV_2XX, S.COMPLETED, ["PassToTU"]),
        Row(S.PROCEEDING, E.RECV_300_699, S.COMPLETED, ["PassToTU"]),
        Row(S.COMPLETED, E.RECV_2XX, S.COMPLETED, ["Absorbed"]),  # buffered retransmission
        Row(S.COMPLETED, E.RECV_300_699, S.COMPLETED, ["Absorbed"]),
        Row(S.COMPLETED, E.TIMER_K, S.TERMINATED, ["Terminated"]),
    ],
    # RFC 3261 Figure 7 + RFC 6026 7.1 (transport errors never terminate)
    "invite-server": [
        Row(S.PROCEEDING, E.REQUEST, S.PROCEEDING, ["Absorbed"]),  # no provisional sent yet
        Row(S.PROCEEDING, E.TU_1XX, S.PROCEEDING, ["SendResponse"]),
        Row(S.PROCEEDING, E.TU_2XX, S.ACCEPTED, ["SendResponse"]),
        Row(S.PROCEEDING, E.TU_300_699, S.COMPLETED, ["SendResponse"]),
        Row(S.PROCEEDING, E.TRANSPORT_ERROR, S.PROCEEDING, ["TransportFailed"]),
        Row(S.COMPLETED, E.REQUEST, S.COMPLETED, ["Retransmit"]),  # the final again
        Row(S.COMPLETED, E.TIMER_G, S.COMPLETED, ["Retransmit"]),
        Row(S.COMPLETED, E.TIMER_H, S.TERMINATED, ["Timeout", "Terminated"], True),
        Row(S.COMPLETED, E.TRANSPORT_ERROR, S.COMPLETED, ["TransportFailed"]),
        Row(S.COMPLETED, E.ACK, S.CONFIRMED, ["Absorbed"]),
        Row(S.CONFIRMED, E.ACK, S.CONFIRMED, ["Absorbed"]),
        Row(S.CONFIRMED, E.TIMER_I, S.TERMINATED, ["Terminated"]),
        Row(S.ACCEPTED, E.REQUEST, S.ACCEPTED, ["Absorbed"]),  # INVITE retransmission
        Row(S.ACCEPTED, E.ACK, S.ACCEPTED, ["PassToTU"]),  # ACK for the 2xx goes up
        Row(S.ACCEPTED, E.TU_2XX, S.ACCEPTED, ["SendResponse"]),  # TU retransmits its 2xx
        Row(S.ACCEPTED, E.TRANSPORT_ERROR, S.ACCEPTED, ["TransportFailed"]),
        Row(S.ACCEPTED, E.TIMER_L, S.TERMINATED, ["Terminated"]),
    ],
    # RFC 3261 Figure 8
    "non-invite-server": [
        Row(S.TRYING, E.REQUEST, S.TRYING, ["Absorbed"]),  # discarded in Trying
        Row(S.TRYING, E.TU_1XX, S.PROCEEDING, ["SendResponse"]),
        Row(S.TRYING, E.TU_2XX, S.COMPLETED, ["SendResponse"]),
        Row(S.TRYING, E.TU_300_699, S.COMPLETED, ["SendResponse"]),
        Row(S.PROCEEDING, E.REQUEST, S.PROCEEDING, ["Retransmit"]),  # last provisional
        Row(S.PROCEEDING, E.TU_1XX, S.PROCEEDING, ["SendResponse"]),
        Row(S.PROCEEDING, E.TU_2XX, S.COMPLETED, ["SendResponse"]),
        Row(S.PROCEEDING, E.TU_300_699, S.COMPLETED, ["SendResponse"]),
        Row(S.PROCEEDING, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.COMPLETED, E.REQUEST, S.COMPLETED, ["Retransmit"]),  # the final again
        Row(S.COMPLETED, E.TRANSPORT_ERROR, S.TERMINATED, ["TransportFailed", "Terminated"]),
        Row(S.COMPLETED, E.TIMER_J, S.TERMINATED, ["Terminated"]),
    ],
}


@pytest.mark.parametrize("machine", list(MACHINES))
def test_rows_cover_the_table(machine: str) -> None:
    table = MACHINES[machine][2]
    rows = {(row.state, row.event): row.target for row in ROWS[machine]}
    assert rows == {key: transition.target for key, transition in table.items()}


@pytest.mark.parametrize(
    ("machine", "row"),
    [
        pytest.param(machine, row, id=f"{machine}:{row.state.value}+{row.event.name}")
        for machine, rows in ROWS.items()
        for row in rows
    ],
)
def test_every_row(machine: str, row: Row) -> None:
    txn = drive(machine, row.state, reliable=row.reliable)
    actions = fire(txn, row.event, 1.0)
    assert txn.state is row.target
    assert names(actions) == row.actions
    if row.target is State.TERMINATED:
        assert txn.get_timer() is None
        assert txn.terminated


# -- every pair the tables leave out --------------------------------------------------------

REMOTE_EVENTS = {
    "invite-client": (E.RECV_1XX, E.RECV_2XX, E.RECV_300_699, E.TRANSPORT_ERROR),
    "non-invite-client": (E.RECV_1XX, E.RECV_2XX, E.RECV_300_699, E.TRANSPORT_ERROR),
    "invite-server": (E.REQUEST, E.ACK, E.TRANSPORT_ERROR),
    "non-invite-server": (E.REQUEST, E.ACK, E.TRANSPORT_ERROR),
}
UNDEFINED = [
    pytest.param(machine, state, event, id=f"{machine}:{state.value}+{event.name}")
    for machine, paths in PATHS.items()
    for state in paths
    for event in REMOTE_EVENTS[machine]
    if (state, event) not in MACHINES[machine][2]
]


@pytest.mark.parametrize(("machine", "state", "event"), UNDEFINED)
def test_undefined_remote_input_is_ignored_and_reported(
    machine: str, state: State, event: Event
) -> None:
    # e.g. a stray response in Terminated, an ACK before any final response.
    txn = drive(machine, state)
    timer = txn.get_timer()
    actions = fire(txn, event, 1.0)
    assert names(actions) == ["Ignored"]
    ignored = actions[0]
    assert isinstance(ignored, Ignored)
    assert (ignored.state, ignored.event) == (state, event)
    assert txn.state is state
    assert txn.get_timer() == timer


SERVER_TU_MISUSE = [
    pytest.param(machine, state, event, status, id=f"{machine}:{state.value}+{status}")
    for machine in ("invite-server", "non-invite-server")
    for state in PATHS[machine]
    for event, status in ((E.TU_1XX, 183), (E.TU_2XX, 202), (E.TU_300_699, 603))
    if (state, event) not in MACHINES[machine][2]
]


@pytest.mark.parametrize(("machine", "state", "event", "status"), SERVER_TU_MISUSE)
def test_undefined_tu_response_raises_or_is_reported_by_an_observer(
    machine: str, state: State, event: Event, status: int
) -> None:
    txn = drive(machine, state)
    with pytest.raises(LocalProtocolError, match="has no arrow"):
        fire(txn, event, 1.0, status)
    assert txn.state is state
    watched = drive(machine, state, observer=True)
    actions = fire(watched, event, 1.0, status)
    assert names(actions) == ["Ignored"]
    assert watched.state is state


def test_observer_absorbs_a_retransmitted_final_response() -> None:
    txn = drive("invite-server", State.COMPLETED, observer=True)  # sent 486
    assert isinstance(txn, InviteServerTransaction)
    actions = txn.send_response(make_response(486), 0.6)
    assert names(actions) == ["Absorbed"]
    assert isinstance(actions[0], Absorbed)
    assert actions[0].reason == "response retransmission"


# -- retransmission schedules and timeouts --------------------------------------------------


def run_schedule(txn: Transaction) -> list[tuple[float, list[str]]]:
    """Fire every timer at its deadline until none is left: (time, actions) pairs."""
    out: list[tuple[float, list[str]]] = []
    while (deadline := txn.get_timer()) is not None:
        out.append((deadline, names(txn.handle_timer(deadline))))
    return out


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    # 17.1.1.2: A = T1, 2T1, 4T1, ... ; B = 64*T1 ends it with a timeout.
    txn = client_transaction(make_request("INVITE"), now=0.0)
    assert run_schedule(txn) == [
        (0.5, ["Retransmit"]),
        (1.5, ["Retransmit"]),
        (3.5, ["Retransmit"]),
        (7.5, ["Retransmit"]),
        (15.5, ["Retransmit"]),
        (31.5, ["Retransmit"]),
        (32.0, ["Timeout", "Terminated"]),
    ]


def test_non_invite_client_timer_e_is_capped_at_t2() -> None:
    # 17.1.2.2: E = T1, 2T1, 4T1, then T2 (4 s) forever; F = 64*T1.
    txn = client_transaction(make_request("OPTIONS"), now=0.0)
    schedule = run_schedule(txn)
    assert [time for time, _ in schedule] == [
        0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0,
    ]  # fmt: skip
    assert schedule[-1][1] == ["Timeout", "Terminated"]
    assert all(actions == ["Retransmit"] for _, actions in schedule[:-1])


def test_non_invite_client_timer_e_is_t2_in_proceeding() -> None:
    # 17.1.2.2: "If Timer E fires while in the Proceeding state ... reset with T2".
    txn = client_transaction(make_request("OPTIONS"), now=0.0)
    assert isinstance(txn, NonInviteClientTransaction)
    txn.receive_response(make_response(100, method="OPTIONS", to_tag=None), 0.2)
    assert txn.state is State.PROCEEDING
    assert txn.timer_deadline(Timer.E) == 0.5  # E keeps running from Trying
    assert txn.timer_deadline(Timer.F) == 32.0  # so does F
    times = [time for time, _ in run_schedule(txn)]
    assert times == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.0]


def test_invite_server_timer_g_is_capped_and_h_times_out() -> None:
    # 17.2.1: G = T1, then MIN(2G, T2); H = 64*T1 waits for the ACK.
    txn = server_transaction(make_request("INVITE"), now=0.0)
    txn.send_response(make_response(486), 0.0)
    schedule = run_schedule(txn)
    assert [time for time, _ in schedule] == [
        0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0,
    ]  # fmt: skip
    assert schedule[-1][1] == ["Timeout", "Terminated"]
    assert all(actions == ["Retransmit"] for _, actions in schedule[:-1])


def test_timer_g_resends_the_final_response() -> None:
    txn = server_transaction(make_request("INVITE"), now=0.0)
    final = make_response(486)
    txn.send_response(final, 0.0)
    actions = txn.handle_timer(0.5)
    assert actions == [Retransmit(message=final, timer=Timer.G)]


def test_reliable_transport_starts_no_retransmission_timer() -> None:
    txn = client_transaction(make_request("INVITE", transport="TCP"), now=0.0)
    assert txn.reliable
    assert txn.timer_deadline(Timer.A) is None
    assert run_schedule(txn) == [(32.0, ["Timeout", "Terminated"])]


def test_scaled_t1_scales_every_timer() -> None:
    timers = Timers(t1=0.1, t2=4.0)
    txn = client_transaction(make_request("INVITE"), now=10.0, timers=timers)
    assert txn.get_timer() == pytest.approx(10.1)
    assert txn.timer_deadline(Timer.B) == pytest.approx(16.4)


def test_a_late_timer_call_fires_once_and_rearms_from_now() -> None:
    # The adapter was late: one retransmission, not a burst of catch-ups.
    txn = client_transaction(make_request("INVITE"), now=0.0)
    assert names(txn.handle_timer(5.0)) == ["Retransmit"]
    assert txn.get_timer() == 6.0


def test_handle_timer_before_the_deadline_does_nothing() -> None:
    txn = client_transaction(make_request("INVITE"), now=0.0)
    assert txn.handle_timer(0.4) == []
    assert txn.get_timer() == 0.5


@pytest.mark.parametrize(
    ("machine", "path", "expected"),
    [
        # D, I, J, K are zero on reliable transports: Terminated in the same call.
        ("invite-client", (E.RECV_300_699,), ["SendAck", "PassToTU", "Terminated"]),
        ("non-invite-client", (E.RECV_2XX,), ["PassToTU", "Terminated"]),
        ("invite-server", (E.TU_300_699, E.ACK), ["Absorbed", "Terminated"]),
        ("non-invite-server", (E.TU_2XX,), ["SendResponse", "Terminated"]),
    ],
)
def test_zero_timers_on_reliable_transports(
    machine: str, path: tuple[Event, ...], expected: list[str]
) -> None:
    txn = new(machine, reliable=True)
    actions: list[Action] = []
    for event in path:
        actions = fire(txn, event, 1.0)
    assert names(actions) == expected
    assert txn.terminated


# -- absorption, ACKs ---------------------------------------------------------------------


def test_invite_server_resends_the_last_provisional_to_a_retransmission() -> None:
    txn = server_transaction(make_request("INVITE"), now=0.0)
    ringing = make_response(180)
    assert txn.send_response(ringing, 0.1) == [SendResponse(response=ringing)]
    assert txn.receive_request(make_request("INVITE"), 0.5) == [Retransmit(message=ringing)]
    assert txn.state is State.PROCEEDING


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ((), "Absorbed"),  # Trying: discarded (17.2.2)
        ((100,), "Retransmit"),  # Proceeding: last provisional
        ((200,), "Retransmit"),  # Completed: the final
    ],
)
def test_non_invite_server_absorbs_retransmissions(
    responses: tuple[int, ...], expected: str
) -> None:
    txn = server_transaction(make_request("REGISTER"), now=0.0)
    assert isinstance(txn, NonInviteServerTransaction)
    for status in responses:
        txn.send_response(make_response(status, method="REGISTER"), 0.0)
    actions = txn.receive_request(make_request("REGISTER"), 0.5)
    assert names(actions) == [expected]
    if responses:
        assert isinstance(actions[0], Retransmit)
        assert isinstance(actions[0].message, Response)
        assert actions[0].message.status == responses[-1]


def test_ack_for_a_non_2xx_is_built_by_the_invite_client() -> None:
    invite = make_request(
        "INVITE",
        extra=(
            "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK.lower",
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
        ),
    )
    txn = client_transaction(invite, now=0.0)
    busy = make_response(486, to_tag="callee-tag")
    actions = txn.receive_response(busy, 0.3)
    assert names(actions) == ["SendAck", "PassToTU"]
    send = actions[0]
    assert isinstance(send, SendAck)
    assert not send.retransmission
    ack = send.ack
    # 17.1.1.3: same Request-URI, one Via (the INVITE's top one), the INVITE's
    # Route, To from the response, CSeq number with method ACK.
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.values("via") == [f"SIP/2.0/UDP 192.0.2.1:5060;branch={BRANCH}"]
    assert ack.headers.get_all("route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert ack.to is not None
    assert ack.to.tag == "callee-tag"
    assert ack.headers.get("from") == invite.headers.get("from")
    assert ack.call_id == invite.call_id
    assert ack.cseq is not None
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    # The ACK survives a round trip through the parser.
    reparsed = parse_message(ack.to_bytes())
    assert isinstance(reparsed, Request)
    assert reparsed.method == "ACK"
    # A retransmitted final gets the same ACK again.
    again = txn.receive_response(busy, 0.8)
    assert again == [SendAck(ack=ack, retransmission=True)]


def test_ack_for_a_2xx_is_the_tus_job() -> None:
    # The client passes every 2xx up and never ACKs it (RFC 6026 7.2) ...
    txn = client_transaction(make_request("INVITE"), now=0.0)
    ok = make_response(200)
    assert txn.receive_response(ok, 0.2) == [PassToTU(message=ok)]
    assert txn.receive_response(ok, 0.7) == [PassToTU(message=ok)]
    # ... and the server passes the ACK up while Accepted.
    server = server_transaction(make_request("INVITE"), now=0.0)
    server.send_response(ok, 0.1)
    ack = make_request("ACK", to_tag="b1", cseq_method="ACK")
    assert server.receive_request(ack, 0.3) == [PassToTU(message=ack)]


def test_build_ack_requires_the_copied_headers() -> None:
    lines = "INVITE sip:b@example.com SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    invite = parse_message(lines.encode())
    assert isinstance(invite, Request)
    with pytest.raises(LocalProtocolError, match="Via"):
        build_ack(invite, make_response(486))


# -- construction misuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "request_", "match"),
    [
        (client_transaction, make_request("ACK", cseq_method="ACK"), "no non-INVITE client"),
        (client_transaction, make_request("INVITE", branch="1"), "keyed"),  # RFC 2543 branch
        (server_transaction, make_request("ACK", cseq_method="ACK"), "never creates"),
        (
            lambda r, now: InviteClientTransaction(r, now=now),
            make_request("OPTIONS"),
            "cannot send",
        ),
        (
            lambda r, now: InviteServerTransaction(r, now=now),
            make_request("OPTIONS"),
            "cannot serve",
        ),
        (lambda r, now: NonInviteServerTransaction(r, now=now), make_request("INVITE"), "INVITE"),
    ],
)
def test_construction_misuse_raises(
    factory: Callable[..., Transaction], request_: Request, match: str
) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        factory(request_, now=0.0)


@pytest.mark.parametrize(
    ("transport", "reliable"),
    [("UDP", False), ("TCP", True), ("TLS", True), ("SCTP", True), ("WSS", True), ("udp", False)],
)
def test_transport_reliability(transport: str, reliable: bool) -> None:
    assert is_reliable_transport(transport) is reliable
    txn = server_transaction(make_request("INVITE", transport=transport.upper()), now=0.0)
    assert txn.reliable is reliable


# -- matching -------------------------------------------------------------------------------


def test_client_key_tells_cancel_from_invite() -> None:
    # 17.1.3: the CANCEL shares the INVITE's branch; the CSeq method tells them apart.
    assert client_key(make_response(200)) == ("client", BRANCH, "INVITE")
    assert client_key(make_response(200, method="CANCEL")) == ("client", BRANCH, "CANCEL")
    assert client_key(make_response(200, branch=None)) is None


def test_server_key_maps_ack_to_its_invite() -> None:
    invite_key = server_key(make_request("INVITE"))
    assert invite_key == ("server", BRANCH, "192.0.2.1:5060", "INVITE")
    assert server_key(make_request("ACK", to_tag="b1", cseq_method="ACK")) == invite_key
    assert server_key(make_request("CANCEL")) == ("server", BRANCH, "192.0.2.1:5060", "CANCEL")
    assert cancel_key(make_request("CANCEL")) == invite_key
    # sent-by host is case-insensitive; a different port is another sender
    assert server_key(make_request("INVITE", host="HOST.example.com")) == server_key(
        make_request("INVITE", host="host.example.com")
    )
    assert server_key(make_request("INVITE", host="192.0.2.1:5070")) != invite_key


def test_cancel_key_needs_a_cancel() -> None:
    with pytest.raises(LocalProtocolError):
        cancel_key(make_request("INVITE"))


@pytest.mark.parametrize(
    ("branch", "rfc3261"),
    [
        ("z9hG4bK776asdhds", True),
        ("z9hG4bK", False),  # RFC 4475 badbranch: the cookie and nothing else
        ("776asdhds", False),  # RFC 2543 element
        ("Z9HG4BK776", False),  # the cookie is case-sensitive
        (None, False),
    ],
)
def test_magic_cookie(branch: str | None, rfc3261: bool) -> None:
    assert is_rfc3261_branch(branch) is rfc3261


def test_table_matches_requests_responses_and_cancel() -> None:
    table = TransactionTable()
    invite_server = server_transaction(make_request("INVITE"), now=0.0)
    table.add(invite_server, 0.0)
    assert table.match_request(make_request("INVITE")) is invite_server  # retransmission
    ack = make_request("ACK", to_tag="b1", cseq_method="ACK")
    assert table.match_request(ack) is invite_server
    assert table.match_request(make_request("INVITE", branch="z9hG4bK.other")) is None
    # CANCEL: its own transaction, but it names the INVITE it cancels (9.2)
    cancel = make_request("CANCEL")
    assert table.match_request(cancel) is None
    assert table.match_cancel(cancel) is invite_server
    cancel_server = server_transaction(cancel, now=0.1)
    table.add(cancel_server, 0.1)
    assert table.match_request(make_request("CANCEL")) is cancel_server
    assert table.match_cancel(make_request("CANCEL")) is invite_server
    assert table.match_cancel(make_request("CANCEL", branch="z9hG4bK.nope")) is None
    # a monitor finds the server transaction a response came from
    assert table.match_server_response(make_response(180)) is invite_server
    assert table.match_server_response(make_response(200, method="CANCEL")) is cancel_server
    # responses match client transactions only
    assert table.match_response(make_response(180)) is None
    invite_client = client_transaction(make_request("INVITE", branch="z9hG4bK.out"), now=0.0)
    table.add(invite_client, 0.0)
    assert table.match_response(make_response(180, branch="z9hG4bK.out")) is invite_client
    assert table.match_response(make_response(200, branch="z9hG4bK.out", method="CANCEL")) is None
    assert table.match_request(make_request("INVITE", branch="z9hG4bK.out")) is None


def test_rfc2543_matching_with_inv2543() -> None:
    # RFC 4475 3.4.1 inv2543: no branch at all -> the RFC 2543 rule of 17.2.3.
    data = shared_path("testdata", "rfc4475", "inv2543.dat").read_bytes()
    invite = parse_message(data)
    assert isinstance(invite, Request)
    key = server_key(invite)
    assert key is not None
    assert key[0] == "2543"
    table = TransactionTable()
    txn = server_transaction(invite, now=0.0)
    assert isinstance(txn, InviteServerTransaction)
    table.add(txn, 0.0)
    retransmission = parse_message(data)
    assert isinstance(retransmission, Request)
    assert table.match_request(retransmission) is txn

    def variant(old: bytes, new: bytes) -> Request:
        message = parse_message(data.replace(old, new))
        assert isinstance(message, Request)
        return message

    # Request-URI and From tag, Call-ID, CSeq, top Via must all match
    assert table.match_request(variant(b"INVITE sip:UserB@", b"INVITE sip:UserC@")) is None
    assert table.match_request(variant(b"Call-ID: inv2543", b"Call-ID: other")) is None
    assert table.match_request(variant(b"CSeq: 56 INVITE", b"CSeq: 57 INVITE")) is None
    assert table.match_request(variant(b"UDP iftgw", b"UDP other")) is None
    # the ACK matches when its To tag is the one our response carried (17.2.3)
    busy = parse_message(
        data.replace(b"INVITE sip:UserB@example.com SIP/2.0", b"SIP/2.0 486 Busy Here").replace(
            b"user=phone\r\nCall-ID", b"user=phone;tag=srv\r\nCall-ID"
        )
    )
    assert isinstance(busy, Response)
    txn.send_response(busy, 0.1)
    ack = variant(b"INVITE sip:UserB@example.com SIP/2.0", b"ACK sip:UserB@example.com SIP/2.0")
    ack_data = ack.to_bytes().replace(b"CSeq: 56 INVITE", b"CSeq: 56 ACK")
    good = parse_message(
        ack_data.replace(b"user=phone\r\nCall-ID", b"user=phone;tag=srv\r\nCall-ID")
    )
    wrong = parse_message(
        ack_data.replace(b"user=phone\r\nCall-ID", b"user=phone;tag=x\r\nCall-ID")
    )
    assert isinstance(good, Request)
    assert isinstance(wrong, Request)
    assert table.match_request(good) is txn
    assert table.match_request(wrong) is None
    assert names(txn.receive_request(good, 0.2)) == ["Absorbed"]
    assert txn.state is State.CONFIRMED
    # CANCEL: same Request-URI, tags, Call-ID, CSeq number and top Via (9.2)
    cancel = parse_message(
        variant(b"INVITE sip:UserB@example.com SIP/2.0", b"CANCEL sip:UserB@example.com SIP/2.0")
        .to_bytes()
        .replace(b"CSeq: 56 INVITE", b"CSeq: 56 CANCEL")
    )
    assert isinstance(cancel, Request)
    assert table.match_cancel(cancel) is txn
    assert table.match_request(cancel) is None  # the CANCEL is a transaction of its own


def test_badbranch_is_matched_the_rfc2543_way() -> None:
    # RFC 4475 3.2.1 badbranch: branch=z9hG4bK exactly; must not crash.
    data = shared_path("testdata", "rfc4475", "badbranch.dat").read_bytes()
    options = parse_message(data)
    assert isinstance(options, Request)
    assert options.top_via is not None
    assert options.top_via.branch == "z9hG4bK"
    key = server_key(options)
    assert key is not None
    assert key[0] == "2543"
    table = TransactionTable()
    txn = server_transaction(options, now=0.0)
    table.add(txn, 0.0)
    retransmission = parse_message(data)
    assert isinstance(retransmission, Request)
    assert table.match_request(retransmission) is txn
    assert isinstance(txn, NonInviteServerTransaction)
    assert names(txn.receive_request(retransmission, 0.1)) == ["Absorbed"]
    # its response leads back to it, and a client transaction refuses such a branch
    lines = data.replace(b"OPTIONS sip:user@example.com SIP/2.0", b"SIP/2.0 200 OK")
    response = parse_message(
        lines.replace(b"To: sip:user@example.com", b"To: <sip:user@example.com>;tag=t")
    )
    assert isinstance(response, Response)
    assert server_key_of_response(response) == key
    assert table.match_server_response(response) is txn
    with pytest.raises(LocalProtocolError):
        client_transaction(options, now=0.0)


# -- the table: bounds, time ----------------------------------------------------------------


def options_server(index: int, now: float) -> ServerTransaction:
    return server_transaction(make_request("OPTIONS", branch=f"z9hG4bK.{index}"), now=now)


def test_table_evicts_the_oldest_when_full() -> None:
    table = TransactionTable(max_entries=3)
    txns = [options_server(i, float(i)) for i in range(5)]
    pushed: list[Transaction] = []
    for txn in txns:
        pushed.extend(table.add(txn, txn.created_at))
    assert len(table) == 3
    assert pushed == txns[:2]  # oldest first
    assert table.evicted == 2
    assert list(table) == txns[2:]
    assert txns[0] not in table
    # an evicted transaction no longer reports to the table
    assert txns[0]._listener is None


def test_table_prefers_dropping_over_age_entries() -> None:
    table = TransactionTable(max_entries=2, max_age=10.0)
    old = options_server(0, 0.0)
    young = options_server(1, 5.0)
    table.add(old, 0.0)
    table.add(young, 5.0)
    assert table.add(options_server(2, 11.0), 11.0) == [old]
    assert young in table


def test_table_memory_is_bounded_under_a_flood() -> None:
    table = TransactionTable(max_entries=100)
    for index in range(5000):
        txn = options_server(index, index * 0.001)
        table.add(txn, txn.created_at)
        txn.send_response(make_response(200, method="OPTIONS", branch=f"z9hG4bK.{index}"), 0.0)
    assert len(table) == 100
    assert table.evicted == 4900
    assert len(table._heap) <= 2 * len(table) + 64


def test_table_drives_timers_and_forgets_terminated_transactions() -> None:
    table = TransactionTable()
    client = client_transaction(make_request("OPTIONS", branch="z9hG4bK.c"), now=0.0)
    server = server_transaction(make_request("OPTIONS", branch="z9hG4bK.s"), now=0.0)
    table.add(client, 0.0)
    table.add(server, 0.0)
    assert table.get_timer() == 0.5  # Timer E of the client
    results = table.expire(0.5)
    assert [(r.transaction, names(r.actions)) for r in results] == [(client, ["Retransmit"])]
    assert table.get_timer() == 1.5
    # the server answers: Timer J (32 s) now runs; the client gets its answer: K (5 s)
    server_response = make_response(200, method="OPTIONS", branch="z9hG4bK.s")
    assert isinstance(server, NonInviteServerTransaction)
    server.send_response(server_response, 1.0)
    assert isinstance(client, NonInviteClientTransaction)
    client.receive_response(make_response(200, method="OPTIONS", branch="z9hG4bK.c"), 1.0)
    assert table.get_timer() == 6.0  # K (E's queued deadline at 1.5 went stale)
    results = table.expire(6.0)
    assert [(r.transaction, names(r.actions)) for r in results] == [(client, ["Terminated"])]
    assert client not in table
    assert len(table) == 1
    assert table.get_timer() == 33.0  # J
    table.expire(33.0)
    assert len(table) == 0
    assert table.get_timer() is None


def test_table_removes_a_transaction_the_moment_it_terminates() -> None:
    table = TransactionTable()
    txn = client_transaction(make_request("INVITE"), now=0.0)
    table.add(txn, 0.0)
    txn.transport_error(0.1)
    assert len(table) == 0
    assert table.match_response(make_response(200)) is None  # now a stray


def test_table_evicts_transactions_older_than_max_age() -> None:
    table = TransactionTable(max_age=100.0)
    txn = client_transaction(make_request("INVITE"), now=0.0)
    table.add(txn, 0.0)
    assert isinstance(txn, InviteClientTransaction)
    txn.receive_response(make_response(180), 0.1)  # Proceeding: no timer at all
    assert txn.get_timer() is None
    assert table.get_timer() == 100.0
    results = table.expire(100.0)
    assert len(results) == 1
    assert results[0].transaction is txn
    assert results[0].actions == [Evicted(reason="max_age")]
    assert len(table) == 0


def test_table_replaces_a_transaction_under_the_same_key() -> None:
    table = TransactionTable()
    first = options_server(1, 0.0)
    second = options_server(1, 1.0)
    table.add(first, 0.0)
    assert table.add(second, 1.0) == [first]
    assert table.get(second.key) is second


@pytest.mark.parametrize(
    ("prepare", "match"),
    [
        (lambda t, txn: t.add(txn, 0.0), "already in a table"),
        (lambda t, txn: txn.transport_error(0.0), "terminated"),
    ],
)
def test_table_add_misuse(
    prepare: Callable[[TransactionTable, Transaction], object], match: str
) -> None:
    table = TransactionTable()
    txn = client_transaction(make_request("OPTIONS"), now=0.0)
    prepare(table, txn)
    with pytest.raises(LocalProtocolError, match=match):
        table.add(txn, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"max_entries": 0}, "max_entries"), ({"max_age": 0.0}, "max_age")]
)
def test_table_rejects_bad_bounds(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TransactionTable(**kwargs)  # type: ignore[arg-type]
    assert info.value.key_path == key


def test_monitor_flow_observes_both_directions() -> None:
    # A monitor keeps observer server transactions: the request creates one, the
    # UAS's responses go through it, and an out-of-state response is reported.
    table = TransactionTable()
    invite = make_request("INVITE")
    txn = server_transaction(invite, now=0.0, observer=True)
    table.add(txn, 0.0)
    seen = table.match_server_response(make_response(180))
    assert seen is txn
    assert names(txn.send_response(make_response(180), 0.1)) == ["SendResponse"]
    assert names(txn.send_response(make_response(486), 0.2)) == ["SendResponse"]
    assert names(txn.send_response(make_response(486), 0.7)) == ["Absorbed"]  # Timer G copy
    assert names(txn.send_response(make_response(200), 0.8)) == ["Ignored"]  # out of state
    ack = make_request("ACK", to_tag="b1", cseq_method="ACK")
    matched = table.match_request(ack)
    assert matched is txn
    assert names(matched.receive_request(ack, 0.9)) == ["Absorbed"]
    assert txn.state is State.CONFIRMED


def test_actions_are_frozen_contract_types() -> None:
    action = Timeout(timer=Timer.B)
    with pytest.raises(AttributeError):
        action.timer = Timer.F  # type: ignore[misc]
    assert Terminated(previous=State.CALLING) == Terminated(previous=State.CALLING)
    assert TransportFailed(state=State.TRYING).state is State.TRYING
