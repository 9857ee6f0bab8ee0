"""The PBX the gateway protects is never banned, whatever it sends."""

from __future__ import annotations

from pathlib import Path

from sipwarden.config import parse_config
from sipwarden.enforce.manager import BanManager
from sipwarden.enforce.setup import build_ban_manager
from sipwarden.gateway.command import build_core, protected_hosts
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.model import Endpoint

PBX = Endpoint("udp", "127.0.0.2", 5060)
BUSY_OUTSIDER = Endpoint("udp", "81.2.69.142", 5060)
NOW = 1_000_000.0


def gateway(tmp_path: Path) -> tuple[GatewayCore, BanManager]:
    config = parse_config(
        "[gateway]\n"
        'listen = ["udp:127.0.0.1:5060"]\n'
        f'upstreams = ["udp:{PBX.host}:{PBX.port}", "udp:localhost:5070"]\n'
        f'secret_file = "{tmp_path / "gateway.key"}"\n'
        "bogon_check = false\n"
        '[store]\npath = ""\n'
    )
    manager = build_ban_manager(
        config, store=None, enforcing=False, protected=protected_hosts(config)
    )
    manager.start(NOW)
    return build_core(config, manager, None, None), manager


def invite(number: int, uri: str) -> bytes:
    # A PBX that writes a broken Date into everything it sends: the malformed
    # detector judges every message, the PBX's own too.
    return (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-burst-{number}\r\n"
        "Max-Forwards: 70\r\nDate: yesterday\r\n"
        f"From: <sip:trunk@pbx.example>;tag=t{number}\r\n"
        "To: <sip:200@phones.example>\r\n"
        f"Call-ID: burst-{number}@pbx.example\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def burst(core: GatewayCore, source: Endpoint, uri: str) -> None:
    """A busy PBX's minute of call set-ups in one second, each with a broken header."""
    for number in range(1500):
        core.receive(invite(number, uri), source, NOW + number / 1500)


def test_upstream_addresses_are_protected_by_name_and_address(tmp_path: Path) -> None:
    core, manager = gateway(tmp_path)
    assert protected_hosts(parse_config("")) == ("127.0.0.1",)  # the default PBX
    for host in (PBX.host, "127.0.0.1"):  # "localhost" is resolved
        assert core.engine.ban_policy.is_trusted(host)
        assert manager.is_allowlisted(host)
    assert not manager.is_allowlisted(BUSY_OUTSIDER.host)


def test_a_pbx_sending_broken_messages_is_reported_but_never_banned(tmp_path: Path) -> None:
    core, manager = gateway(tmp_path)
    reports = []
    report = core.report
    assert report is not None

    def seen(inspection: object) -> None:
        reports.append(inspection)
        report(inspection)  # type: ignore[arg-type]

    core.report = seen
    burst(core, PBX, "sip:200@81.2.69.200:5060")
    manager.tick(NOW + 2)
    assert reports, "no rule saw anything: the test would prove nothing"
    assert manager.banned(PBX.host, NOW + 2) is None
    assert core.receive(invite(9999, "sip:200@81.2.69.200:5060"), PBX, NOW + 3)


def test_the_same_flood_from_outside_is_banned(tmp_path: Path) -> None:
    """The control: without the protection these very messages earn a ban (in from outside,
    they are refused 400 by the gateway's strict check, and counted as malformed)."""
    core, manager = gateway(tmp_path)
    burst(core, BUSY_OUTSIDER, f"sip:200@{PBX.host}:{PBX.port}")
    manager.tick(NOW + 2)
    assert manager.banned(BUSY_OUTSIDER.host, NOW + 2) is not None
