"""Tests for sipwarden.sip.dialog: every row of the dialog table, both sides of a call.

The call under test: alice (tag ``a1``) calls bob through two record-routing
proxies; bob's UA answers with tag ``b1`` (forks answer with ``b2``, ``b3``).
Messages are built as bytes and parsed, the clock is a plain float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from sipwarden.errors import ConfigError, LocalProtocolError
from sipwarden.sip.dialog import (
    DIALOG_TABLE,
    Dialog,
    DialogEvent,
    DialogId,
    DialogOutcome,
    DialogState,
    DialogTable,
    Role,
    creates_dialog,
)
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message

CALL_ID = "dlg-1@alice.example.com"
ALICE = "<sip:alice@example.com>"
BOB = "<sip:bob@example.com>"
RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")  # p1 nearest the UAS
ALICE_CONTACT = "<sip:alice@192.0.2.10:5060>"
BOB_CONTACT = "<sip:bob@192.0.2.20:5060>"
T1_64 = 32.0


def _parse(lines: list[str]) -> Request | Response:
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request | Response)
    return message


def request(
    method: str,
    *,
    seq: int,
    from_callee: bool = False,
    to_tag: str | None = "b1",
    callee_tag: str | None = None,
    uri: str = "sip:bob@192.0.2.20:5060",
    contact: str | None = None,
    record_route: tuple[str, ...] = (),
    cseq_method: str | None = None,
) -> Request:
    """A request from alice (or, with ``from_callee``, from bob with tag ``callee_tag``)."""
    if from_callee:
        tag = callee_tag or to_tag
        from_, to = f"{BOB};tag={tag}", f"{ALICE};tag=a1"
        uri = "sip:alice@192.0.2.10:5060"
    else:
        from_ = f"{ALICE};tag=a1"
        to = BOB + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.{method}{seq}",
        *(f"Record-Route: {route}" for route in record_route),
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {seq} {cseq_method or method}",
        *([f"Contact: {contact}"] if contact else []),
        "Content-Length: 0",
    ]
    message = _parse(lines)
    assert isinstance(message, Request)
    return message


def response(
    status: int,
    *,
    to_tag: str | None = "b1",
    seq: int = 1,
    method: str = "INVITE",
    from_callee_request: bool = False,
    record_route: tuple[str, ...] = RR,
    contact: str | None = BOB_CONTACT,
) -> Response:
    """A response to alice's request (or, with ``from_callee_request``, to bob's)."""
    if from_callee_request:
        from_, to = f"{BOB};tag={to_tag}", f"{ALICE};tag=a1"
    else:
        from_ = f"{ALICE};tag=a1"
        to = BOB + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SIP/2.0 {status} Reason",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.x",
        *(f"Record-Route: {route}" for route in record_route),
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {seq} {method}",
        *([f"Contact: {contact}"] if contact else []),
        "Content-Length: 0",
    ]
    message = _parse(lines)
    assert isinstance(message, Response)
    return message


def invite(*, uri: str = "sip:bob@example.com", record_route: tuple[str, ...] = RR) -> Request:
    # The INVITE as the UAS receives it: the proxies' Record-Route on top.
    return request(
        "INVITE", seq=1, to_tag=None, uri=uri, contact=ALICE_CONTACT, record_route=record_route
    )


# -- creates_dialog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "to_tag", "methods", "creates"),
    [
        (180, "INVITE", "b1", None, True),  # tagged 101-199 to INVITE: early dialog
        (183, "INVITE", "b1", None, True),
        (200, "INVITE", "b1", None, True),  # 2xx: confirmed dialog
        (100, "INVITE", "b1", None, False),  # 100 is hop-by-hop (12.1: 101-199)
        (180, "INVITE", None, None, False),  # no To tag
        (486, "INVITE", "b1", None, False),  # failure
        (200, "OPTIONS", "b1", None, False),  # not a dialog-creating method
        (200, "SUBSCRIBE", "b1", None, False),  # not tracked by default
        (200, "SUBSCRIBE", "b1", frozenset({"INVITE", "SUBSCRIBE"}), True),  # RFC 6665
        (180, "SUBSCRIBE", "b1", frozenset({"INVITE", "SUBSCRIBE"}), False),  # only 2xx
    ],
)
def test_creates_dialog(
    status: int, method: str, to_tag: str | None, methods: frozenset[str] | None, creates: bool
) -> None:
    message = response(status, method=method, to_tag=to_tag)
    if methods is None:
        assert creates_dialog(message) is creates
    else:
        assert creates_dialog(message, methods) is creates


def test_create_refuses_a_response_that_creates_no_dialog() -> None:
    with pytest.raises(LocalProtocolError, match=r"12\.1"):
        Dialog.create(response(486), role=Role.UAC, now=0.0)


# -- creation on both sides (12.1.1, 12.1.2) --------------------------------------------------


def test_uac_side_dialog_from_180_then_200() -> None:
    table = DialogTable(role=Role.UAC)
    [created] = table.on_response(response(180), 1.0, request=invite())
    dialog = created.dialog
    assert created.created
    assert (created.event, created.state) == (DialogEvent.PROVISIONAL, DialogState.EARLY)
    assert dialog.id == DialogId(CALL_ID, "a1", "b1")
    # 12.1.2: route set = the response's Record-Route reversed; target = its Contact
    assert dialog.route_set == tuple(reversed(RR))
    assert dialog.remote_target == "sip:bob@192.0.2.20:5060"
    assert dialog.local_target == "sip:alice@192.0.2.10:5060"
    assert (dialog.local_seq, dialog.remote_seq) == (1, None)
    assert (dialog.local_uri, dialog.remote_uri) == ("sip:alice@example.com", "sip:bob@example.com")
    assert not dialog.secure
    # 13.2.2.4: the 2xx confirms it and the route set is recomputed from the 2xx
    final_rr = ("<sip:p1.example.com;lr>",)
    ok = response(200, record_route=final_rr, contact="<sip:bob@198.51.100.5>")
    [confirmed] = table.on_response(ok, 2.0)
    assert confirmed.dialog is dialog
    assert (confirmed.previous, confirmed.state) == (DialogState.EARLY, DialogState.CONFIRMED)
    assert dialog.route_set == final_rr
    assert dialog.remote_target == "sip:bob@198.51.100.5"
    assert dialog.confirmed_at == 2.0


def test_uas_side_dialog_from_the_invite() -> None:
    table = DialogTable(role=Role.UAS)
    [created] = table.on_response(response(180), 1.0, request=invite())
    dialog = created.dialog
    assert dialog.id == DialogId(CALL_ID, "b1", "a1")  # local = the callee's tag
    # 12.1.1: route set = the request's Record-Route in order; target = its Contact
    assert dialog.route_set == RR
    assert dialog.remote_target == "sip:alice@192.0.2.10:5060"
    assert dialog.local_target == "sip:bob@192.0.2.20:5060"
    assert (dialog.local_seq, dialog.remote_seq) == (None, 1)
    assert (dialog.caller_tag, dialog.callee_tag) == ("a1", "b1")
    [confirmed] = table.on_response(response(200, record_route=()), 2.0)
    assert confirmed.state is DialogState.CONFIRMED
    assert dialog.route_set == RR  # the UAS's route set comes from the request


def test_uas_side_without_the_request_uses_the_copied_record_route() -> None:
    dialog = Dialog.create(response(200), role=Role.UAS, now=0.0)
    assert dialog.route_set == RR  # 12.1.1: the response copies the request's Record-Route
    assert dialog.remote_target is None
    assert dialog.confirmed


def test_sips_request_uri_makes_the_dialog_secure() -> None:
    secure = Dialog.create(
        response(200), role=Role.UAC, now=0.0, request=invite(uri="sips:bob@example.com")
    )
    assert secure.secure


def test_a_2xx_creates_a_confirmed_dialog_directly() -> None:
    table = DialogTable()
    [created] = table.on_response(response(200), 1.0)
    assert created.created
    assert created.state is DialogState.CONFIRMED


# -- every row of the dialog table --------------------------------------------------------------


class Row(NamedTuple):
    state: DialogState
    event: DialogEvent
    target: DialogState


def apply(dialog: Dialog, event: DialogEvent, now: float) -> DialogOutcome:
    """Feed ``dialog`` the message that is ``event`` (a UAC-side view of alice's call)."""
    match event:
        case DialogEvent.PROVISIONAL:
            return dialog.handle_response(response(180), now)
        case DialogEvent.SUCCESS:
            return dialog.handle_response(response(200), now)
        case DialogEvent.FAILURE:
            return dialog.handle_response(response(486), now)
        case DialogEvent.REQUEST:
            return dialog.handle_request(request("INFO", seq=5), now)
        case DialogEvent.ACK:
            return dialog.handle_request(request("ACK", seq=1), now)
        case DialogEvent.BYE:
            return dialog.handle_request(request("BYE", seq=6), now)
        case DialogEvent.RESPONSE:
            return dialog.handle_response(response(200, seq=5, method="INFO"), now)
        case DialogEvent.ENDING_RESPONSE:
            return dialog.handle_response(response(481, seq=5, method="INFO"), now)
        case DialogEvent.EXPIRED:
            return dialog.timeout(now)
    raise AssertionError(event)


def dialog_in(state: DialogState) -> Dialog:
    if state is DialogState.EARLY:
        return Dialog.create(response(180), role=Role.UAC, now=0.0)
    dialog = Dialog.create(response(200), role=Role.UAC, now=0.0)
    if state is DialogState.TERMINATED:
        dialog.handle_request(request("BYE", seq=2), 0.0)
    assert dialog.state is state
    return dialog


DS, DE = DialogState, DialogEvent
# RFC 3261 12, 13.2.2.4, 15 (annotated in DIALOG_TABLE)
ROWS = [
    Row(DS.EARLY, DE.PROVISIONAL, DS.EARLY),  # another 18x
    Row(DS.EARLY, DE.SUCCESS, DS.CONFIRMED),  # 2xx confirms (13.2.2.4)
    Row(DS.EARLY, DE.FAILURE, DS.TERMINATED),  # 12.3
    Row(DS.EARLY, DE.REQUEST, DS.EARLY),  # PRACK/UPDATE/INFO in an early dialog
    Row(DS.EARLY, DE.RESPONSE, DS.EARLY),
    Row(DS.EARLY, DE.BYE, DS.TERMINATED),  # the caller may BYE an early dialog (15)
    Row(DS.EARLY, DE.ENDING_RESPONSE, DS.TERMINATED),  # 481 (12.2.1.2, RFC 5057)
    Row(DS.EARLY, DE.EXPIRED, DS.TERMINATED),  # never answered
    Row(DS.CONFIRMED, DE.PROVISIONAL, DS.CONFIRMED),  # a 1xx overtaken by its 2xx
    Row(DS.CONFIRMED, DE.SUCCESS, DS.CONFIRMED),  # 2xx retransmission (13.3.1.4)
    Row(DS.CONFIRMED, DE.REQUEST, DS.CONFIRMED),
    Row(DS.CONFIRMED, DE.ACK, DS.CONFIRMED),
    Row(DS.CONFIRMED, DE.RESPONSE, DS.CONFIRMED),
    Row(DS.CONFIRMED, DE.BYE, DS.TERMINATED),  # 15
    Row(DS.CONFIRMED, DE.ENDING_RESPONSE, DS.TERMINATED),  # 12.2.1.2
    Row(DS.CONFIRMED, DE.EXPIRED, DS.TERMINATED),  # idle for too long
    Row(DS.TERMINATED, DE.BYE, DS.TERMINATED),  # retransmitted or crossing BYE
    Row(DS.TERMINATED, DE.ACK, DS.TERMINATED),  # a late ACK
    Row(DS.TERMINATED, DE.RESPONSE, DS.TERMINATED),  # the 200 to the BYE
    Row(DS.TERMINATED, DE.ENDING_RESPONSE, DS.TERMINATED),  # 481 to a crossing BYE
    Row(DS.TERMINATED, DE.SUCCESS, DS.TERMINATED),  # a 2xx retransmission crossing the BYE
]


def test_rows_cover_the_table() -> None:
    assert {(row.state, row.event): row.target for row in ROWS} == dict(DIALOG_TABLE)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.state.value}+{row.event.name}")
