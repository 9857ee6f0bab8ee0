"""Helpers of the live detection tests: the real monitor command and real attack tools.

:class:`LiveMonitor` runs ``python -m sipwarden --config CFG monitor
--interface lo --json --duration D`` in a subprocess (its own process group),
with a configuration written into the test's directory that names the
ports to watch. A reader thread stamps every stdout line with
:func:`time.monotonic` as it arrives, so a test can measure how long after
an attack started its event reached a consumer of the JSON stream (a SIEM
reading the pipe sees exactly that). The monitor is ready once it logs
:data:`READY_MARKERS` on stderr, which it does after the packet socket is
bound and filtered, so nothing sent afterwards can be missed.

:class:`ToolRun` runs one attack tool (SIPVicious, SIPp) in its own process
group with a time limit, records the moment it was started, and always
reaps it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from support import PeerError, stop_process, tail

__all__ = [
    "INSTALL_SIPVICIOUS",
    "READY_MARKERS",
    "Arrival",
    "LiveMonitor",
    "ToolRun",
]

INSTALL_SIPVICIOUS: Final = "apt-get install sipvicious"

#: What the monitor logs (stderr, text format) once its live capture is open.
# What the monitor logs once its live source is open: "capturing on IF ..."
# for an interface, "receiving HEP on ADDR ..." for a HEP feed.
READY_MARKERS: Final = ("capturing on ", "receiving HEP on ", "gateway running")

# Log levels of the text format (`TIME LEVEL logger: message`) and Python's traceback.
_PROBLEM_MARKS: Final = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback (most recent call last)")


@dataclass(frozen=True, slots=True)
class Arrival:
    """One JSON line of the monitor's stdout and when it was read."""

    at: float  # time.monotonic() when the line arrived
    wall: float  # time.time() at the same moment
    record: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.record.get("kind"))

    @property
    def rule(self) -> str:
        return str(self.record.get("rule"))

    def pipeline_delay(self) -> float | None:
        """Seconds from the event's own time (its packet's capture time) to arrival."""
        stamp = self.record.get("time")
        if not isinstance(stamp, str):
            return None
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        return self.wall - when.timestamp()

    def describe(self) -> str:
        return f"{self.kind} {self.rule}: {self.record.get('summary', '')}"


def _ready(line: str) -> bool:
    return any(marker in line for marker in READY_MARKERS)


