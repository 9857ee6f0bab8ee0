"""Real SIP peers for tests: Kamailio, SIPp and dumpcap, on loopback only.

Plain helpers (usable from benchmarks too) and pytest fixtures:

* :class:`~peers.kamailio.KamailioRegistrar`: registrar with digest auth and
  stateful proxy (``with KamailioRegistrar(tmp_path, users) as kam``);
* :class:`~peers.sipp.Sipp`: SIPp flows (register, re-register, OPTIONS,
  authenticated call, background UAS) returning call counts;
* :func:`~peers.capture.capture`: dumpcap into a pcap that holds everything
  sent inside the block; :func:`~peers.capture.read_sip` and
  :func:`~peers.capture.sip_summary` read it back with sipwarden's own code;
* :func:`record_benign_traffic`: the benign loopback capture of a small
  office (registrations, refreshes, keep-alives, calls, one mistyped password).

Fixtures ``sip_users``, ``kamailio_registrar`` and ``sipp_runner`` are
defined here (named so that they do not shadow the submodules); a test
directory gets them by importing them into its ``conftest.py``::

    from peers import kamailio_registrar, sip_users, sipp_runner  # noqa: F401

A missing tool fails the test with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

import pytest

from .capture import Capture, SipPacket, capture, label, read_sip, sip_summary
from .kamailio import KamailioRegistrar
from .sipp import Sipp, SippResult, SippUas

__all__ = [
    "BENIGN_MISTYPED_PASSWORD",
    "BENIGN_MIX",
    "BENIGN_USERS",
    "DEFAULT_USERS",
    "Capture",
    "KamailioRegistrar",
    "SipPacket",
    "Sipp",
    "SippResult",
    "SippUas",
    "capture",
    "kamailio_registrar",
    "label",
    "read_sip",
    "record_benign_traffic",
    "sip_summary",
    "sip_users",
    "sipp_runner",
]

#: Users (name -> password) of the ``kamailio_registrar`` fixture.
DEFAULT_USERS: Final[Mapping[str, str]] = MappingProxyType(
    {"100": "s3cret-100", "101": "s3cret-101", "102": "s3cret-102", "200": "s3cret-200"}
)

# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def sip_users() -> dict[str, str]:
    """The users and passwords the ``kamailio_registrar`` fixture knows."""
    return dict(DEFAULT_USERS)


@pytest.fixture
def kamailio_registrar(tmp_path: Path, sip_users: dict[str, str]) -> Iterator[KamailioRegistrar]:
    """A started Kamailio registrar/proxy on 127.0.0.1 for ``sip_users`` (no downstream)."""
    with KamailioRegistrar(tmp_path / "kamailio", sip_users) as registrar:
        yield registrar


@pytest.fixture
def sipp_runner(tmp_path: Path) -> Sipp:
    """A SIPp runner writing its logs under ``tmp_path/sipp``."""
    return Sipp(tmp_path / "sipp")


# --- the benign capture -----------------------------------------------------------

#: Users of the benign office: three phones and "200", a SIPp UAS that takes calls.
BENIGN_USERS: Final[Mapping[str, str]] = DEFAULT_USERS

#: The one wrong password typed (by user 102) in the benign capture.
BENIGN_MISTYPED_PASSWORD: Final = "s3cret-120"

#: Unique SIP messages in the benign capture, by :func:`~peers.capture.label`.
#: Registrations: 200 once (its contact is the UAS), 100 and 101 register and
#: refresh (each round challenged), 102 mistypes once (403) then registers.
#: Keep-alives: two OPTIONS from each phone. Calls: 100->200 and 101->200 via
#: the location service, 102->9001 via the downstream prefix, each INVITE
#: challenged with 407; through the proxy every in-dialog message is seen
#: twice (phone<->proxy, proxy<->UAS).
BENIGN_MIX: Final[Mapping[str, int]] = MappingProxyType(
    {
        "REGISTER": 14,
        "401 REGISTER": 7,
        "403 REGISTER": 1,
        "200 REGISTER": 6,
        "OPTIONS": 6,
        "200 OPTIONS": 6,
        "INVITE": 9,
        "407 INVITE": 3,
        "100 INVITE": 3,
        "180 INVITE": 6,
        "200 INVITE": 6,
        "ACK": 9,
        "BYE": 6,
        "200 BYE": 6,
    }
)


def record_benign_traffic(tmp_path: Path) -> Path:
    """Record benign office traffic through a real Kamailio on loopback; return the pcap.

    Everything runs under ``tmp_path/benign`` (logs of every peer stay there
    for a failing test to show). The capture holds exactly :data:`BENIGN_MIX`
    (retransmissions aside, which loopback practically never causes); every
    step's outcome is checked, so a broken peer fails here, not later.
    Takes about 4 s.
    """
    workdir = tmp_path / "benign"
    runner = Sipp(workdir / "sipp")
    users = BENIGN_USERS
    with (
        runner.uas() as uas,
        KamailioRegistrar(
            workdir / "kamailio", users, downstream=(uas.host, uas.port), downstream_prefix="9"
        ) as kam,
    ):
        with capture(workdir, ports=[kam.port], name="benign.pcap") as cap:
            runner.register(kam, "200", users["200"], contact_port=uas.port).expect(successful=1)
            for user in ("100", "101"):
                runner.reregister(kam, user, users[user]).expect(successful=1)
            runner.register(kam, "102", BENIGN_MISTYPED_PASSWORD).expect(successful=0, failed=1)
            runner.register(kam, "102", users["102"]).expect(successful=1)
            for user in ("100", "101", "102"):
                runner.options(kam, user, count=2).expect(successful=2)
            runner.call(kam, "100", users["100"], "200").expect(successful=1)
            runner.call(kam, "101", users["101"], "200").expect(successful=1)
            runner.call(kam, "102", users["102"], "9001").expect(successful=1)
        uas.stop().expect(successful=3)
    return cap.path
