"""Run SIPp (Debian ``sip-tester``) call flows against real peers, with bounded time.

:class:`Sipp` is a runner bound to a work directory: each run gets its own
sub-directory with SIPp's statistics CSV (``-trace_stat``), unexpected
messages (``-trace_err``), the full message trace (``-trace_msg``) and its
stdout, and returns a :class:`SippResult` with the successful/failed call
counts taken from the statistics. Scenarios live in ``scenarios/``:

=================  ==========================================================
``register.xml``   REGISTER -> 401 -> REGISTER (digest) -> 200
``reregister.xml`` the same twice on one Call-ID, a pause (``-d``) between
``options.xml``    OPTIONS keep-alive to the registrar -> 200
``uac_auth.xml``   INVITE -> 407 -> ACK, INVITE (digest) -> 180 -> 200 -> ACK,
                   pause, BYE -> 200, in-dialog requests along Record-Route
``uas.xml``        INVITE -> 180 -> 200 -> ACK, BYE -> 200 (copies Record-Route)
=================  ==========================================================

Every SIPp gets ``-nostdin``, a global ``-timeout`` and a subprocess
timeout; a background UAS is always stopped (SIGUSR1, then SIGKILL) when its
context ends. Client flows run with ``-default_behaviors all,-bye``: on an
unexpected answer SIPp would otherwise send a BYE, even for an aborted
REGISTER (after the 403 of a wrong password) or a refused INVITE once it has
ACKed a 407, which no real phone does. ``uac_auth.xml`` ACKs refusals itself.

SIPp also binds an RTP echo port (``-mp``, 6000 up) on the local address and
its UDP control port (``-cp``, 8888 up, on all addresses; it only listens).
"""

from __future__ import annotations

import csv
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, Self

from support import PeerError, StartedPeer, free_port, require_tool, stop_process, tail

__all__ = [
    "INSTALL_SIPP",
    "LOCAL_PORT",
    "SCENARIOS",
    "Endpoint",
    "Sipp",
    "SippResult",
    "SippUas",
    "sipp_binary",
]

#: Directory of the scenario files.
SCENARIOS: Final = Path(__file__).resolve().parent / "scenarios"

INSTALL_SIPP: Final = "apt-get install sip-tester"

# SIPp's exit codes (sipp(1) "EXIT STATUS").
EXIT_ALL_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_INTERNAL_CMD: Final = 97
EXIT_NO_CALLS: Final = 99
EXIT_BIND_ERROR: Final = 254  # -2: fatal error binding a socket

#: Stands for SIPp's local port in a ``-key`` value passed to :meth:`Sipp.run`.
LOCAL_PORT: Final = "{local_port}"


def sipp_binary() -> str:
    """The path of ``sipp``; fails the test with the install command when missing."""
    return require_tool("sipp", INSTALL_SIPP)


class Endpoint(Protocol):
    """Anything with a ``host`` and a ``port``: a KamailioRegistrar, a SippUas, …"""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SippResult:
    """The outcome of one SIPp run."""

    scenario: str
    returncode: int
    successful: int
    failed: int
    elapsed: float
    rundir: Path

    @property
    def ok(self) -> bool:
        """All calls succeeded and at least one was made."""
        return self.returncode == EXIT_ALL_OK and self.failed == 0 and self.successful > 0

    @property
    def messages_log(self) -> Path:
        """SIPp's trace of every message sent and received."""
        return self.rundir / "messages.log"

    def describe(self, lines: int = 30) -> str:
        """A failure message: counts, exit code and the tails of SIPp's logs."""
        parts = [
            f"sipp {self.scenario}: exit {self.returncode}, {self.successful} successful, "
            f"{self.failed} failed calls in {self.elapsed:.2f} s (logs in {self.rundir})"
        ]
        for name in ("errors.log", "stdout.log", "messages.log"):
            text = tail(self.rundir / name, lines)
            if text:
                parts.append(f"--- {name} (tail) ---\n{text}")
        return "\n".join(parts)

    def expect(self, *, successful: int, failed: int = 0) -> Self:
        """Fail with SIPp's logs unless the call counts are exactly these."""
        if (self.successful, self.failed) != (successful, failed):
            raise PeerError(
                f"expected {successful} successful and {failed} failed calls\n{self.describe()}"
            )
        return self


