"""Helpers both benchmarks use: tools, free ports, logs and child processes.

Imported as ``bench.common``: each benchmark, run as a script, puts the
repository root on ``sys.path`` first (see their imports).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["free_udp_port", "require", "spawn_logged", "stop_process", "tail", "udp_port_bound"]


def require(tool: str, package: str) -> str:
    """The path of ``tool`` (also in the sbin directories), or exit naming the package."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"{tool} is missing: apt-get install {package}")
    return path


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def udp_port_bound(host: str, port: int) -> bool:
    """Whether some socket holds udp ``host:port`` (we cannot bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def spawn_logged(rundir: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``rundir``, in a session of its own; its command line goes to
    ``argv.txt`` and its output to ``stdout.log`` there."""
    (rundir / "argv.txt").write_text(" ".join(argv) + "\n")
    with (rundir / "stdout.log").open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=rundir,
            start_new_session=True,
        )


def stop_process(
    proc: subprocess.Popen[bytes], first: int = signal.SIGINT, grace: float = 5.0
) -> int:
    """Signal ``proc`` and wait; SIGKILL after ``grace`` seconds. A process started
    with its own session (``start_new_session``) is signalled with its whole group."""
    group = proc.poll() is None and _leads_its_group(proc.pid)
    if proc.poll() is None:
        _signal(proc, first, group=group)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, group=group)
            proc.wait()
    return proc.returncode


def _leads_its_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(proc: subprocess.Popen[bytes], signum: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
