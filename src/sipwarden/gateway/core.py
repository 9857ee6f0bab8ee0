"""The gateway's decisions, sans-IO: bytes from a side in, bytes to send out.

:meth:`GatewayCore.receive` takes one datagram (or one framed stream
message) with where it came from and ``now``, and returns what to send
where. The asyncio listeners only move bytes and call :meth:`GatewayCore.tick`
for the health probes; every decision is here, testable without a socket.

The pipeline per message from the outside (DESIGN, gateway issue):

1. ban check (the in-process ban table: one dict lookup);
2. BCP 38: a bogon source is dropped;
3. per-source rate limit;
4. strict parse: a request that fails gets 400 with the rule broken, a
   response is dropped; RFC 3261 16.3 validation (400/416/420/483), loops (482);
5. the engine's verdict (the same detectors the monitor runs);
6. media policy (SRTP required: 488);
7. topology hiding and header rules, then forwarding (:mod:`.routing`).

Messages from the PBX are trusted: they are inspected (the engine pairs the
PBX's answers with the requests, which is how it sees cracking and
enumeration) but never dropped by a verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from sipwarden.engine.contract import Action, Direction, Inspection, Observation, Verdict
from sipwarden.engine.correlation import carries_credentials
from sipwarden.engine.engine import Engine
from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.checks import check_proxy_request
from sipwarden.sip.fields import Via
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import parse_message
from sipwarden.sip.replies import REASON_PHRASES, make_response
from sipwarden.sip.uri import SipUri

from .capabilities import Capabilities
from .challenges import ChallengeMimic
from .hiding import HeaderRules, hide_sdp, replace_identity
from .media_policy import srtp_verdict
from .model import Endpoint, GatewaySettings, MediaStep, Send, Side
from .pinholes import Pinholes
from .routing import Router, endpoint_of_via, literal_endpoint
from .screening import RateLimiter, is_bogon
from .tls import account_allowed
from .tokens import TokenSigner
from .transactions import Transaction, TransactionTable
from .upstreams import Upstreams

__all__ = ["BanCheck", "Counters", "GatewayCore"]

log = logging.getLogger("sipwarden.gateway")

# Requests that create a dialog the gateway must stay in (RFC 3261 16.6 step 4).
_DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
# Requests a PBX answers differently for known and unknown accounts.
_AUTHENTICATED: Final = frozenset({"REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE", "REFER"})
# Requests whose 404 the gateway equalises (uniform_auth_answers). OPTIONS too:
# a PBX challenges an OPTIONS to a known user and answers 404 for an unknown
# one, and `svwar -m OPTIONS` found extensions 100-102 of the test Kamailio
# through the gateway that way (tests/gateway/test_attacks.py).
_ENUMERABLE: Final = _AUTHENTICATED | {"OPTIONS"}


class BanCheck(Protocol):
    def banned(self, address: str, now: float) -> object | None: ...


class Counters:
    """What happened to messages, for the logs and the metrics."""

    __slots__ = (
        "answered",
        "banned",
        "bogon",
        "forwarded",
        "malformed",
        "rate_limited",
        "refused",
        "replied",
    )

    def __init__(self) -> None:
        self.banned = self.bogon = self.rate_limited = self.malformed = 0
        self.refused = self.replied = self.forwarded = 0
        self.answered = 0  # requests answered here instead of forwarded (OPTIONS)


class GatewayCore:
    """One gateway's pipeline; all of its state is bounded."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        engine: Engine,
        signer: TokenSigner,
        bans: BanCheck | None = None,
        report: Callable[[Inspection], None] | None = None,
        limiter: RateLimiter | None = None,
        bogon_check: bool = True,
        limits: ParserLimits = DEFAULT_LIMITS,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.signer = signer
        self.bans = bans
        self.report = report
        self.limiter = limiter
        self.bogon_check = bogon_check
        self.limits = limits
        self.router = Router(inside=settings.inside, outside=settings.outside, signer=signer)
        self.upstreams = Upstreams(settings.upstreams, interval=settings.health_check_interval)
        self.transactions = TransactionTable()
        self.pinholes = Pinholes()
        self.counters = Counters()
        self._strip_out = HeaderRules(settings.strip_outbound)
        self._strip_in = HeaderRules(settings.strip_inbound)
        self._challenges = ChallengeMimic(signer, realm=settings.outside.host)
        # The gateway's own answers say what the PBX's say after replace_identity
        # (nothing, or the identity), so they cannot be told apart by it.
        self._server_header = (("Server", settings.identity),) if settings.identity else ()
        self.capabilities = Capabilities()

    # ---------------------------------------------------------------- entry points

    def tick(self, now: float) -> list[Send]:
        """Health probes and NAT keep-alives due at ``now``; call it every second or so."""
        probes = self.upstreams.probes(
            now, via_host=self.settings.inside.hostport, transport=self.settings.inside.transport
        )
        return probes + self.pinholes.due(now)

    def side_of(self, source: Endpoint) -> Side:
        """INSIDE for an upstream's own address and port, OUTSIDE for anything else.

        The port matters: on a shared host (or loopback) phones and the PBX
        have the same address. Over TCP/TLS the gateway opens the connections
        to the PBX itself, so their peer is the upstream's listening address.
        """
        return Side.INSIDE if self.upstreams.index_of(source) >= 0 else Side.OUTSIDE

    def receive(self, data: bytes, source: Endpoint, now: float) -> list[Send]:
        side = self.side_of(source)
        if side is Side.OUTSIDE and not self._screen(source, now):
            return []
        if not data.strip(b"\r\n"):
            return []  # a keep-alive (RFC 5626 3.5.1 CRLF ping): nothing to forward
        try:
            message = parse_message(data, strict=True, limits=self.limits)
        except RemoteProtocolError as error:
            return self._malformed(data, error, source, side, now)
        return self._dispatch(message, data, source, side, now)

    def receive_message(
        self,
        message: Message,
        source: Endpoint,
        now: float,
        *,
        peercert: Mapping[str, object] | None = None,
    ) -> list[Send]:
        """A message a stream transport already framed and parsed (TCP, TLS).

        ``peercert`` is the verified client certificate of a TLS connection.
        """
        side = self.side_of(source)
        if side is Side.OUTSIDE and not self._screen(source, now):
            return []
        if (
            side is Side.OUTSIDE
            and isinstance(message, Request)
            and not self._certificate_allows(message, source, peercert)
        ):
            self.counters.refused += 1
            return self._unless_ack(message, 403, source, "Forbidden (certificate)")
        return self._dispatch(message, message.to_bytes(), source, side, now)

    def _certificate_allows(
        self, request: Request, source: Endpoint, peercert: Mapping[str, object] | None
    ) -> bool:
        """Mutual TLS bound to accounts: the account a REGISTER registers (To) or a
        call comes from (From) must be one the client certificate names."""
        if not self.settings.bind_account_to_subject or source.transport != "tls":
            return True
        if request.method not in _AUTHENTICATED:
            return True
        party = request.to if request.method == "REGISTER" else request.from_
        uri = party.uri if party is not None else None
        user = uri.user if isinstance(uri, SipUri) else None
        return user is not None and account_allowed(peercert, user)

    def stream_error(
        self, error: RemoteProtocolError, source: Endpoint, now: float, data: bytes = b""
    ) -> list[Send]:
        """A stream whose framing broke, with the bytes that broke it: handled as a
        malformed datagram (reported; a request answered 400, 505, ...), on the
        connection before the caller closes it (RFC 3261 18.3)."""
        return self._malformed(data, error, source, self.side_of(source), now)

    def _dispatch(
        self, message: Message, data: bytes, source: Endpoint, side: Side, now: float
    ) -> list[Send]:
        if side is Side.INSIDE:
            # The PBX is what the gateway protects and relays as it is: its grammar
            # is not judged (a full check of each of its messages cost ~4% of the
            # gateway's time, for reports about the PBX no one could act on).
            message.trust_grammar()
        if isinstance(message, Request):
            if side is Side.OUTSIDE:
                return self._request_from_outside(message, data, source, now)
            return self._request_from_inside(message, data, source, now)
        assert isinstance(message, Response)
        if side is Side.INSIDE:
            return self._response_from_inside(message, data, source, now)
        return self._response_from_outside(message, data, source, now)

    # ---------------------------------------------------------------- screening

    def _screen(self, source: Endpoint, now: float) -> bool:
        counters = self.counters
        if self.bans is not None and self.bans.banned(source.host, now) is not None:
            counters.banned += 1
            return False
        if self.bogon_check and is_bogon(source.host) and not self._trusted(source.host):
            counters.bogon += 1
            return False
        limited = self.limiter is not None and not self.limiter.allow(source.host, now)
        if limited and not self._trusted(source.host):
            counters.rate_limited += 1
            return False
        return True

    def _trusted(self, host: str) -> bool:
        return self.engine.ban_policy.is_trusted(host)

    def _inspect(  # noqa: PLR0917 - private, and each argument is one field of the observation
        self,
        message: Message | None,
        data: bytes,
        peers: tuple[Endpoint, Endpoint],
        direction: Direction,
        now: float,
        error: RemoteProtocolError | None = None,
    ) -> Verdict:
        src, dst = peers
        observation = Observation(
            now,
            src.host,
            src.port,
            dst.host,
            dst.port,
            src.transport,
            direction,
            data,
            message,
            error,
        )
        inspection = self.engine.inspect(observation)
        if (inspection.events or inspection.bans) and self.report is not None:
            self.report(inspection)
        return inspection.verdict

    def _malformed(
        self, data: bytes, error: RemoteProtocolError, source: Endpoint, side: Side, now: float
    ) -> list[Send]:
        self.counters.malformed += 1
        if side is Side.INSIDE:
            log.warning("dropped a malformed message from the PBX %s: %s", source.hostport, error)
            return []
        verdict = self._inspect(
            None, data, (source, self.settings.outside), Direction.INBOUND, now, error
        )
        if verdict.action is not Action.ALLOW and verdict.action is not Action.REJECT:
            return []
        try:
            lenient = parse_message(data, strict=False, limits=self.limits)
        except RemoteProtocolError:
            return []
        if not isinstance(lenient, Request) or lenient.method == "ACK":
            return []  # a response is dropped; an ACK is never answered
        status = error.status_hint or 400
        return [self._reply(lenient, status, source, reason=_reason_of(error))]

    # ---------------------------------------------------------------- replies

    def _reply(
        self,
        request: Request,
        status: int,
        to: Endpoint,
        *,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        now: float | None = None,
    ) -> Send:
        """A response of ours, sent to where the request came from (never to a Via a
        sender wrote: that would make the gateway a reflector).

        With ``now`` (the engine saw the request) the engine sees the answer too.
        """
        self.counters.replied += 1
        # A 100 carries no To tag (RFC 3261 8.2.6.2): no keyed hash for every INVITE.
        tag = self._to_tag(request) if status > 100 else None
        response = make_response(
            request, status, reason, to_tag=tag, headers=(*headers, *self._server_header)
        )
        data = response.to_bytes()
        if now is not None:
            self._inspect_answer(response, data, to, now)
        return Send(to, data)

    def _to_tag(self, request: Request) -> str:
        """The To tag of our own answers to ``request``: stable for its retransmissions."""
        return self.signer.digest("tag", request.call_id or "", request.headers.get("from") or "")

    def _inspect_answer(self, response: Response, data: bytes, to: Endpoint, now: float) -> None:
        """Our own final answer to a request the engine inspected, shown to the engine
        as a monitor on the wire would see it. A final response ends the INVITE
        transaction (RFC 3261 17.2.1): without it the engine would count every
        INVITE refused here as a call still ringing, holding one of its account's
        session slots until it expired (the RFC 4475 INVITEs of account "caller" that
        the gateway refuses, baddate, escruri, ltgtruri, multi01, ..., got sdp01, a
        valid one from the same account, answered 486)."""
        self._inspect(response, data, (self.settings.outside, to), Direction.OUTBOUND, now)

    # ---------------------------------------------------------------- outside → PBX

    def _request_from_outside(
        self, request: Request, data: bytes, source: Endpoint, now: float
    ) -> list[Send]:
        rejection = check_proxy_request(request)
        if rejection is not None:
            self.counters.refused += 1
            self._inspect(request, data, (source, self.settings.outside), Direction.INBOUND, now)
            return self._unless_ack(
                request, rejection.status, source, rejection.reason, rejection.headers, now=now
            )
        if self._is_loop(request):
            return self._unless_ack(request, 482, source)
        verdict = self._inspect(
            request, data, (source, self.settings.outside), Direction.INBOUND, now
        )
        if verdict.action is Action.REJECT:
            self.counters.refused += 1
            return self._unless_ack(
                request, verdict.status or 403, source, verdict.reason or None, now=now
            )
        if verdict.action is not Action.ALLOW:
            self.counters.refused += 1
            return []
        if (
            request.method == "OPTIONS"
            and self.settings.answer_options
            and not _has_to_tag(request)
        ):
            # Answered here, the same for every account (see .capabilities).
            self.counters.answered += 1
            headers = self.capabilities.headers
            return [self._reply(request, 200, source, headers=headers, now=now)]
        refusal = self._media_refusal(request)
        if refusal is not None:
            self.counters.refused += 1
            out = refusal.to_bytes()
            self._inspect_answer(refusal, out, source, now)
            return [Send(source, out)]
        return self._forward_inward(request, source, now)

    def _media_refusal(self, request: Request) -> Response | None:
        """488 for a call whose SDP offers no SRTP, when the policy requires it."""
        if not self.settings.require_srtp:
            return None
        refusal = srtp_verdict(request, require_srtp=True, to_tag=self._to_tag(request))
        if refusal is None:
            return None
        for name, value in self._server_header:
            refusal.headers.add(name, value)
        return refusal

    def _unless_ack(
        self,
        request: Request,
        status: int,
        source: Endpoint,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        now: float | None = None,
    ) -> list[Send]:
        if request.method == "ACK":
            return []  # RFC 3261 17.2.1: an ACK gets no response
        return [self._reply(request, status, source, reason=reason, headers=headers, now=now)]

    def _is_loop(self, request: Request) -> bool:
        """Our own Via already in the request: it came back round (RFC 3261 16.3 step 4)."""
        return any(self.router.wrote(via) for via in request.via)

    def _forward_inward(self, request: Request, source: Endpoint, now: float) -> list[Send]:
        router = self.router
        method = request.method
        branch = router.branch(request, Side.INSIDE)
        known = self.transactions.get(branch, method)
        if known is not None and known.last_response is not None:
            return [Send(known.reply_to, known.last_response)]  # a retransmission, absorbed
        self._strip_in.apply(request)
        upstream = router.pop_route(request, Side.OUTSIDE)
        _, aliased = router.resolve_alias(request, Side.OUTSIDE)
        upstream = self._upstream_for(request, branch, upstream, aliased)
        _decrement_max_forwards(request)
        router.stamp_received(request, source)
        # RFC 3261 16.2: a stateful proxy answers an INVITE with 100 at once,
        # which also stops the phone's retransmissions over UDP. Built here,
        # from the Vias as received (stamped, 18.2.1), before ours is pushed:
        # built later, it carried our inside face's Via on top, which showed
        # the outside the inside address and made a strict phone discard it
        # (18.1.2); seen in the capture of tests/gateway/test_attacks.py.
        trying = self._reply(request, 100, source) if method == "INVITE" and known is None else None
        router.alias_contacts(request, Side.INSIDE, phone=source, upstream=upstream)
        if method in _DIALOG_CREATING and not _has_to_tag(request):
            request.headers.insert_before("Record-Route", router.inside_record_route())
        router.push_via(request, Side.INSIDE, branch)
        if method != "ACK":
            entry = Transaction(source, upstream, carries_credentials(request), _has_sdp(request))
            self.transactions.put(branch, method, entry, now)
        media = self._media_step(request, Side.INSIDE)
        sends = [Send(self.upstreams.endpoint(upstream), request.to_bytes(), media)]
        self.counters.forwarded += 1
        if trying is not None:
            sends.insert(0, trying)
        return sends

    def _upstream_for(self, request: Request, branch: str, routed: int, aliased: int) -> int:
        if request.method in ("CANCEL", "ACK"):
            invite = self.transactions.get(branch, "INVITE")
            if invite is not None:
                return invite.upstream  # the PBX that has the INVITE
        for index in (routed, aliased):
            if 0 <= index < len(self.settings.upstreams):
                return index
        return self.upstreams.pick()

    def _response_from_inside(
        self, response: Response, data: bytes, source: Endpoint, now: float
    ) -> list[Send]:
        top = response.top_via
        if top is not None and self.upstreams.answered(top.branch or ""):
            self.capabilities.learn(response)  # the answer to a health probe of ours
            return []
        via = self.router.pop_our_via(response, Side.INSIDE)
        if via is None:
            log.debug(
                "dropped a response from the PBX that is not for us: %s", response.start_line()
            )
            return []
        transaction = self._transaction_of(response, via)
        destination = self._reply_destination(response, transaction)
        if destination is None:
            return []
        self._learn_challenge(response)
        cseq = response.cseq
        method = cseq.method if cseq else ""
        if method == "REGISTER" and 200 <= response.status < 300:
            self.pinholes.registered(destination, response, now)
        if transaction is not None and self.settings.uniform_auth_answers:
            self._uniform_auth(response, transaction, method, now)
        upstream = (
            transaction.upstream if transaction is not None else self.upstreams.index_of(source)
        )
        self._inspect(response, data, (source, destination), Direction.OUTBOUND, now)
        self._hide_outward(response, upstream, dialog_creating=False)
        out = response.to_bytes()
        media = self._media_step(response, Side.OUTSIDE, transaction)
        if transaction is not None:
            # An anchored SDP is rewritten after this point: a retransmission then
            # goes to the PBX again rather than replaying the unanchored answer.
            transaction.last_response = out if media is None or media.kind == "delete" else None
        self.counters.forwarded += 1
        return [Send(destination, out, media)]

    def _transaction_of(self, response: Response, via: Via) -> Transaction | None:
        """The transaction ``response`` answers, by the branch of our Via and its method."""
        cseq = response.cseq
        return self.transactions.get(via.branch or "", cseq.method if cseq else "")

    def _reply_destination(
        self, response: Response, transaction: Transaction | None
    ) -> Endpoint | None:
        if transaction is not None:
            return transaction.reply_to
        top = response.top_via  # the transaction was forgotten: route by Via (stateless)
        return endpoint_of_via(top) if top is not None else None

    def _learn_challenge(self, response: Response) -> None:
        """Remember the PBX's challenges: the unknown accounts' answers copy them."""
        if response.status in (401, 407):
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            value = response.headers.get(header.lower())
            if value is not None:
                self._challenges.learn(header, response.reason, value)

    def _uniform_auth(
        self, response: Response, transaction: Transaction, method: str, now: float
    ) -> None:
        """A 404 for an unknown account looks like the answer a known one gets, so
        the PBX cannot be used to enumerate extensions (svwar's oracle)."""
        if response.status != 404 or method not in _ENUMERABLE:
            return
        if transaction.had_credentials:
            response.status, response.reason = 403, "Forbidden"
            return
        register = method == "REGISTER"
        header = "WWW-Authenticate" if register else "Proxy-Authenticate"
        seed = f"{response.call_id}|{response.headers.get('cseq')}|{now}"
        reason, value = self._challenges.challenge(header, seed)
        response.status, response.reason = (401 if register else 407), reason
        # Before Content-Length, where a PBX writes it (to_bytes appends that again).
        response.headers.remove("Content-Length")
        response.headers.add(header, value)

    # ---------------------------------------------------------------- PBX → outside

    def _request_from_inside(
        self, request: Request, data: bytes, source: Endpoint, now: float
    ) -> list[Send]:
        router = self.router
        method = request.method
        branch = router.branch(request, Side.OUTSIDE)
        known = self.transactions.get(branch, method)
        if known is not None and known.last_response is not None:
            return [Send(known.reply_to, known.last_response)]
        router.pop_route(request, Side.INSIDE)
        target, _ = router.resolve_alias(request, Side.INSIDE)
        if target is None:
            target = literal_endpoint(request)
        if target is None:
            return [self._reply(request, 404, source, reason="Not Found (no route outside)")]
        upstream = self.upstreams.index_of(source)
        hidden = tuple(request.headers.values("via"))
        request.headers.replace_all("Via", [])
        _decrement_max_forwards(request)
        self._hide_outward(request, upstream, dialog_creating=method in _DIALOG_CREATING)
        router.push_via(request, Side.OUTSIDE, branch, hidden)
        if method != "ACK":
            entry = Transaction(source, upstream, offered=_has_sdp(request))
            self.transactions.put(branch, method, entry, now)
        self._inspect(request, data, (source, target), Direction.OUTBOUND, now)
        self.counters.forwarded += 1
        return [Send(target, request.to_bytes(), self._media_step(request, Side.OUTSIDE))]

    def _media_step(
        self, message: Message, toward: Side, transaction: Transaction | None = None
    ) -> MediaStep | None:
        if not self.settings.anchor_media:
            return None
        late = transaction is not None and not transaction.offered
        return media_step(message, toward, late_offer=late)

    def _hide_outward(self, message: Message, upstream: int, *, dialog_creating: bool) -> None:
        """Replace everything that would reveal the PBX (see :mod:`.routing`, :mod:`.hiding`)."""
        router = self.router
        if dialog_creating and "record-route" not in message.headers:
            message.headers.add("Record-Route", router.inside_record_route())
        router.fold_record_route(message, upstream)
        router.alias_contacts(message, Side.OUTSIDE, phone=None, upstream=upstream)
        self._strip_out.apply(message)
        replace_identity(message, self.settings.identity)
        hide_sdp(
            message, address=self.settings.outside.host, session_name=self.settings.sdp_session_name
        )

    def _response_from_outside(
        self, response: Response, data: bytes, source: Endpoint, now: float
    ) -> list[Send]:
        # Inspected as it arrived: the engine saw the request with our Via on top.
        verdict = self._inspect(
            response, data, (source, self.settings.outside), Direction.INBOUND, now
        )
        if verdict.action is Action.DROP:
            return []
        via = self.router.pop_our_via(response, Side.OUTSIDE)
        if via is None:
            return []
        hidden = self.router.hidden_vias(via)
        if not hidden:
            return []  # not a response to a request of the PBX's: nowhere to send it
        response.headers.replace_all("Via", hidden)
        destination = endpoint_of_via(response.via[0], self.settings.inside.transport)
        if destination is None:
            return []
        self._strip_in.apply(response)
        self.router.unfold_record_route(response)
        upstream = self.upstreams.index_of(destination)
        self.router.alias_contacts(response, Side.INSIDE, phone=source, upstream=upstream)
        self.counters.forwarded += 1
        media = (
            self._media_step(response, Side.INSIDE, self._transaction_of(response, via))
            if self.settings.anchor_media
            else None
        )
        return [Send(destination, response.to_bytes(), media)]