def test_every_row(row: Row) -> None:
    dialog = dialog_in(row.state)
    outcome = apply(dialog, row.event, 1.0)
    assert (outcome.event, outcome.previous, outcome.state) == (row.event, row.state, row.target)
    assert not outcome.ignored
    assert outcome.status is None
    assert dialog.state is row.target
    if row.target is not row.state and row.target is DS.TERMINATED:
        assert dialog.terminated_at == 1.0


UNDEFINED = [
    pytest.param(state, event, id=f"{state.value}+{event.name}")
    for state in DialogState
    for event in DialogEvent
    if (state, event) not in DIALOG_TABLE
]


@pytest.mark.parametrize(("state", "event"), UNDEFINED)
def test_undefined_pairs_are_ignored_and_reported(state: DialogState, event: DialogEvent) -> None:
    dialog = dialog_in(state)
    seqs = (dialog.local_seq, dialog.remote_seq)
    outcome = apply(dialog, event, 1.0)
    assert outcome.ignored
    assert outcome.state is state
    assert dialog.state is state
    assert (dialog.local_seq, dialog.remote_seq) == seqs
    # a request in a dialog that is over is answered 481 (12.2.2); an ACK gets nothing
    expected = 481 if event is DialogEvent.REQUEST else None
    assert outcome.status == expected


