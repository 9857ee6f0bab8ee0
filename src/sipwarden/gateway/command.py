"""``sipwarden gateway``: the configuration turned into a running gateway."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sipwarden.alerts.records import ban_record, event_record, to_json_line
from sipwarden.config import Config
from sipwarden.detect.registry import build_engine
from sipwarden.detection_config import ban_settings, detection_settings
from sipwarden.enforce.manager import BanManager
from sipwarden.enforce.setup import build_ban_manager
from sipwarden.engine.contract import Inspection
from sipwarden.errors import ConfigError, SipwardenError, StoreError
from sipwarden.store.sqlite import SqliteStore

from .core import GatewayCore
from .model import Endpoint, GatewaySettings
from .rtpengine import MediaPolicy, RtpengineClient
from .screening import RateLimiter
from .server import GatewayServer
from .tls import client_context, server_context
from .tokens import TokenSigner
from .workers import pin_to_core, supervise, worker_count

__all__ = ["gateway_settings", "listeners_of", "load_secret", "run_gateway", "run_worker"]

log = logging.getLogger("sipwarden.gateway")

SECRET_BYTES = 32


def parse_endpoint(text: str, *, key_path: str, resolve: bool = False) -> Endpoint:
    """``udp:10.0.0.5:5060`` / ``tcp:[::1]:5060`` as an Endpoint (names resolved when asked)."""
    transport, rest = text.split(":", 1)
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not resolve:
            raise ConfigError(f"{host!r} is not an IP address", key_path=key_path) from None
        try:
            host = socket.getaddrinfo(host, None)[0][4][0]  # type: ignore[assignment]
        except OSError as error:
            raise ConfigError(f"cannot resolve {host!r}: {error}", key_path=key_path) from None
    return Endpoint(transport, str(host), int(port))


def _local_address_towards(upstream: Endpoint) -> str:
    """The address this host uses to reach ``upstream`` (a routing lookup, no packet sent)."""
    family = socket.AF_INET6 if ":" in upstream.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((upstream.host, upstream.port))
        return str(probe.getsockname()[0])


def _default_route_address(wildcard: str) -> str:
    """The address of the default route (what the Internet sees without NAT)."""
    # A documentation address: only the routing table is consulted, nothing is sent.
    probe = Endpoint("udp", "2001:db8::1" if ":" in wildcard else "192.0.2.1", 9)
    try:
        return _local_address_towards(probe)
    except OSError:
        raise ConfigError(
            f"the first listener {wildcard} is a wildcard and this host has no default "
            "route: name the address the outside sees (written into Via, Record-Route and "
            "Contact)",
            key_path="gateway.public_address",
        ) from None


INSIDE_PORT_OFFSET = 1000  # worker i of several talks to the PBX from listen port + this + i


def listeners_of(config: Config) -> list[Endpoint]:
    """The listeners ``[gateway] listen`` names."""
    return [parse_endpoint(text, key_path="gateway.listen") for text in config.gateway.listen]


def gateway_settings(config: Config, *, worker: int = 0, workers: int = 1) -> GatewaySettings:
    """The core's settings, checked (upstream names resolved); errors name the key.

    With several workers each has its own inside port (listener port +
    :data:`INSIDE_PORT_OFFSET` + its index): fixed, so a restarted worker takes
    its calls back.
    """
    section = config.gateway
    if not section.upstreams:
        raise ConfigError(
            'the gateway needs the PBX to protect, e.g. ["udp:10.0.0.5:5060"]',
            key_path="gateway.upstreams",
        )
    listeners = listeners_of(config)
    upstreams = tuple(
        parse_endpoint(text, key_path="gateway.upstreams", resolve=True)
        for text in section.upstreams
    )
    first = listeners[0]
    wildcard = first.host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    public = section.public_address or ("" if wildcard else first.host)
    if not public:
        public = _default_route_address(first.host)
    inside_host = first.host if not wildcard else _local_address_towards(upstreams[0])
    media = section.media
    return GatewaySettings(
        outside=Endpoint(first.transport, public, first.port),
        inside=Endpoint(
            upstreams[0].transport,
            inside_host,
            first.port if workers == 1 else first.port + INSIDE_PORT_OFFSET + worker,
        ),
        upstreams=upstreams,
        identity=section.identity,
        strip_outbound=section.strip_outbound_headers,
        strip_inbound=section.strip_inbound_headers,
        sdp_session_name=section.sdp_session_name,
        uniform_auth_answers=section.uniform_auth_answers,
        answer_options=section.answer_options,
        require_srtp=media.require_srtp,
        bind_account_to_subject=section.tls.bind_account_to_subject,
        anchor_media=bool(media.rtpengine),
        health_check_interval=section.health_check_interval,
    )


def protected_hosts(settings: GatewaySettings) -> tuple[str, ...]:
    """The PBXs' addresses (as resolved in the settings): allowlisted whatever
    ``[bans]`` says.

    The gateway sees the PBX as a source like any other (its answers, the calls
    and qualify OPTIONS it sends out), and a detector counting them must never
    get it banned: a kernel ban on the PBX would be the outage the gateway is
    there to prevent.
    """
    return tuple(dict.fromkeys(upstream.host for upstream in settings.upstreams))


def load_secret(path: str) -> bytes:
    """The routing key: read, or created with owner-only permissions when missing."""
    file = Path(path)
    try:
        try:
            key = file.read_bytes()
        except FileNotFoundError:
            key = _create_secret(file)
    except OSError as error:
        raise ConfigError(
            f"cannot read {path}: {error.strerror}", key_path="gateway.secret_file"
        ) from None
    if len(key) < 16:
        raise ConfigError(f"{path} holds fewer than 16 bytes", key_path="gateway.secret_file")
    return key


def _create_secret(file: Path) -> bytes:
    """A new key, owner-only, put in place whole: written to a temporary file first and
    linked under its name, which fails if another process got there first (gateway
    workers start together); then the other's key is the one."""
    key = secrets.token_bytes(SECRET_BYTES)
    descriptor, temporary = tempfile.mkstemp(dir=file.parent or ".", prefix=".sipwarden-key-")
    try:
        with os.fdopen(descriptor, "wb") as out:  # mkstemp makes it 0600
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, file)
        except FileExistsError:
            return file.read_bytes()
    finally:
        os.unlink(temporary)
    log.info("created the routing key %s", file)
    return key