def media_step(message: Message, toward: Side, *, late_offer: bool = False) -> MediaStep | None:
    """What rtpengine must do for ``message``; a call that ends or fails is deleted.

    Early offer (RFC 3264): the INVITE/UPDATE carries the offer, the 18x/2xx the
    answer. Late offer (an INVITE without SDP, ``late_offer``): the 2xx carries
    the callee's offer and the ACK the answer, so the roles of the tags swap:
    rtpengine names the offerer by ``from_tag``.
    """
    from_ = message.from_
    to = message.to
    call_id = message.call_id
    if from_ is None or from_.tag is None or call_id is None:
        return None
    caller, callee = from_.tag, (to.tag if to is not None else None)
    if isinstance(message, Request):
        if message.method in ("BYE", "CANCEL"):
            return MediaStep("delete", call_id, caller, callee, toward)
        if message.method in ("INVITE", "UPDATE") and _has_sdp(message):
            return MediaStep("offer", call_id, caller, callee, toward)
        if message.method == "ACK" and _has_sdp(message) and callee is not None:
            return MediaStep("answer", call_id, callee, caller, toward)  # late offer's answer
        return None
    if not isinstance(message, Response):
        return None
    cseq = message.cseq
    method = cseq.method if cseq is not None else ""
    if method == "INVITE" and message.status >= 300:  # the call failed
        return MediaStep("delete", call_id, caller, callee, toward)
    if method not in ("INVITE", "UPDATE") or not 100 < message.status < 300:
        return None
    if not _has_sdp(message):
        return None
    if late_offer and callee is not None:
        return MediaStep("offer", call_id, callee, caller, toward)
    return MediaStep("answer", call_id, caller, callee, toward)


def _has_sdp(message: Message) -> bool:
    content_type = message.headers.get("content-type") or ""
    return bool(message.body) and content_type.lower().startswith("application/sdp")


def _decrement_max_forwards(request: Request) -> None:
    hops = request.max_forwards
    request.headers.set("Max-Forwards", str(70 if hops is None else max(0, hops - 1)))


def _has_to_tag(request: Request) -> bool:
    to = request.to
    return to is not None and to.tag is not None


def _reason_of(error: RemoteProtocolError) -> str:
    # The reason phrase names the rule broken, without echoing attacker bytes;
    # it starts with the status's own phrase (RFC 4475 badvers: 505 is "Version
    # Not Supported", RFC 3261 21.5.26, not "Bad Request").
    phrase = REASON_PHRASES.get(error.status_hint, "Bad Request")
    return f"{phrase} ({error.rule})"[:120]