# -- CSeq order (12.2.2) ------------------------------------------------------------------------


def test_out_of_order_cseq_is_rejected_with_500() -> None:
    table = DialogTable()
    [created] = table.on_response(response(200), 0.0, request=invite())
    dialog = created.dialog
    # bob's requests: the remote sequence starts at his first request
    first = table.on_request(request("INFO", seq=10, from_callee=True), 1.0)
    assert first is not None
    assert first.from_local is False
    assert first.status is None
    assert dialog.remote_seq == 10
    late = table.on_request(request("INFO", seq=5, from_callee=True), 2.0)
    assert late is not None
    assert late.status == 500
    assert "12.2.2" in late.reason
    assert dialog.remote_seq == 10
    # alice's requests are checked against her own sequence
    assert dialog.local_seq == 1
    ok = table.on_request(request("UPDATE", seq=2), 3.0)
    assert ok is not None
    assert ok.from_local is True
    assert ok.status is None
    assert dialog.local_seq == 2
    behind = table.on_request(request("INFO", seq=1), 4.0)
    assert behind is not None
    assert behind.status == 500
    # ACK and CANCEL reuse the CSeq number of their request: never out of order
    ack = table.on_request(request("ACK", seq=1), 5.0)
    assert ack is not None
    assert ack.status is None
    # an equal number is a retransmission for the transaction layer, not an error
    again = table.on_request(request("UPDATE", seq=2), 6.0)
    assert again is not None
    assert again.status is None


