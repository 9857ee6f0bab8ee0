"""The gateway over TCP and TLS (with mutual TLS bound to accounts), against a real Kamailio.

SIPp covers UDP and TCP; Debian's SIPp is built without OpenSSL, so the TLS
phone here is a small Python client speaking SIP over TLS with the test CA's
client certificate (CN and SAN for account 100).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.test_calls import Address, revealing
from monitor.live_support import LiveMonitor
from peers import BENIGN_USERS, KamailioRegistrar, Sipp
from peers.certs import CertFiles
from peers.phone import ScriptedPhone
from peers.sipp import LOCAL_PORT
from sipwarden.gateway.command import INSIDE_PORT_OFFSET
from sipwarden.gateway.routing import CONTACT_PARAM
from sipwarden.gateway.tokens import TokenSigner
from sipwarden.sip.message import Response
from sipwarden.sip.parser import StreamParser
from sipwarden.sip.uri import SipUri, parse_uri
from support import free_port


def stream_gateway(
    tmp_path: Path, listeners: list[str], pbx: KamailioRegistrar, extra: str = ""
) -> LiveMonitor:
    """The gateway in front of ``pbx``; ``extra`` is appended to its [gateway] section."""
    listen = ", ".join(f'"{listener}"' for listener in listeners)
    return LiveMonitor(
        tmp_path / "gateway",
        ports=[5060],
        source=(),
        command="gateway",
        extra_config=(
            f"\n[gateway]\nlisten = [{listen}]\n"
            f'upstreams = ["udp:{pbx.host}:{pbx.port}"]\n'
            f'secret_file = "{tmp_path / "gateway.key"}"\n'
            "bogon_check = false\n" + extra
        ),
    )


def test_calls_over_tcp_go_through(tmp_path: Path) -> None:
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port()
    with (
        runner.uas() as uas,
        KamailioRegistrar(tmp_path / "kamailio", users, downstream=(uas.host, uas.port)) as pbx,
        stream_gateway(tmp_path, [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"], pbx),
    ):
        entry = Address("127.0.0.1", port)
        tcp = ["-t", "t1"]
        runner.run(
            "register.xml",
            entry,
            service="100",
            auth=("100", users["100"]),
            keys={"domain": runner.domain, "expires": "300", "contact_port": LOCAL_PORT},
            extra=tcp,
        ).expect(successful=1)
        runner.run(
            "uac_auth.xml",
            entry,
            calls=2,
            service="9001",
            auth=("100", users["100"]),
            auth_uri=f"9001@{runner.domain}",
            keys={"domain": runner.domain, "caller": "100"},
            duration_ms=200,
            extra=tcp,
        ).expect(successful=2)
    uas.stop().expect(successful=2)


def register_over_tls(port: int, context: ssl.SSLContext, user: str) -> Response | None:
    """One REGISTER for ``user`` over TLS; the first final response, or None if refused."""
    request = (
        f"REGISTER sip:sipwarden.test SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-{user}-{time.time_ns()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@sipwarden.test>;tag=t{user}\r\n"
        f"To: <sip:{user}@sipwarden.test>\r\n"
        f"Call-ID: tls-{user}-{time.time_ns()}@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:5999;transport=tls>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(request)
            parser = StreamParser()
            while True:
                data = tls.recv(65535)
                if not data:
                    return None
                parser.feed(data)
                while (event := parser.next_event()) is not None:
                    if isinstance(event, Response) and event.status >= 200:
                        return event
    except (ssl.SSLError, OSError):
        return None


def test_mutual_tls_binds_the_account_to_the_certificate(
    tmp_path: Path, test_certs: CertFiles
) -> None:
    tls_config = (
        "\n[gateway.tls]\n"
        f'cert_file = "{test_certs.server_cert}"\nkey_file = "{test_certs.server_key}"\n'
        f'ca_file = "{test_certs.ca}"\n'
        "require_client_cert = true\nbind_account_to_subject = true\n"
    )
    port = free_port()
    with (
        KamailioRegistrar(tmp_path / "kamailio", BENIGN_USERS) as pbx,
        stream_gateway(tmp_path, [f"tls:127.0.0.1:{port}"], pbx, tls_config) as gateway,
    ):
        phone = ssl.create_default_context(cafile=str(test_certs.ca))
        phone.load_cert_chain(str(test_certs.client_cert), str(test_certs.client_key))
        own = register_over_tls(port, phone, "100")
        assert own is not None
        assert own.status == 401  # reached Kamailio, which challenges
        assert not revealing(own.to_bytes(), f"{pbx.host}:{pbx.port}")
        other = register_over_tls(port, phone, "101")
        assert other is not None
        assert other.status == 403  # the certificate names 100, not 101
        anonymous = ssl.create_default_context(cafile=str(test_certs.ca))
        assert register_over_tls(port, anonymous, "100") is None  # no certificate, no TLS
        foreign = ssl.create_default_context(cafile=str(test_certs.ca))
        foreign.load_cert_chain(
            str(test_certs.foreign_client_cert), str(test_certs.foreign_client_key)
        )
        assert register_over_tls(port, foreign, "100") is None
        assert not any("Traceback" in line for line in gateway.problems())


def test_calls_over_mutual_tls_go_through_and_the_pbx_stays_hidden(
    tmp_path: Path, test_certs: CertFiles
) -> None:
    """SIPp has no TLS here: the phone is tests/peers/phone.py, with the client
    certificate of account 100, placing calls through the gateway to Kamailio."""
    tls_config = (
        "\n[gateway.tls]\n"
        f'cert_file = "{test_certs.server_cert}"\nkey_file = "{test_certs.server_key}"\n'
        f'ca_file = "{test_certs.ca}"\n'
        "require_client_cert = true\nbind_account_to_subject = true\n"
    )
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port()
    context = ssl.create_default_context(cafile=str(test_certs.ca))
    context.load_cert_chain(str(test_certs.client_cert), str(test_certs.client_key))
    with (
        runner.uas() as uas,
        KamailioRegistrar(tmp_path / "kamailio", users, downstream=(uas.host, uas.port)) as pbx,
        stream_gateway(tmp_path, [f"tls:127.0.0.1:{port}"], pbx, tls_config) as gateway,
        ScriptedPhone("127.0.0.1", port, context, "100", users["100"]) as phone,
    ):
        assert phone.register() == 200
        assert [phone.call("9001") for _ in range(3)] == [200, 200, 200]
        problems = gateway.problems()
        pbx_address = f"{pbx.host}:{pbx.port}"
    uas.stop().expect(successful=3)
    assert not any("Traceback" in line for line in problems)
    assert len(phone.received) >= 10
    assert not [data for data in phone.received if revealing(data, pbx_address)]


def worker_of(answer: Response, key: Path, port: int) -> int:
    """Which worker registered the phone: the inside port sealed in the Contact alias the
    200 to its REGISTER shows (the PBX's binding, listen port + 1000 + the index)."""
    signer = TokenSigner(key.read_bytes())
    (contact,) = answer.contact
    assert isinstance(contact.uri, SipUri)
    token = contact.uri.param(CONTACT_PARAM) or ""
    fields = signer.open("contact:pbx", token)  # routing._PBX: the PBX's Contact
    assert fields is not None, contact
    inside = parse_uri(fields[0])
    assert isinstance(inside, SipUri) and inside.port is not None
    return inside.port - port - INSIDE_PORT_OFFSET


def test_a_call_between_phones_on_two_workers_reaches_the_callees_connection(
    tmp_path: Path,
) -> None:
    """The PBX's INVITE for a phone goes to the inside port of the worker that holds the
    phone's TCP connection (the one written into its registered Contact), whichever
    worker the caller's connection is on."""
    users = BENIGN_USERS
    port = free_port()
    key = tmp_path / "gateway.key"
    listeners = [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]
    with (
        KamailioRegistrar(tmp_path / "kamailio", users) as pbx,
        stream_gateway(tmp_path, listeners, pbx, "workers = 2\n") as gateway,
        ScriptedPhone("127.0.0.1", port, None, "101", users["101"], tcp=True) as callee,
        contextlib.ExitStack() as stack,
    ):
        answer = callee.register_answer()
        assert answer.status == 200
        callee_worker = worker_of(answer, key, port)
        # The kernel spreads connections over the workers by their addresses: new
        # ones until the caller's is on the other worker.
        for _ in range(32):
            caller = stack.enter_context(
                ScriptedPhone("127.0.0.1", port, None, "100", users["100"], tcp=True)
            )
            answer = caller.register_answer()
            assert answer.status == 200
            caller_worker = worker_of(answer, key, port)
            if caller_worker != callee_worker:
                break
            assert caller.register_answer(expires=0).status == 200  # one binding at a time
        else:
            raise AssertionError("32 connections all went to the callee's worker")
        with ThreadPoolExecutor(1) as pool:
            answered = pool.submit(callee.answer_call)
            assert caller.call("101") == 200
            assert answered.result(timeout=10) == ["INVITE", "ACK", "BYE"]
        problems = gateway.problems()
    assert not any("Traceback" in line for line in problems)
    assert {caller_worker, callee_worker} == {0, 1}
