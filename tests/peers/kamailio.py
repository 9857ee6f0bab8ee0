"""A real Kamailio as the registrar and authenticating proxy of a test.

:class:`KamailioRegistrar` renders ``kamailio/registrar.cfg`` (read it for the
routing logic) into a work directory together with its ``db_text`` tables,
starts ``kamailio`` in the foreground in its own process group, and waits
until it answers an OPTIONS over UDP. It always stops the whole process group.

Auth backend: ``auth_db`` over ``db_text`` with plain-text passwords
(``calculate_ha1``). Both modules ship in Debian's base ``kamailio`` package,
so no extra module package is needed, and the tables are two small text files
written per test.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Self

from support import PeerError, StartedPeer, free_port, require_tool, stop_process, tail

__all__ = ["CONFIG_TEMPLATE", "INSTALL_KAMAILIO", "KamailioRegistrar", "kamailio_binary"]

#: The configuration template rendered for each instance.
CONFIG_TEMPLATE: Final = Path(__file__).resolve().parent / "kamailio" / "registrar.cfg"

INSTALL_KAMAILIO: Final = "apt-get install kamailio"

# db_text schema of the two tables auth_db reads (README.db_text: one header
# line of name(type[,attr]) columns, then rows with ':' separated fields).
_SUBSCRIBER_HEADER: Final = "id(int,auto) username(str) domain(str) password(str)\n"
_SUBSCRIBER_VERSION: Final = 7  # Kamailio 5.x schema version of `subscriber`

# Characters db_text wants escaped inside a string field (control characters
# are refused outright: no test needs them in a user name or password).
_DBTEXT_ESCAPES: Final = {"\\": "\\\\", ":": "\\:"}


def kamailio_binary() -> str:
    """The path of ``kamailio``; fails the test with the install command when missing."""
    return require_tool("kamailio", INSTALL_KAMAILIO)


def _dbtext_field(value: str) -> str:
    if not value or any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise ValueError(f"db_text cannot store {value!r}")
    return "".join(_DBTEXT_ESCAPES.get(ch, ch) for ch in value)


def _check_token(name: str, value: str, allowed: str) -> str:
    # Values are substituted textually into the config (#!substdef): keep them
    # to characters that cannot break out of a string or a regex.
    if not value or any(not (ch.isalnum() or ch in allowed) for ch in value):
        raise ValueError(f"{name} {value!r} may only hold letters, digits and {allowed!r}")
    return value


def _options_probe(host: str, port: int, local_port: int) -> bytes:
    branch = "z9hG4bK-" + uuid.uuid4().hex[:16]
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:readiness@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class KamailioRegistrar(StartedPeer):
    """A Kamailio registrar with digest authentication and a stateful proxy.

    ``users`` maps user names to plain-text passwords (``{"100": "s3cret-100"}``).
    The proxy listens on ``host`` (UDP and TCP on the same ``port``; a free one
    unless given), treats ``domain`` (also the digest realm) as its own, and:

    * answers ``OPTIONS sip:<host>:<port>`` / ``OPTIONS sip:<domain>`` with 200;
    * challenges REGISTER with 401 and other requests from ``domain`` with 407
      (qop=auth); a wrong password or an unknown user gets **403**;
    * relays INVITEs whose Request-URI user starts with ``downstream_prefix``
      to ``downstream`` (host, port) when given, others to the registered
      contacts of the called user (404 when there are none); it record-routes;
    * mirrors every message as HEPv3 to ``hep`` (host, port) when given;
    * with ``user_oracle``, answers 404 at once for a user it does not know
      (a REGISTER, or a request whose From is in ``domain``) and challenges
      only known ones: the leak svwar enumerates extensions with, which a
      test needs to prove that a gateway in front hides it.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Its
    stdout/stderr go to ``log_path``; :meth:`log_tail` is in every failure.
    """

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        domain: str = "sipwarden.test",
        downstream: tuple[str, int] | None = None,
        downstream_prefix: str = "9",
        hep: tuple[str, int] | None = None,
        user_oracle: bool = False,
        ready_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.users = dict(users)
        self.host = _check_token("host", host, ".-")
        self._fixed_port = port
        self.port = port if port is not None else 0
        self.domain = _check_token("domain", domain, ".-")
        self.downstream = downstream
        self.downstream_prefix = _check_token("downstream_prefix", downstream_prefix, "")
        self.hep = hep
        self.user_oracle = user_oracle
        self.ready_timeout = ready_timeout
        self.config_path = self.workdir / "kamailio.cfg"
        self.db_dir = self.workdir / "db"
        self.run_dir = self.workdir / "run"
        self.log_path = self.workdir / "kamailio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._instance = uuid.uuid4().hex

    # --- public API ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the UDP/TCP listener."""
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        """``sip:host:port`` of the proxy."""
        return f"sip:{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the Kamailio process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of Kamailio's log, for failure messages."""
        return tail(self.log_path, lines)

    def render(self) -> Path:
        """Write the config and the db_text tables into ``workdir``; return the config path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        (self.db_dir / "version").write_text(
            f"table_name(str) table_version(int)\nsubscriber:{_SUBSCRIBER_VERSION}\n"
        )
        rows = [
            f"{n}:{_dbtext_field(user)}:{_dbtext_field(self.domain)}:{_dbtext_field(password)}\n"
            for n, (user, password) in enumerate(sorted(self.users.items()), start=1)
        ]
        (self.db_dir / "subscriber").write_text(_SUBSCRIBER_HEADER + "".join(rows))

        params = [
            "#!define SW_PARAMS",
            f'#!substdef "!SW_ADDR!{self.host}!g"',
            f'#!substdef "!SW_PORT!{self.port}!g"',
            f'#!substdef "!SW_DOMAIN!{self.domain}!g"',
            f'#!substdef "!SW_DBURL!{self.db_dir.resolve()}!g"',
            f'#!substdef "!SW_INSTANCE!{self._instance}!g"',
        ]
        if self.downstream is not None:
            down_host, down_port = self.downstream
            _check_token("downstream host", down_host, ".-")
            params += [
                "#!define WITH_DOWNSTREAM",
                f'#!substdef "!SW_PREFIX!{self.downstream_prefix}!g"',
                f'#!substdef "!SW_DOWNSTREAM!{down_host}:{int(down_port)}!g"',
            ]
        if self.hep is not None:
            hep_host, hep_port = self.hep
            _check_token("hep host", hep_host, ".-")
            params += ["#!define WITH_HEP", f'#!substdef "!SW_HEP!{hep_host}:{int(hep_port)}!g"']
        if self.user_oracle:
            params.append("#!define WITH_USER_ORACLE")
        first, _, rest = CONFIG_TEMPLATE.read_text().partition("\n")
        self.config_path.write_text(
            "\n".join([first, "# --- rendered by tests/peers/kamailio.py ---", *params, rest])
        )
        return self.config_path

    def check_config(self) -> str:
        """Render and run ``kamailio -c`` on the result; return its output or fail."""
        self.render()
        out = subprocess.run(
            [kamailio_binary(), "-c", "-f", str(self.config_path), "-Y", str(self.run_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        output = out.stdout + out.stderr
        if out.returncode != 0 or "config file ok" not in output:
            raise PeerError(f"kamailio -c rejected {self.config_path}:\n{output[-4000:]}")
        return output

    def start(self) -> Self:
        """Start Kamailio and wait until it answers OPTIONS; fail with its log if not."""
        if self.running:
            return self
        binary = kamailio_binary()
        attempts = 1 if self._fixed_port is not None else 3
        exit_code: int | None = None
        for attempt in range(attempts):
            if attempt:
                self.port = 0  # the free port may have been taken meanwhile: pick another
            self.render()
            self._spawn(binary)
            if self._wait_ready():
                return self
            assert self._proc is not None
            exit_code = self._proc.poll()
            self._terminate()
            if exit_code is None:  # alive but silent: another port will not help
                break
        status = "still running" if exit_code is None else f"exited with {exit_code}"
        raise PeerError(
            f"kamailio did not answer OPTIONS on udp:{self.host}:{self.port} within "
            f"{self.ready_timeout:.0f} s ({status}; config {self.config_path}); "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop Kamailio and all its children (the whole process group)."""
        self._terminate()

    def options(self, timeout: float = 1.0, *, transport: str = "udp") -> bytes:
        """Send one OPTIONS to the proxy over UDP or TCP; return the raw answer."""
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            if kind == socket.SOCK_DGRAM:
                sock.bind((self.host, 0))
                probe = _options_probe(self.host, self.port, sock.getsockname()[1])
                sock.sendto(probe, (self.host, self.port))
                return sock.recv(65535)
            sock.connect((self.host, self.port))
            probe = _options_probe(self.host, self.port, sock.getsockname()[1])
            sock.sendall(probe.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65535)
                if not chunk:
                    break
                data += chunk
            return data

    # --- internals ----------------------------------------------------------

    def _spawn(self, binary: str) -> None:
        argv = [
            binary,
            "-DD",  # stay in the foreground, still fork the workers
            "-E",  # log to stderr
            "-f",
            str(self.config_path),
            "-Y",
            str(self.run_dir),
            "-m",
            "64",  # shared memory, MB
            "-M",
            "8",  # private memory per process, MB
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: killpg reaches every worker
            )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                answer = self.options(timeout=0.2)
            except OSError:  # refused (not bound yet) or timed out
                time.sleep(0.05)
                continue
            # Only our own process counts: another one may hold the same UDP
            # port (Kamailio binds UDP with SO_REUSEADDR).
            if answer.startswith(b"SIP/2.0 ") and self._instance.encode() in answer:
                return True
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, first=signal.SIGTERM, grace=5.0)