def test_an_out_of_order_bye_does_not_end_the_dialog() -> None:
    dialog = dialog_in(DialogState.CONFIRMED)
    dialog.handle_request(request("INFO", seq=7), 1.0)
    outcome = dialog.handle_request(request("BYE", seq=3), 2.0)
    assert outcome.status == 500
    assert dialog.confirmed


# -- lookups from either direction ---------------------------------------------------------------


def test_lookup_from_either_direction() -> None:
    table = DialogTable()
    [created] = table.on_response(response(200), 0.0)
    dialog = created.dialog
    assert table.find(CALL_ID, "a1", "b1") is dialog  # alice -> bob
    assert table.find(CALL_ID, "b1", "a1") is dialog  # bob -> alice
    assert table.find(CALL_ID, "a1", "zz") is None
    assert table.find("other", "a1", "b1") is None
    assert table.match(request("BYE", seq=2, from_callee=True)) is dialog
    assert table.match(request("INVITE", seq=1, to_tag=None)) is None  # not in a dialog
    assert table.get(DialogId(CALL_ID, "a1", "b1")) is dialog


def test_requests_outside_any_dialog_return_none() -> None:
    table = DialogTable()
    assert table.on_request(request("INVITE", seq=1, to_tag=None), 0.0) is None  # no To tag
    assert table.on_request(request("BYE", seq=2), 0.0) is None  # no such dialog: 481
    assert table.on_response(response(100, to_tag=None), 0.0) == []  # 100 Trying
    assert table.on_response(response(200, method="OPTIONS"), 0.0) == []


# -- forking (12.1, 12.3, 13.2.2.4) -------------------------------------------------------------


def test_forked_early_dialogs_and_the_answer() -> None:
    table = DialogTable()
    for tag in ("b1", "b2", "b3"):
        [outcome] = table.on_response(response(180, to_tag=tag), 1.0)
        assert outcome.created
    forks = table.forks(CALL_ID, "a1")
    assert [dialog.remote_tag for dialog in forks] == ["b1", "b2", "b3"]
    assert all(dialog.early for dialog in forks)
    # b2 answers: it is confirmed; the others get 64*T1 more at most
    [answer] = table.on_response(response(200, to_tag="b2"), 10.0)
    assert answer.state is DialogState.CONFIRMED
    assert answer.dialog.remote_tag == "b2"
    assert table.get_timer() == 10.0 + T1_64
    expired = table.expire(10.0 + T1_64)
    assert sorted(o.dialog.remote_tag for o in expired) == ["b1", "b3"]
    assert all(
        o.event is DialogEvent.EXPIRED and o.state is DialogState.TERMINATED for o in expired
    )
    assert [dialog.remote_tag for dialog in table.forks(CALL_ID, "a1")] == ["b2"]


