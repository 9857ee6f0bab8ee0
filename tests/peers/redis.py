"""A real Redis server for tests: on loopback, in its own directory, no persistence unless asked.

:class:`RedisServer` starts ``redis-server`` in the foreground in its own
process group on a free loopback port, with ``--save ""`` (no RDB snapshots)
and append-only persistence only when ``appendonly=True``; so :meth:`kill`
followed by :meth:`restart` brings back an *empty* server on the same port,
the worst case a shared ban store must survive. The ``redis_server`` fixture
yields a started one.
"""

from __future__ import annotations

import contextlib
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

__all__ = ["INSTALL_REDIS", "RedisServer", "redis_server"]

INSTALL_REDIS: Final = "apt-get install redis-server"


class RedisServer(StartedPeer):
    """One ``redis-server`` process; use as a context manager or call :meth:`start`/:meth:`stop`.

    ``password`` sets ``requirepass`` (then :attr:`url` carries it). The port
    is chosen on the first start and kept by :meth:`restart`. Its output goes
    to ``workdir/redis.log``; :meth:`log_tail` is in every failure message.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
        appendonly: bool = False,
        ready_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or 0
        self.password = password
        self.appendonly = appendonly
        self.ready_timeout = ready_timeout
        self.log_path = self.workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def argv(self) -> list[str]:
        argv = [
            require_tool("redis-server", INSTALL_REDIS),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> Self:
        """Start the server and wait until it answers a PING."""
        if self.running:
            raise PeerError("redis-server is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Shut the server down (SIGTERM); nothing is saved unless ``appendonly``."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or a power cut would."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, how: signal.Signals) -> None:
        if self._proc is None or not self.running:
            raise PeerError("redis-server is not running")
        self._proc.send_signal(how)

    def restart(self) -> Self:
        """Stop the server if it runs, then start it again on the same port."""
        self.stop()
        return self.start()

    def _end(self, how: signal.Signals) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            stop_process(self._proc, first=how)
            self._proc = None

    def _wait_ready(self) -> None:
        try:
            wait_until_answering(
                "redis-server",
                running=lambda: self.running,
                answers=self._answers,
                timeout=self.ready_timeout,
                log_tail=self.log_tail,
            )
        except PeerError:
            self.kill()
            raise

    def _answers(self) -> bool:
        """Whether the server answers an inline PING (``-NOAUTH`` counts: it is up)."""
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started ``redis-server`` on 127.0.0.1 without persistence or password."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
