"""Test support shared by every room's tests: where the shared test data lives."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pytest

# The workplace lays ``shared/`` beside the repository (``../shared`` from the repo root).
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; fails (never skips) when the data is missing."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared test data missing: ../shared/{'/'.join(parts)} (lay shared/ beside the repo)"
        )
    return path


# --- real peers (tests/peers): tools, ports, logs ----------------------------


class PeerError(AssertionError):
    """A real peer (Kamailio, SIPp, dumpcap, …) did not do what the test needed.

    An ``AssertionError`` so pytest reports it as a test failure; the message
    carries the tail of the peer's log.
    """


class StartedPeer:
    """``with peer:`` starts a real peer and stops it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until_answering(
    what: str,
    *,
    running: Callable[[], bool],
    answers: Callable[[], bool],
    timeout: float,
    log_tail: Callable[[], str],
    interval: float = 0.02,
) -> None:
    """Poll a peer that is starting until it answers; a :class:`PeerError` with its log
    tail if it exits first or stays silent for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise PeerError(f"{what} exited at start:\n{log_tail()}")
        if answers():
            return
        time.sleep(interval)
    raise PeerError(f"{what} did not answer within {timeout} s:\n{log_tail()}")


def require_tool(name: str, install: str) -> str:
    """The absolute path of the executable ``name``; fails (never skips) when missing.

    ``install`` is the command that provides it, e.g. ``apt-get install sip-tester``.
    """
    # Daemons such as kamailio live in the sbin directories, which a non-root
    # PATH often lacks.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"`{name}` is not installed: run `{install}` (or `make system-deps`)")
    return path


def free_port(host: str = "127.0.0.1", *, tcp: bool = True) -> int:
    """A port on ``host`` that is free for UDP (and for TCP too when ``tcp``).

    The sockets are closed before returning, so another process may take the
    port in the meantime; starters retry on a bind failure.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            if not tcp:
                return port
            with socket.socket(family, socket.SOCK_STREAM) as stream:
                try:
                    stream.bind((host, port))
                except OSError:
                    continue
                return port
    raise PeerError(f"no free UDP+TCP port found on {host}")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file (for failure messages); '' if absent."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(
    proc: subprocess.Popen[bytes],
    *,
    first: signal.Signals = signal.SIGTERM,
    grace: float = 5.0,
    whole_group: bool = True,
) -> int:
    """Stop a peer started with ``start_new_session=True``; return its exit code.

    Sends ``first`` (to the whole process group, or to the leader only), waits
    up to ``grace`` seconds, then SIGKILLs whatever is left of the group, so
    no worker process outlives the test. Always reaps the leader.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(proc.pid, first)
            else:
                proc.send_signal(first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=grace)
