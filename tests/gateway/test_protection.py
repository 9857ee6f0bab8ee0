"""The PBX the gateway protects is never banned, whatever it sends."""

from __future__ import annotations

from pathlib import Path

from sipwarden.config import parse_config
from sipwarden.detect.out_of_state import OutOfStateSettings
from sipwarden.enforce.manager import BanManager
from sipwarden.enforce.setup import build_ban_manager
from sipwarden.gateway.command import build_core, gateway_settings, protected_hosts
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
        config,
        store=None,
        enforcing=False,
        protected=protected_hosts(gateway_settings(config)),
    )
    manager.start(NOW)
    return build_core(config, manager, None, None), manager


def bye(number: int, uri: str) -> bytes:
    """A BYE for a call nobody saw: out of state (RFC 3261 12.2.2), as a PBX sends them
    for calls set up before a gateway restart, or by the thousand when it is confused."""
    return (
        f"BYE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-bye-{number}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:trunk@pbx.example>;tag=f{number}\r\n"
        f"To: <sip:200@phones.example>;tag=t{number}\r\n"
        f"Call-ID: gone-{number}@pbx.example\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def burst(core: GatewayCore, source: Endpoint, uri: str) -> float:
    """1500 BYEs in a second, after the out-of-state warm-up; returns the time after them."""
    core.receive(bye(0, uri), source, NOW)  # starts the engine's clock
    start = NOW + OutOfStateSettings().warmup + 1
    for number in range(1, 1501):
        core.receive(bye(number, uri), source, start + number / 1500)
    return start + 2


def test_upstream_addresses_are_protected_by_name_and_address(tmp_path: Path) -> None:
    core, manager = gateway(tmp_path)
    assert protected_hosts(gateway_settings(parse_config(""))) == ("127.0.0.1",)  # the default PBX
    for host in (PBX.host, "127.0.0.1"):  # "localhost" is resolved
        assert core.engine.ban_policy.is_trusted(host)
        assert manager.is_allowlisted(host)
    assert not manager.is_allowlisted(BUSY_OUTSIDER.host)


def test_a_pbx_sending_stray_byes_is_reported_but_never_banned(tmp_path: Path) -> None:
    core, manager = gateway(tmp_path)
    reports = []
    report = core.report
    assert report is not None

    def seen(inspection: object) -> None:
        reports.append(inspection)
        report(inspection)  # type: ignore[arg-type]

    core.report = seen
    after = burst(core, PBX, "sip:200@81.2.69.200:5060")
    manager.tick(after)
    assert reports, "no rule saw anything: the test would prove nothing"
    assert manager.banned(PBX.host, after) is None
    assert core.receive(bye(9999, "sip:200@81.2.69.200:5060"), PBX, after)


def test_the_same_flood_from_outside_is_banned(tmp_path: Path) -> None:
    """The control: without the protection these very messages earn a ban."""
    core, manager = gateway(tmp_path)
    after = burst(core, BUSY_OUTSIDER, f"sip:200@{PBX.host}:{PBX.port}")
    manager.tick(after)
    assert manager.banned(BUSY_OUTSIDER.host, after) is not None
