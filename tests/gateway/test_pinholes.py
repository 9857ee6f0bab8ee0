"""NAT keep-alives for phones whose REGISTER succeeded (RFC 5626 3.5.1)."""

from __future__ import annotations

from gateway.test_challenges import answer, register
from gateway.test_core import PBX, PHONE, core
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.pinholes import PING


def registered_phone_gateway(expires: str) -> GatewayCore:
    gateway = core()
    forwarded = gateway.receive(register("100", "r1"), PHONE, 1000.0)[-1]
    extra = f"Contact: <sip:100@192.168.1.20>;expires={expires}\r\n"
    gateway.receive(answer(forwarded.data, "200 OK", extra), PBX, 1000.1)
    return gateway


def test_a_registered_phone_gets_a_crlf_keep_alive_until_it_expires() -> None:
    gateway = registered_phone_gateway("120")
    assert [send for send in gateway.tick(1001.0) if send.to == PHONE] == [(PHONE, PING, None)]
    assert [s for s in gateway.tick(1010.0) if s.to == PHONE] == []
    assert [s.data for s in gateway.tick(1026.5) if s.to == PHONE] == [PING]
    assert [s for s in gateway.tick(1200.0) if s.to == PHONE] == []


def test_an_unregistration_stops_the_keep_alives() -> None:
    gateway = registered_phone_gateway("0")
    assert [s for s in gateway.tick(1001.0) if s.to == PHONE] == []
