"""A real rtpengine for tests: userspace only, on loopback, two named interfaces.

:class:`Rtpengine` starts the ``rtpengine`` daemon of Debian's ``rtpengine-daemon`` in
the foreground, in its own process group, without its configuration file and without
the kernel module (``--table=-1``: every packet is relayed in userspace, so no root
privileges or kernel setup are needed beyond binding loopback ports). It has two logical
interfaces, so a test can tell the legs apart by address alone:

* ``internal`` on 127.0.0.1: what the PBX leg sees;
* ``external`` on 127.0.0.2: what the outside leg sees (all of 127.0.0.0/8 is
  loopback on Linux).

The ng control socket is on a free UDP port of 127.0.0.1; media ports come from a small
range below the kernel's ephemeral range (where :func:`~support.free_port` and clients
pick theirs). ``--delete-delay=0`` makes a ``delete`` take effect at once. The log (ng
requests and replies included) goes to ``workdir/rtpengine.log`` and is quoted in every
failure. The ``rtpengine_daemon`` fixture yields a started one (named so that it
does not shadow this module when imported into ``peers``).
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Self

import pytest

from support import (
    PeerError,
    StartedPeer,
    free_port,
    require_tool,
    stop_process,
    tail,
    wait_until_answering,
)

__all__ = ["INSTALL_RTPENGINE", "Rtpengine", "rtpengine_daemon"]

INSTALL_RTPENGINE: Final = "apt-get install rtpengine-daemon"

#: Media ports per instance: each call leg takes an RTP and an RTCP port.
_PORT_SPAN: Final = 200
# Below Linux's default ephemeral range (32768-60999), above the registered ports
# most daemons use.
_PORT_FLOOR: Final = 20_000
_PORT_CEILING: Final = 32_000


class Rtpengine(StartedPeer):
    """One ``rtpengine`` process; a context manager, or :meth:`start` / :meth:`stop`.

    ``ng_address`` is its control address in the configuration's form
    (``udp:127.0.0.1:PORT``); ``interfaces`` maps the logical interface names to
    their addresses. ``port_min``/``port_max`` bound the media ports it hands out.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        internal: str = "127.0.0.1",
        external: str = "127.0.0.2",
        ng_host: str = "127.0.0.1",
        ready_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.interfaces = {"internal": internal, "external": external}
        self.ng_host = ng_host
        self.ng_port = 0
        self.ready_timeout = ready_timeout
        self.log_path = self.workdir / "rtpengine.log"
        self.pid_path = self.workdir / "rtpengine.pid"
        # Even, so RTP/RTCP pairs line up; random, so parallel runs seldom overlap
        # (rtpengine skips ports it cannot bind anyway).
        self.port_min = random.randrange(_PORT_FLOOR, _PORT_CEILING - _PORT_SPAN, 2)
        self.port_max = self.port_min + _PORT_SPAN - 1
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ng_address(self) -> str:
        return f"udp:{self.ng_host}:{self.ng_port}"

    @property
    def internal(self) -> str:
        return self.interfaces["internal"]

    @property
    def external(self) -> str:
        return self.interfaces["external"]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def argv(self) -> list[str]:
        """The command line (``self.ng_port`` must be chosen already)."""
        argv = [
            require_tool("rtpengine", INSTALL_RTPENGINE),
            "--config-file=none",  # not /etc/rtpengine/rtpengine.conf
            "--foreground",
            "--table=-1",  # no kernel module: userspace relaying only
            f"--listen-ng={self.ng_host}:{self.ng_port}",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_max}",
            "--delete-delay=0",
            "--num-threads=2",
            f"--pidfile={self.pid_path}",
            "--log-stderr",
            "--log-level=6",
            "--log-level-control=7",  # dumps every ng request and reply
        ]
        argv += [f"--interface={name}/{addr}" for name, addr in self.interfaces.items()]
        return argv

    def version(self) -> str:
        """``rtpengine --version`` (e.g. ``Version: 10.5.3.5-1+deb12u1``)."""
        result = subprocess.run(  # fixed arguments, our own tool
            [require_tool("rtpengine", INSTALL_RTPENGINE), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return (result.stdout + result.stderr).strip()

    def start(self) -> Self:
        """Start rtpengine and wait until it answers an ng ``ping``."""
        if self.running:
            raise PeerError("rtpengine is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ng_port == 0:
            self.ng_port = free_port(self.ng_host, tcp=False)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # fixed arguments, our own tool
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop rtpengine (SIGTERM, then SIGKILL after a grace period)."""
        if self._proc is not None:
            stop_process(self._proc, first=signal.SIGTERM)
            self._proc = None

    def _wait_ready(self) -> None:
        try:
            wait_until_answering(
                "rtpengine",
                running=lambda: self.running,
                answers=self._answers_ping,
                timeout=self.ready_timeout,
                log_tail=self.log_tail,
                interval=0.05,
            )
        except PeerError:
            self.stop()
            raise

    def _answers_ping(self) -> bool:
        """One ng ping, written out by hand so that the fixture does not rely on the
        code under test (ng protocol documentation: ``5323_1 d7:command4:pinge``)."""
        cookie = b"fixture_%d" % random.randrange(1 << 30)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            with contextlib.suppress(OSError):
                sock.sendto(cookie + b" d7:command4:pinge", (self.ng_host, self.ng_port))
                reply = sock.recv(4096)
                return reply == cookie + b" d6:result4:ponge"
        return False


@pytest.fixture
def rtpengine_daemon(tmp_path: Path) -> Iterator[Rtpengine]:
    """A started rtpengine: ng on 127.0.0.1, ``internal`` 127.0.0.1, ``external`` 127.0.0.2."""
    with Rtpengine(tmp_path / "rtpengine") as engine:
        yield engine