class _Sink:
    """Where the gateway's findings go: bans to the manager, events to the store and stdout."""

    def __init__(self, manager: BanManager, store: SqliteStore | None, out: TextIO | None) -> None:
        self.manager = manager
        self.store = store
        self.out = out

    def __call__(self, inspection: Inspection) -> None:
        for ban in inspection.bans:
            self.manager.apply(ban)
        if self.out is not None:
            # The same lines as the monitor's --json: events, then the bans they earned.
            for event in inspection.events:
                self.out.write(to_json_line(event_record(event)) + "\n")
            for ban in inspection.bans:
                self.out.write(to_json_line(ban_record(ban)) + "\n")
            self.out.flush()
        if self.store is not None and inspection.events:
            try:
                self.store.add_events(inspection.events)
            except StoreError as error:
                log.error("events not saved yet: %s", error)  # noqa: TRY400


def _open_store(config: Config) -> SqliteStore | None:
    if not config.store.path:
        return None
    try:
        return SqliteStore(config.store.path, busy_timeout=config.store.busy_timeout)
    except StoreError as error:
        log.error("%s; running without a store", error)  # noqa: TRY400
        return None


def build_core(
    config: Config,
    manager: BanManager,
    store: SqliteStore | None,
    out: TextIO | None,
    *,
    worker: tuple[int, int] = (0, 1),
    settings: GatewaySettings | None = None,
) -> GatewayCore:
    """The worker's core; ``settings`` when the caller already made them from ``config``."""
    if settings is None:
        settings = gateway_settings(config, worker=worker[0], workers=worker[1])
    bans = ban_settings(config.bans)
    bans = replace(bans, allowlist=(*bans.allowlist, *protected_hosts(settings)))
    engine = build_engine(detection_settings(config.detect), bans=bans)
    return GatewayCore(
        settings,
        engine=engine,
        signer=TokenSigner(load_secret(config.gateway.secret_file)),
        bans=manager,
        report=_Sink(manager, store, out),
        limiter=RateLimiter(rate=config.rules.sip_rate, burst=config.rules.sip_burst),
        bogon_check=config.gateway.bogon_check,
        limits=config.parser.limits(),
    )