def test_a_non_2xx_final_ends_every_early_fork() -> None:
    # 12.3: whatever To tag the final carries (here a proxy's own 487)
    table = DialogTable()
    table.on_response(response(180, to_tag="b1"), 1.0)
    table.on_response(response(183, to_tag="b2"), 1.0)
    outcomes = table.on_response(response(487, to_tag="proxy"), 2.0)
    assert sorted(o.dialog.remote_tag for o in outcomes) == ["b1", "b2"]
    assert all(o.event is DialogEvent.FAILURE for o in outcomes)
    assert all(o.dialog.terminated for o in outcomes)


def test_a_final_from_one_fork_ends_the_others_too() -> None:
    table = DialogTable()
    table.on_response(response(180, to_tag="b1"), 1.0)
    table.on_response(response(180, to_tag="b2"), 1.0)
    outcomes = table.on_response(response(486, to_tag="b1"), 2.0)
    assert [(o.dialog.remote_tag, o.state) for o in outcomes] == [
        ("b1", DialogState.TERMINATED),
        ("b2", DialogState.TERMINATED),
    ]


def test_forks_of_a_later_invite_are_not_ended_by_an_earlier_failure() -> None:
    # After a 401, the retried INVITE (CSeq 2) has its own early dialogs.
    table = DialogTable()
    table.on_response(response(180, to_tag="b1", seq=2), 1.0)
    assert table.on_response(response(401, to_tag="x", seq=1), 2.0) == []
    assert table.forks(CALL_ID, "a1")[0].early


# -- termination ---------------------------------------------------------------------------------


def test_bye_terminates_and_the_stragglers_are_absorbed() -> None:
    table = DialogTable()
    [created] = table.on_response(response(200), 0.0)
    dialog = created.dialog
    bye = table.on_request(request("BYE", seq=4, from_callee=True), 100.0)
    assert bye is not None
    assert (bye.event, bye.state, bye.from_local) == (DE.BYE, DS.TERMINATED, False)
    # the BYE's 200, a retransmitted BYE: absorbed while the dialog lingers
    [ok] = table.on_response(response(200, seq=4, method="BYE", from_callee_request=True), 100.1)
    assert not ok.ignored
    again = table.on_request(request("BYE", seq=4, from_callee=True), 100.5)
    assert again is not None
    assert not again.ignored
    # a new request in the ended dialog: 481
    late = table.on_request(request("INFO", seq=9), 101.0)
    assert late is not None
    assert (late.ignored, late.status) == (True, 481)
    # after 64*T1 it is gone, silently (its end was reported already)
    assert table.get_timer() == 100.0 + T1_64
    assert table.expire(100.0 + T1_64) == []
    assert len(table) == 0
    assert table.find(CALL_ID, "a1", "b1") is None
    assert dialog.terminated


@pytest.mark.parametrize(
    ("status", "method", "ends"),
    [
        (481, "INFO", True),  # 12.2.1.2: the dialog is gone at the peer
        (408, "UPDATE", True),  # 12.2.1.2
        (481, "CANCEL", False),  # only the cancelled transaction is gone
        (404, "INFO", False),  # not acted on (RFC 5057 usages are not tracked)
        (500, "INFO", False),
    ],
)
def test_responses_that_end_a_dialog(status: int, method: str, ends: bool) -> None:
    dialog = dialog_in(DialogState.CONFIRMED)
    outcome = dialog.handle_response(response(status, seq=3, method=method), 1.0)
    assert dialog.terminated is ends
    assert (outcome.event is DialogEvent.ENDING_RESPONSE) is ends


def test_target_refresh_updates_the_remote_target() -> None:
    dialog = dialog_in(DialogState.CONFIRMED)
    # bob re-INVITEs from a new address: the receiver takes it at once (12.2.2)
    dialog.handle_request(
        request("INVITE", seq=20, from_callee=True, contact="<sip:bob@203.0.113.9>"), 1.0
    )
    assert dialog.remote_target == "sip:bob@203.0.113.9"
    # alice re-INVITEs: bob's 2xx carries his target (12.2.1.2)
    dialog.handle_request(request("INVITE", seq=2, contact="<sip:alice@203.0.113.1>"), 2.0)
    assert dialog.local_target == "sip:alice@203.0.113.1"
    dialog.handle_response(response(200, seq=2, contact="<sip:bob@203.0.113.10>"), 2.1)
    assert dialog.remote_target == "sip:bob@203.0.113.10"
    # a non-refresh request leaves the targets alone
    dialog.handle_request(request("INFO", seq=3, contact="<sip:alice@elsewhere>"), 3.0)
    assert dialog.local_target == "sip:alice@203.0.113.1"