class LiveMonitor:
    """The real ``sipwarden monitor`` command on a live source, watching ``ports``.

    The source is ``--interface lo`` unless ``source`` names another, e.g.
    ``("--hep", "127.0.0.1:9060")``.

    ``with LiveMonitor(workdir, ports=[5060]) as monitor:`` starts it and
    returns once it is capturing; on exit it is stopped (SIGINT, then
    SIGKILL) and its readers joined. ``duration`` is passed as
    ``--duration``: a hard bound on the run should a test forget to stop it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ports: Sequence[int],
        source: Sequence[str] = ("--interface", "lo"),
        duration: float = 30.0,
        prefix: Sequence[str] = (),
        extra_config: str = "",
        store: Path | None = None,
        command: str = "monitor",
    ) -> None:
        self.workdir = Path(workdir)
        self.prefix = tuple(prefix)  # e.g. ("ip", "netns", "exec", NAME) to run in a namespace
        self.extra_config = extra_config
        self.store = store  # the SQLite store, or None for no store
        self.command = command  # "monitor", or "gateway" (then ``source`` is empty)
        self.ports = tuple(int(port) for port in ports)
        self.source = tuple(source)
        self.duration = duration
        self.config_path = self.workdir / "sipwarden.toml"
        self.stderr_path = self.workdir / "monitor.stderr.log"
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._records: list[Arrival] = []
        self._junk: list[str] = []
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------

    @property
    def argv(self) -> list[str]:
        """The command line (``sys.executable``: the interpreter running the tests)."""
        return [
            *self.prefix,
            sys.executable,
            "-m",
            "sipwarden",
            "--config",
            str(self.config_path),
            self.command,
            *self.source,
            "--json",
            "--duration",
            str(self.duration),
        ]

    def write_config(self) -> Path:
        """The monitor's configuration: the ports, the store if any, no sniffing of other ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = ", ".join(str(port) for port in self.ports)
        self.config_path.write_text(
            f"[sip]\nports = [{ports}]\n\n"
            f'[store]\npath = "{self.store or ""}"\n\n'
            "[monitor]\nsniff_any_port = false\n\n"
            # Pinned: the readiness line is read from stderr in this format.
            '[log]\nlevel = "info"\nformat = "text"\n' + self.extra_config
        )
        return self.config_path

    def start(self, ready_timeout: float = 15.0) -> Self:
        """Start the command; return once it logs one of :data:`READY_MARKERS`."""
        self.write_config()
        (self.workdir / "argv.txt").write_text(" ".join(self.argv) + "\n")
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + ready_timeout
        with self._arrived:
            while not any(_ready(line) for line in self._stderr):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._proc.poll() is not None:
                    break
                self._arrived.wait(min(remaining, 0.05))
            ready = any(_ready(line) for line in self._stderr)
        if not ready:
            code = self._proc.poll()
            self.stop()
            status = "still running" if code is None else f"exited with {code}"
            raise PeerError(
                f"the monitor did not log {READY_MARKERS!r} within {ready_timeout:.0f} s "
                f"({status}): {' '.join(self.argv)}\n{self.output()}"
            )
        return self

    def stop(self, grace: float = 10.0) -> int:
        """Ask the monitor to stop (SIGINT, as Ctrl-C), kill it after ``grace``; its exit code."""
        proc, self._proc = self._proc, None
        if proc is not None:
            # The monitor itself, not the group: its own handler ends the capture.
            self.returncode = stop_process(
                proc, first=signal.SIGINT, grace=grace, whole_group=False
            )
            for reader in self._readers:
                reader.join(timeout=5.0)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            with self._lock:
                self.stderr_path.write_text("".join(self._stderr))
        if self.returncode is None:
            raise PeerError("the monitor was never started")
        return self.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self.stop()

    # --- what it said -------------------------------------------------------

    @property
    def records(self) -> list[Arrival]:
        """Every JSON line so far (events and bans), in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def events(self) -> list[Arrival]:
        """The security events so far (bans left out)."""
        return [arrival for arrival in self.records if arrival.kind != "ban"]

    def output(self, lines: int = 40) -> str:
        """The tails of stderr and stdout, for failure messages."""
        with self._lock:
            err = "".join(self._stderr[-lines:])
            out = [arrival.describe() for arrival in self._records[-lines:]] + self._junk[-lines:]
        return f"--- monitor stderr ---\n{err}--- monitor stdout (events) ---\n" + "\n".join(out)

    def wait_for(
        self, predicate: Callable[[Arrival], bool], *, timeout: float, what: str
    ) -> Arrival:
        """The first record (already arrived or arriving within ``timeout``) that matches."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for arrival in self._records:
                    if predicate(arrival):
                        return arrival
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(min(remaining, 0.05))
        raise PeerError(f"no {what} from the monitor within {timeout:.1f} s\n{self.output()}")

    # --- readers -------------------------------------------------------------

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            at, wall = time.monotonic(), time.time()
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            with self._arrived:
                if isinstance(record, dict):
                    self._records.append(Arrival(at=at, wall=wall, record=record))
                else:  # not JSON: kept for the failure message, and a test may assert on it
                    self._junk.append(line)
                self._arrived.notify_all()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._arrived:
                self._stderr.append(raw.decode("utf-8", "replace"))
                self._arrived.notify_all()

    def problems(self) -> list[str]:
        """Lines of stderr that are warnings, errors or a traceback (there should be none)."""
        with self._lock:
            lines = list(self._stderr)
        return [line for line in lines if any(mark in line for mark in _PROBLEM_MARKS)]

    @property
    def junk(self) -> list[str]:
        """Lines of stdout that were not JSON objects (there should be none)."""
        with self._lock:
            return list(self._junk)


class ToolRun:
    """One attack tool in its own process group, time-bounded, always reaped.

    ``started`` is :func:`time.monotonic` taken right before the process is
    created: the attack's start. stdout and stderr go to ``log_path``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = Path(workdir)
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.log_path = self.workdir / f"{name}.log"
        self.started = 0.0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the tool (``started`` is taken right before the process is created)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / f"{self.name}.argv.txt").write_text(" ".join(self.argv) + "\n")
        with self.log_path.open("wb") as log:
            self.started = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
                start_new_session=True,
            )
        return self

    def wait(self) -> int:
        """Wait for the tool to finish within its time limit; its exit code (fails if killed)."""
        proc = self._proc
        if proc is None:
            if self.returncode is None:
                raise PeerError(f"{self.name} was never started")
            return self.returncode
        remaining = self.started + self.timeout - time.monotonic()
        try:
            self.returncode = proc.wait(timeout=max(remaining, 0.1))
        except subprocess.TimeoutExpired:
            self.stop()
            raise PeerError(
                f"{self.name} still running after {self.timeout:.0f} s: killed\n{self.output()}"
            ) from None
        self._proc = None
        return self.returncode

    def stop(self) -> None:
        """Kill the tool's whole process group (if still running) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.returncode = stop_process(proc, first=signal.SIGTERM, grace=2.0)

    def output(self, lines: int = 40) -> str:
        return f"--- {self.name} output ({' '.join(self.argv)}) ---\n{tail(self.log_path, lines)}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