def _read_stats(path: Path) -> tuple[int, int]:
    """(successful, failed) cumulative call counts from the last row of a -trace_stat CSV."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return (0, 0)
    if len(rows) < 2:
        return (0, 0)
    header, last = rows[0], rows[-1]
    values = dict(zip(header, last, strict=False))
    try:
        return (int(values["SuccessfulCall(C)"]), int(values["FailedCall(C)"]))
    except (KeyError, ValueError):
        return (0, 0)


class Sipp:
    """Runs SIPp scenarios from a work directory; see the module docstring.

    ``domain`` is the SIP domain the scenarios put in URIs (the registrar's
    ``domain``), ``local_ip`` the address SIPp binds and advertises.
    """

    def __init__(
        self, workdir: Path, *, domain: str = "sipwarden.test", local_ip: str = "127.0.0.1"
    ) -> None:
        self.workdir = Path(workdir)
        self.domain = domain
        self.local_ip = local_ip
        self._runs = 0

    # --- generic ------------------------------------------------------------

    def _rundir(self, scenario: str) -> Path:
        self._runs += 1
        rundir = self.workdir / f"sipp-{self._runs:02d}-{Path(scenario).stem}"
        rundir.mkdir(parents=True, exist_ok=True)
        return rundir

    def _argv(
        self,
        scenario: str,
        rundir: Path,
        *,
        remote: Endpoint | None,
        local_port: int,
        calls: int | None,
        service: str | None,
        auth: tuple[str, str] | None,
        auth_uri: str | None,
        keys: Mapping[str, str],
        duration_ms: int | None,
        timeout: float,
        abort_bye: bool,
        extra: Sequence[str],
    ) -> list[str]:
        path = Path(scenario)
        if not path.is_absolute():
            path = SCENARIOS / path
        if not path.is_file():
            raise PeerError(f"no SIPp scenario {path}")
        argv = [sipp_binary()]
        if remote is not None:
            argv.append(f"{remote.host}:{remote.port}")
        argv += ["-sf", str(path), "-i", self.local_ip, "-p", str(local_port), "-nostdin"]
        argv += ["-timeout", f"{max(1, round(timeout))}s", "-timeout_error"]
        argv += ["-trace_stat", "-stf", str(rundir / "stats.csv")]
        argv += ["-trace_err", "-error_file", str(rundir / "errors.log")]
        argv += ["-trace_msg", "-message_file", str(rundir / "messages.log")]
        argv += ["-trace_screen", "-screen_file", str(rundir / "screen.log")]
        if not abort_bye:
            argv += ["-default_behaviors", "all,-bye"]
        if calls is not None:
            # -r 100: no 100 ms wait before the first call at SIPp's default 10 cps.
            argv += ["-m", str(calls), "-r", "100", "-l", "1"]
        if service is not None:
            argv += ["-s", service]
        if auth is not None:
            argv += ["-au", auth[0], "-ap", auth[1]]
        if auth_uri is not None:
            argv += ["-auth_uri", auth_uri]
        if duration_ms is not None:
            argv += ["-d", str(duration_ms)]
        for name, value in keys.items():
            argv += ["-key", name, value]
        argv += list(extra)
        return argv

    def run(
        self,
        scenario: str,
        remote: Endpoint,
        *,
        calls: int = 1,
        service: str | None = None,
        auth: tuple[str, str] | None = None,
        auth_uri: str | None = None,
        keys: Mapping[str, str] | None = None,
        duration_ms: int | None = None,
        timeout: float = 15.0,
        abort_bye: bool = False,
        local_port: int | None = None,
        extra: Sequence[str] = (),
    ) -> SippResult:
        """Run a client scenario to completion (``calls`` calls, one at a time).

        ``scenario`` is a file name under ``scenarios/`` or a path. SIPp's own
        global timeout is ``timeout``; the subprocess is killed 5 s later.
        ``abort_bye`` keeps SIPp's BYE/CANCEL/ACK on an aborted call (INVITE
        flows); ``local_port`` defaults to a free one (retried if SIPp cannot
        bind it), and :data:`LOCAL_PORT` in a ``keys`` value becomes that port.
        """
        for attempt in range(1 if local_port is not None else 3):
            port = local_port if local_port is not None else free_port(self.local_ip, tcp=False)
            rundir = self._rundir(scenario)
            argv = self._argv(
                scenario,
                rundir,
                remote=remote,
                local_port=port,
                calls=calls,
                service=service,
                auth=auth,
                auth_uri=auth_uri,
                keys={k: v.replace(LOCAL_PORT, str(port)) for k, v in (keys or {}).items()},
                duration_ms=duration_ms,
                timeout=timeout,
                abort_bye=abort_bye,
                extra=extra,
            )
            result = self._execute(scenario, argv, rundir, timeout)
            # The free port was taken between our check and SIPp's bind: retry.
            if result.returncode != EXIT_BIND_ERROR or attempt == 2:
                break
        return result

    def _execute(self, scenario: str, argv: list[str], rundir: Path, timeout: float) -> SippResult:
        (rundir / "argv.txt").write_text(" ".join(argv) + "\n")
        started = time.monotonic()
        with (rundir / "stdout.log").open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=rundir,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout + 5.0)
            except subprocess.TimeoutExpired:
                stop_process(proc, first=signal.SIGKILL)
                raise PeerError(
                    f"sipp {scenario} still running after {timeout + 5.0:.0f} s: killed\n"
                    + tail(rundir / "stdout.log")
                ) from None
        successful, failed = _read_stats(rundir / "stats.csv")
        return SippResult(
            scenario=Path(scenario).name,
            returncode=returncode,
            successful=successful,
            failed=failed,
            elapsed=time.monotonic() - started,
            rundir=rundir,
        )

    # --- the flows the tests need -------------------------------------------

    def register(
        self,
        registrar: Endpoint,
        user: str,
        password: str,
        *,
        expires: int = 300,
        contact_port: int | None = None,
        count: int = 1,
        timeout: float = 15.0,
    ) -> SippResult:
        """REGISTER ``user`` with digest auth (401 challenge, then credentials).

        The Contact points at SIPp's own port unless ``contact_port`` names
        another (e.g. a :class:`SippUas` that is to take calls for ``user``).
        """
        return self._register(
            "register.xml",
            registrar,
            user,
            password,
            expires=expires,
            contact_port=contact_port,
            count=count,
            timeout=timeout,
        )

    def reregister(
        self,
        registrar: Endpoint,
        user: str,
        password: str,
        *,
        expires: int = 300,
        pause_ms: int = 200,
        contact_port: int | None = None,
        timeout: float = 15.0,
    ) -> SippResult:
        """A registration and its refresh on the same Call-ID, ``pause_ms`` apart."""
        return self._register(
            "reregister.xml",
            registrar,
            user,
            password,
            expires=expires,
            contact_port=contact_port,
            count=1,
            timeout=timeout,
            duration_ms=pause_ms,
        )

    def _register(
        self,
        scenario: str,
        registrar: Endpoint,
        user: str,
        password: str,
        *,
        expires: int,
        contact_port: int | None,
        count: int,
        timeout: float,
        duration_ms: int | None = None,
    ) -> SippResult:
        keys = {
            "domain": self.domain,
            "expires": str(expires),
            "contact_port": str(contact_port) if contact_port is not None else LOCAL_PORT,
        }
        return self.run(
            scenario,
            registrar,
            calls=count,
            service=user,
            auth=(user, password),
            auth_uri=self.domain,
            keys=keys,
            duration_ms=duration_ms,
            timeout=timeout,
        )

    def options(
        self, target: Endpoint, user: str, *, count: int = 1, timeout: float = 15.0
    ) -> SippResult:
        """``count`` OPTIONS keep-alives from ``user`` to the registrar itself."""
        return self.run(
            "options.xml",
            target,
            calls=count,
            service=user,
            keys={"domain": self.domain},
            timeout=timeout,
        )

    def call(
        self,
        proxy: Endpoint,
        caller: str,
        password: str,
        callee: str,
        *,
        count: int = 1,
        duration_ms: int = 200,
        timeout: float = 15.0,
    ) -> SippResult:
        """``count`` calls from ``caller`` to ``callee`` through an authenticating proxy.

        INVITE, 407, ACK, INVITE with Proxy-Authorization, 180, 200, ACK, a
        pause of ``duration_ms``, BYE, 200.
        """
        return self.run(
            "uac_auth.xml",
            proxy,
            calls=count,
            service=callee,
            auth=(caller, password),
            auth_uri=f"{callee}@{self.domain}",
            keys={"domain": self.domain, "caller": caller},
            duration_ms=duration_ms,
            timeout=timeout,
        )

    def uas(
        self, *, scenario: str = "uas.xml", port: int | None = None, extra: Sequence[str] = ()
    ) -> SippUas:
        """A SIPp UAS to start in the background (use it as a context manager).

        ``extra`` are more SIPp options, e.g. ``["-rtp_echo"]`` to echo RTP.
        """
        return SippUas(self, scenario=scenario, port=port, extra=extra)


class SippUas(StartedPeer):
    """A SIPp server scenario running in the background on ``host``:``port``.

    ``with sipp.uas() as uas: ...`` starts it and stops it on exit; the result
    of the run is then in ``uas.result``. :meth:`stop` asks SIPp to finish
    (SIGUSR1: no new calls, exit when the current ones end) and kills the
    process group if it has not exited after ``grace`` seconds.
    """

    def __init__(
        self,
        runner: Sipp,
        *,
        scenario: str = "uas.xml",
        port: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self._runner = runner
        self.extra = tuple(extra)
        self.scenario = scenario
        self.host = runner.local_ip
        self._auto_port = port is None
        self.port = port if port is not None else free_port(runner.local_ip, tcp=False)
        self.rundir: Path | None = None
        self.result: SippResult | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self, *, timeout: float = 60.0, ready_timeout: float = 5.0) -> Self:
        """Start SIPp; return once it has bound its port (``timeout`` bounds the whole run)."""
        for attempt in range(3 if self._auto_port else 1):
            if attempt:  # the free port was taken meanwhile: pick another
                self.port = free_port(self.host, tcp=False)
            if self._spawn(timeout, ready_timeout):
                return self
            assert self._proc is not None
            code = self._proc.poll()
            self.stop()
            if code != EXIT_BIND_ERROR:
                break
        assert self.rundir is not None
        raise PeerError(
            f"sipp UAS did not bind udp:{self.host}:{self.port}\n"
            + tail(self.rundir / "stdout.log")
        )

    def _spawn(self, timeout: float, ready_timeout: float) -> bool:
        self.rundir = self._runner._rundir(self.scenario)
        argv = self._runner._argv(
            self.scenario,
            self.rundir,
            remote=None,
            local_port=self.port,
            calls=None,
            service=None,
            auth=None,
            auth_uri=None,
            keys={},
            duration_ms=None,
            timeout=timeout,
            abort_bye=True,
            extra=self.extra,
        )
        # A UAS that gets no call is not a failure of the UAS run itself.
        argv.remove("-timeout_error")
        (self.rundir / "argv.txt").write_text(" ".join(argv) + "\n")
        self._started = time.monotonic()
        with (self.rundir / "stdout.log").open("wb") as out:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.rundir,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _udp_port_bound(self.host, self.port):
                return True
            time.sleep(0.02)
        return False

    def stop(self, grace: float = 5.0) -> SippResult:
        """Let SIPp finish its calls and exit; kill it after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            if self.result is None:
                raise PeerError("sipp UAS was never started")
            return self.result
        assert self.rundir is not None
        # SIGUSR1 to SIPp itself: stop taking calls, exit when the current ones end.
        returncode = stop_process(proc, first=signal.SIGUSR1, grace=grace, whole_group=False)
        successful, failed = _read_stats(self.rundir / "stats.csv")
        self.result = SippResult(
            scenario=Path(self.scenario).name,
            returncode=returncode,
            successful=successful,
            failed=failed,
            elapsed=time.monotonic() - self._started,
            rundir=self.rundir,
        )
        return self.result


def _udp_port_bound(host: str, port: int) -> bool:
    """Whether some socket holds udp ``host:port`` (we cannot bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False