# -- lifetimes and bounds ------------------------------------------------------------------------


def test_an_early_dialog_expires_unless_refreshed() -> None:
    table = DialogTable()  # early_timeout = Timer C = 180 s
    [created] = table.on_response(response(180), 0.0)
    assert table.get_timer() == 180.0
    table.on_response(response(180), 60.0)  # 13.3.1.1: a provisional every minute
    assert table.get_timer() == 240.0
    assert table.expire(239.0) == []
    [expired] = table.expire(240.0)
    assert expired.dialog is created.dialog
    assert (expired.event, expired.previous, expired.state) == (
        DE.EXPIRED,
        DS.EARLY,
        DS.TERMINATED,
    )
    assert expired.from_local is None
    assert len(table) == 0


def test_a_confirmed_dialog_expires_after_idle_timeout() -> None:
    table = DialogTable(idle_timeout=600.0)
    table.on_response(response(200), 0.0)
    table.on_request(request("INFO", seq=2), 300.0)  # activity keeps it alive
    assert table.get_timer() == 900.0
    [expired] = table.expire(900.0)
    assert expired.previous is DialogState.CONFIRMED


def test_out_of_state_messages_keep_nothing_alive() -> None:
    table = DialogTable(idle_timeout=600.0)
    table.on_response(response(200), 0.0)
    table.on_request(request("INFO", seq=5), 100.0)
    outcome = table.on_request(request("INFO", seq=4), 500.0)  # out of order
    assert outcome is not None
    assert outcome.status == 500
    assert table.get_timer() == 700.0


def test_table_is_bounded_and_evicts_terminated_dialogs_first() -> None:
    table = DialogTable(max_dialogs=3)
    table.on_response(response(200, to_tag="t0"), 0.0)
    table.on_response(response(200, to_tag="t1"), 0.0)
    table.on_response(response(200, to_tag="t2"), 0.0)
    # t1 hangs up: it is the first to go when room is needed
    table.on_request(request("BYE", seq=2, to_tag="t1"), 1.0)
    table.on_response(response(200, to_tag="t3"), 2.0)
    assert sorted(d.remote_tag for d in table) == ["t0", "t2", "t3"]
    # then the oldest
    table.on_response(response(200, to_tag="t4"), 3.0)
    assert sorted(d.remote_tag for d in table) == ["t2", "t3", "t4"]
    assert table.evicted == 2
    assert [d.remote_tag for d in table.forks(CALL_ID, "a1")] == ["t2", "t3", "t4"]


def test_memory_is_bounded_under_a_flood_of_early_dialogs() -> None:
    table = DialogTable(max_dialogs=50)
    for index in range(3000):
        table.on_response(response(180, to_tag=f"f{index}"), index * 0.01)
        table.on_response(response(180, to_tag=f"f{index}"), index * 0.01 + 0.005)  # refresh
    assert len(table) == 50
    assert table.evicted == 2950
    assert len(table._heap) <= 2 * len(table) + 64
    assert len(table._forks[(CALL_ID, "a1")]) == 50


def test_remove_forgets_a_dialog() -> None:
    table = DialogTable()
    [created] = table.on_response(response(200), 0.0)
    table.remove(created.dialog)
    table.remove(created.dialog)  # no-op the second time
    assert len(table) == 0
    assert table.forks(CALL_ID, "a1") == []


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: DialogTable(max_dialogs=0), "max_dialogs"),
        (lambda: DialogTable(linger=-1.0), "linger"),
        (lambda: DialogTable(idle_timeout=-5.0), "idle_timeout"),
    ],
)
def test_table_rejects_bad_bounds(make: Callable[[], DialogTable], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.key_path == key


def test_timeout_of_a_terminated_dialog_is_ignored() -> None:
    dialog = dialog_in(DialogState.TERMINATED)
    outcome = dialog.timeout(5.0)
    assert outcome.ignored
    assert dialog.terminated
