"""Tests for sipwarden.detect.passive_state: the timers, bounds and state rows of the lean view.

The out-of-state detector's own tests play whole call flows; these pin down
what those flows do not reach: the RFC timer each phase waits (and its zero
on reliable transports), what the bounds evict first, and which responses
end a dialog.
"""

from __future__ import annotations

import pytest

from sipwarden.detect.passive_state import PassiveDialogs, PassiveTransactions, dialog_key
from sipwarden.errors import ConfigError
from sipwarden.sip.dialog import DialogState
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message
from sipwarden.sip.transaction import TransactionKey, server_key, server_key_of_response

T0 = 1_700_000_000.0
LINGER = 32.0  # 64*T1: Timers H, J (UDP), L and a terminated dialog's linger
T4 = 5.0  # Timer I on UDP


def request(
    method: str,
    *,
    branch: str = "z9hG4bK-1",
    transport: str = "UDP",
    from_tag: str | None = "a1",
    to_tag: str | None = None,
) -> Request:
    lines = [
        f"{method} sip:100@192.0.2.20 SIP/2.0",
        f"Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}",
        "From: <sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else ""),
        "To: <sip:100@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: c1",
        f"CSeq: 1 {'INVITE' if method == 'ACK' else method}",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode(), strict=False)
    assert isinstance(message, Request)
    return message


def response(
    status: int,
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK-1",
    transport: str = "UDP",
    to_tag: str | None = "b1",
) -> Response:
    lines = [
        f"SIP/2.0 {status} Whatever",
        f"Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:100@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: c1",
        f"CSeq: 1 {method}",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode(), strict=False)
    assert isinstance(message, Response)
    return message


def begun(table: PassiveTransactions, message: Request, now: float = T0) -> TransactionKey:
    key = server_key(message)
    assert key is not None
    table.begin(key, now)
    return key


def answer(table: PassiveTransactions, message: Response, now: float) -> bool:
    key = server_key_of_response(message)
    assert key is not None
    return table.respond(key, message, now)


# -- transactions -------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "held_for"), [("UDP", LINGER), ("TCP", 0.0)])
def test_a_non_invite_final_response_starts_timer_j(transport: str, held_for: float) -> None:
    table = PassiveTransactions(max_entries=8)
    key = begun(table, request("OPTIONS", transport=transport))
    assert answer(table, response(200, "OPTIONS", transport=transport), T0 + 1)
    assert (key in table) is (held_for > 0)  # zero on a reliable transport (17.2.2)
    table.expire(T0 + 1 + LINGER)
    assert key not in table
    assert table.evicted == 0  # it ended: nothing was lost


@pytest.mark.parametrize(("transport", "held_for"), [("UDP", T4), ("TCP", 0.0)])
def test_the_ack_of_a_failed_invite_starts_timer_i(transport: str, held_for: float) -> None:
    table = PassiveTransactions(max_entries=8)
    key = begun(table, request("INVITE", transport=transport))
    answer(table, response(486, transport=transport), T0 + 1)
    assert table.acknowledge(key, request("ACK", transport=transport, to_tag="b1"), T0 + 2)
    table.expire(T0 + 2 + held_for - 0.1)
    assert (key in table) is (held_for > 0)
    table.expire(T0 + 2 + held_for)
    assert key not in table


def test_an_unacknowledged_failure_ends_with_timer_h() -> None:
    table = PassiveTransactions(max_entries=8)
    key = begun(table, request("INVITE"))
    answer(table, response(486), T0 + 1)
    table.expire(T0 + 1 + LINGER - 0.1)
    assert key in table
    table.expire(T0 + 1 + LINGER)
    assert key not in table
    assert table.evicted == 0


def test_an_ack_before_any_final_response_does_not_fit() -> None:
    table = PassiveTransactions(max_entries=8)
    key = begun(table, request("INVITE"))
    answer(table, response(180), T0 + 1)  # a provisional changes nothing
    assert not table.acknowledge(key, request("ACK", to_tag="b1"), T0 + 2)
    answer(table, response(200), T0 + 3)
    assert table.acknowledge(key, request("ACK", to_tag="b1"), T0 + 4)  # RFC 6026 Accepted
    assert key in table


def test_an_unanswered_transaction_is_dropped_at_its_max_age_and_counted() -> None:
    table = PassiveTransactions(max_entries=8, max_age=600.0)
    key = begun(table, request("INVITE"))
    table.expire(T0 + 599.0)
    assert key in table
    table.expire(T0 + 600.0)
    assert key not in table
    assert table.evicted == 1  # its late answer would look stray


def test_a_full_table_evicts_the_transaction_closest_to_its_end() -> None:
    table = PassiveTransactions(max_entries=2)
    ringing = begun(table, request("INVITE", branch="z9hG4bK-ring"))
    answered = begun(table, request("OPTIONS", branch="z9hG4bK-opt"), T0 + 1)
    answer(table, response(200, "OPTIONS", branch="z9hG4bK-opt"), T0 + 2)
    new = begun(table, request("BYE", branch="z9hG4bK-bye"), T0 + 3)
    # The answered OPTIONS had 32 s to go, the ringing INVITE up to ten minutes.
    assert (ringing in table, answered in table, new in table) == (True, False, True)
    assert table.evicted == 1
    assert len(table) == 2