def tls_contexts(config: Config, listeners: list[Endpoint]) -> dict[str, ssl.SSLContext]:
    """The server context when a listener is tls:, the client one when an upstream is."""
    contexts = {}
    if any(listener.transport == "tls" for listener in listeners):
        contexts["server_tls"] = server_context(config.gateway.tls)
    if any(upstream.startswith("tls:") for upstream in config.gateway.upstreams):
        contexts["client_tls"] = client_context(config.gateway.tls)
    return contexts


def media_client(config: Config) -> RtpengineClient | None:
    """The rtpengine client when [gateway.media] rtpengine names one."""
    media = config.gateway.media
    if not media.rtpengine:
        return None
    policy = MediaPolicy(
        outside_interface=media.rtpengine_outside_interface,
        pbx_interface=media.rtpengine_inside_interface,
    )
    return RtpengineClient(media.rtpengine, policy=policy)


def run_gateway(
    config: Config,
    *,
    json_lines: bool,
    duration: float | None = None,
    reload: Callable[[], Config] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``duration`` seconds), in one or more workers.

    ``reload`` reads the configuration again on SIGHUP.
    """
    gateway_settings(config)  # every configuration error before a worker starts
    count = worker_count(config.gateway.workers)
    load_secret(config.gateway.secret_file)  # created here, before the workers read it
    if count == 1:
        return run_worker(config, json_lines=json_lines, duration=duration, reload=reload)
    # Each worker stops by itself after ``duration``; one that ended cleanly is
    # not restarted, so the supervisor returns once all have.
    return supervise(
        count,
        lambda index: run_worker(
            config, json_lines=json_lines, duration=duration, reload=reload, worker=(index, count)
        ),
    )


def run_worker(
    config: Config,
    *,
    json_lines: bool,
    duration: float | None = None,
    reload: Callable[[], Config] | None = None,
    worker: tuple[int, int] = (0, 1),
) -> int:
    """One worker (``worker`` is its index and the count): its ban manager, store
    connection, core and listeners."""
    if worker[1] > 1:
        pin_to_core(worker[0])
    listeners = listeners_of(config)
    settings = gateway_settings(config, worker=worker[0], workers=worker[1])
    store = _open_store(config)
    manager = build_ban_manager(
        config, store=store, enforcing=True, protected=protected_hosts(settings)
    )
    manager.start(time.time())
    manager.run_in_background()
    out = sys.stdout if json_lines else None
    try:
        core = build_core(config, manager, store, out, worker=worker, settings=settings)
        server = GatewayServer(
            core,
            listeners,
            media=media_client(config),
            workers=worker[1],
            **tls_contexts(config, listeners),
        )

        def rebuilt() -> GatewayCore | None:
            if reload is None:
                return None
            return build_core(reload(), manager, store, out, worker=worker)

        asyncio.run(_serve(server, duration, rebuilt))
    finally:
        manager.close()
        if store is not None:
            try:
                store.close()
            except StoreError as error:
                log.error("%s", error)  # noqa: TRY400
    return 0


async def _serve(
    server: GatewayServer, duration: float | None, rebuilt: Callable[[], GatewayCore | None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(server, rebuilt))
    if duration is not None:
        loop.call_later(duration, stop.set)
    await server.start()
    log.info(
        "gateway running; upstreams %s",
        ", ".join(e.hostport for e in server.core.settings.upstreams),
    )
    await server.serve(stop)
    log.info("gateway stopped: %s", vars_of(server.core.counters))


def _reload(server: GatewayServer, rebuilt: Callable[[], GatewayCore | None]) -> None:
    """SIGHUP: the new configuration takes over between two messages. Calls go on:
    their routing state is in the messages, and the transaction memory is kept.
    Listeners are not moved (a change of gateway.listen needs a restart)."""
    try:
        core = rebuilt()
    except SipwardenError as error:
        log.error("configuration not reloaded, the old one stays in force: %s", error)  # noqa: TRY400
        return
    if core is None:
        log.warning("SIGHUP ignored: no configuration file to reload")
        return
    core.transactions = server.core.transactions
    core.pinholes = server.core.pinholes
    core.counters = server.core.counters
    server.core = core
    log.info("configuration reloaded")


def vars_of(counters: object) -> str:
    slots = getattr(type(counters), "__slots__", ())
    return ", ".join(f"{name} {getattr(counters, name)}" for name in slots)
