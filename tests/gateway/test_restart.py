"""Calls in progress survive a restart of the gateway.

The routing state of a dialog (the PBX's Contact and route set, the phone's
address) travels sealed in the Record-Route and Contact the gateway wrote, so
a gateway started afresh with the same key routes the ACK-ed call's BYE.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gateway.test_calls import Address, gateway_process
from peers import BENIGN_USERS, KamailioRegistrar, Sipp
from peers.sipp import SippResult
from support import free_port


def test_a_call_established_before_a_restart_ends_cleanly_after_it(tmp_path: Path) -> None:
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port(tcp=False)
    results: list[SippResult] = []
    with (
        runner.uas() as uas,
        KamailioRegistrar(tmp_path / "kamailio", users, downstream=(uas.host, uas.port)) as pbx,
    ):
        first = gateway_process(tmp_path / "first", port, pbx, key=tmp_path / "gateway.key")
        first.start()
        caller = threading.Thread(
            target=lambda: results.append(
                runner.call(
                    Address("127.0.0.1", port),
                    "100",
                    users["100"],
                    "9001",
                    duration_ms=4000,
                    timeout=30,
                )
            )
        )
        caller.start()
        time.sleep(1.5)  # the call is up: INVITE, 407, INVITE, 200, ACK went through
        first.stop()
        second = gateway_process(tmp_path / "second", port, pbx, key=tmp_path / "gateway.key")
        with second:
            caller.join(timeout=40)
    uas.stop().expect(successful=1)
    (result,) = results
    result.expect(successful=1)  # the BYE and its 200 went through the new process