def test_transaction_bounds_are_validated() -> None:
    with pytest.raises(ConfigError):
        PassiveTransactions(max_entries=0)


# -- dialogs ---------------------------------------------------------------------------------


def test_the_dialog_key_is_the_same_from_either_side() -> None:
    outbound = request("BYE", from_tag="a1", to_tag="b1")
    inbound = request("BYE", from_tag="b1", to_tag="a1")
    assert dialog_key(outbound) == dialog_key(inbound) == ("c1", "a1", "b1")
    assert dialog_key(request("BYE", from_tag=None, to_tag="b1")) == ("c1", "", "b1")  # RFC 2543
    assert dialog_key(request("INVITE")) is None  # no To tag: no dialog


def test_a_tagged_provisional_creates_an_early_dialog_and_the_2xx_confirms_it() -> None:
    dialogs = PassiveDialogs(max_dialogs=8, idle_timeout=3600.0)
    key = ("c1", "a1", "b1")
    dialogs.on_response(response(100, to_tag=None), T0)
    assert len(dialogs) == 0  # a 100 (Trying) is hop-by-hop
    dialogs.on_response(response(180), T0 + 1)
    assert dialogs.state_of(key) is DialogState.EARLY
    assert not dialogs.on_request(key, "ACK", T0 + 2).fits  # nothing to acknowledge yet
    dialogs.on_response(response(200), T0 + 3)
    assert dialogs.state_of(key) is DialogState.CONFIRMED
    assert dialogs.on_request(key, "ACK", T0 + 4).fits


def test_a_response_without_a_transaction_never_creates_a_dialog() -> None:
    dialogs = PassiveDialogs(max_dialogs=8, idle_timeout=3600.0)
    assert not dialogs.on_late_response(response(200), T0)
    assert len(dialogs) == 0


@pytest.mark.parametrize(
    ("status", "method", "state"),
    [
        (481, "INFO", DialogState.TERMINATED),  # 12.2.1.2
        (408, "UPDATE", DialogState.TERMINATED),
        (481, "CANCEL", DialogState.CONFIRMED),  # only the cancelled transaction is gone
        (491, "INVITE", DialogState.CONFIRMED),  # a refused re-INVITE
        (200, "INFO", DialogState.CONFIRMED),
    ],
)
def test_which_responses_end_a_confirmed_dialog(
    status: int, method: str, state: DialogState
) -> None:
    dialogs = PassiveDialogs(max_dialogs=8, idle_timeout=3600.0)
    dialogs.on_response(response(200), T0)
    dialogs.on_response(response(status, method), T0 + 1)
    assert dialogs.state_of(("c1", "a1", "b1")) is state


def test_a_terminated_dialog_absorbs_a_bye_but_refuses_other_requests_then_goes() -> None:
    dialogs = PassiveDialogs(max_dialogs=8, idle_timeout=3600.0)
    key = ("c1", "a1", "b1")
    dialogs.on_response(response(200), T0)
    assert dialogs.on_request(key, "BYE", T0 + 1).fits
    assert dialogs.on_request(key, "BYE", T0 + 2).fits  # the other party hung up too
    refused = dialogs.on_request(key, "INFO", T0 + 3)
    assert (refused.state, refused.fits) == (DialogState.TERMINATED, False)
    dialogs.expire(T0 + 1 + LINGER)  # lingers 64*T1 from its end, not from the stragglers
    assert len(dialogs) == 0
    assert dialogs.evicted == 0


def test_activity_keeps_a_dialog_alive() -> None:
    dialogs = PassiveDialogs(max_dialogs=8, idle_timeout=100.0)
    key = ("c1", "a1", "b1")
    dialogs.on_response(response(200), T0)
    dialogs.on_request(key, "INFO", T0 + 90.0)
    dialogs.expire(T0 + 150.0)
    assert dialogs.state_of(key) is DialogState.CONFIRMED
    dialogs.expire(T0 + 190.0)
    assert dialogs.state_of(key) is None


def test_a_full_table_evicts_terminated_then_early_then_confirmed_dialogs() -> None:
    dialogs = PassiveDialogs(max_dialogs=3, idle_timeout=3600.0)
    dialogs.on_response(response(200, to_tag="established"), T0)
    dialogs.on_response(response(180, to_tag="ringing"), T0 + 1)
    dialogs.on_response(response(200, to_tag="over"), T0 + 2)
    dialogs.on_request(("c1", "a1", "over"), "BYE", T0 + 3)
    held = []
    for number in range(3):
        dialogs.on_response(response(200, to_tag=f"new{number}"), T0 + 4 + number)
        held.append(sorted(dialog.key[2] for dialog in dialogs))  # every tag sorts after "a1"
    assert held == [
        ["established", "new0", "ringing"],
        ["established", "new0", "new1"],
        ["new0", "new1", "new2"],
    ]
    assert dialogs.evicted == 3
