"""Via, Contact, Record-Route and Route as a topology-hiding proxy rewrites them.

The gateway is a record-routing proxy with two faces: its *inside* address
(what the PBX sees) and its *outside* address (what the Internet sees).

* **Via** (RFC 3261 16.6 step 8, 16.7 step 3): the gateway adds its own Via
  with a branch derived from the previous hop's branch by a keyed hash, so a
  CANCEL or a non-2xx ACK gets the same branch as its INVITE (16.11) and a
  retransmission maps to the same transaction. It stamps ``received`` and
  ``rport`` on the client's Via (RFC 3261 18.2.1, RFC 3581), so responses go
  back to where the request came from, through any NAT.
* **Contact**: every Contact crossing the gateway becomes an alias at the
  gateway's face on the far side, with the real Contact (and for a phone,
  the address its packets came from) sealed in a ``swc`` parameter. The PBX
  thus never reaches a phone's private address, and the Internet never sees
  the PBX's address; a request to an alias is routed from the token alone.
* **Record-Route / Route**: towards the PBX the gateway record-routes with its
  inside address (``swr=in``); towards the outside, the whole PBX-side route
  set is folded into one Record-Route of the gateway's outside address, the
  hidden entries sealed in its ``swr`` parameter. A Route naming that entry is
  unfolded again on the way in, so in-dialog requests keep working across a
  restart of the gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.fields import Via
from sipwarden.sip.message import Message, Request
from sipwarden.sip.uri import SipUri, parse_name_addr, parse_uri

from .model import Endpoint, Side
from .tokens import TokenSigner

__all__ = ["BRANCH_PREFIX", "Router", "endpoint_of_via", "literal_endpoint"]

BRANCH_PREFIX: Final = "z9hG4bKsw"  # RFC 3261 magic cookie + ours
CONTACT_PARAM: Final = "swc"
ROUTE_PARAM: Final = "swr"
_INSIDE_MARK: Final = "in"
# Contact tokens: the purpose says which face wrote them, so an alias made for
# the PBX (of a phone) is never accepted from the outside, and the reverse.
_PHONE: Final = "contact:phone"  # a phone's Contact, written for the PBX
_PBX: Final = "contact:pbx"  # the PBX's Contact, written for the outside
_ROUTE: Final = "route"
_VIAS: Final = "vias"
VIA_PARAM: Final = "swv"


def endpoint_of_via(via: Via, transport: str | None = None) -> Endpoint | None:
    """Where a response to this Via goes (RFC 3261 18.2.2, RFC 3581 4); None when the
    Via names no IP literal (the gateway never resolves a name a peer wrote)."""
    host = (via.received or via.host).strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    rport = via.rport
    port = int(rport) if rport and rport.isdigit() and 0 < int(rport) < 65536 else via.port
    return Endpoint((transport or via.transport).lower(), host, port or 5060)


def literal_endpoint(request: Request) -> Endpoint | None:
    """The destination a Request-URI names by IP literal (a PBX sending to a trunk or a
    phone by address); None for a name, which the gateway does not resolve."""
    try:
        uri = request.request_uri
    except RemoteProtocolError:
        return None
    if not isinstance(uri, SipUri):
        return None
    host = uri.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    return Endpoint(transport, host, uri.port or (5061 if transport == "tls" else 5060))


class Router:
    """The Via, Contact and route rewrites of one gateway (its two faces, its key)."""

    def __init__(self, *, inside: Endpoint, outside: Endpoint, signer: TokenSigner) -> None:
        self.inside = inside
        self.outside = outside
        self.signer = signer
        # Written into (or compared with) nearly every message: formatted once.
        self._hostport = {Side.INSIDE: inside.hostport, Side.OUTSIDE: outside.hostport}
        self._faces = frozenset(self._hostport.values())
        self._via_prefix = {
            side: f"SIP/2.0/{face.via_transport} {face.hostport};branch="
            for side, face in ((Side.INSIDE, inside), (Side.OUTSIDE, outside))
        }
        self._face_texts = {face: self._face_text(face) for face in (inside, outside)}

    def face(self, toward: Side) -> Endpoint:
        return self.inside if toward is Side.INSIDE else self.outside

    # ---------------------------------------------------------------- Via

    def branch(self, message: Message, toward: Side) -> str:
        """Our branch for the message's transaction: stable for its retransmissions,
        its CANCEL and its non-2xx ACK (all share the previous hop's branch)."""
        top = message.top_via
        previous = top.branch if top is not None and top.branch else ""
        if previous.startswith("z9hG4bK") and len(previous) > len("z9hG4bK") and top is not None:
            # RFC 3261 17.2.3: the transaction is the branch *and* the sent-by of
            # the top Via; two clients may pick the same branch (the RFC 4475
            # messages do), and must not share a transaction here nor at the PBX.
            previous = f"{top.sent_by}|{previous}"
        else:
            # An RFC 2543 peer, or a branch that is the bare magic cookie (RFC 4475
            # 3.2.1 badbranch: no transaction identifier, fall back to RFC 2543
            # matching): the transaction is named by these fields (17.2.3, 16.11).
            cseq = message.cseq
            previous = "|".join(
                (
                    message.call_id or "",
                    str(cseq.seq) if cseq else "",
                    message.headers.get("from") or "",
                    top.raw if top is not None else "",
                )
            )
        return BRANCH_PREFIX + self.signer.digest(toward.value, previous)

    def push_via(
        self, message: Message, toward: Side, branch: str, hidden: Sequence[str] = ()
    ) -> None:
        """Add our Via. ``hidden`` are the Vias it replaces (a PBX request going out):
        sealed in a ``swv`` parameter, which the response echoes (RFC 3261 8.2.6.2),
        so any worker, even after a restart, can put them back."""
        value = f"{self._via_prefix[toward]}{branch};rport"
        if hidden:
            value += f";{VIA_PARAM}={self.signer.seal(_VIAS, hidden)}"
        if "via" in message.headers:
            message.headers.insert_before("Via", value)  # topmost Via
        else:
            message.headers.add("Via", value, first=True)  # all hidden: the first header

    def stamp_received(self, message: Message, source: Endpoint) -> None:
        """Add received (when the host differs) and fill rport on the top Via."""
        vias = message.headers.values("via")
        if not vias:
            return
        top = message.via[0]  # the typed view, parsed once per message
        params = [
            (name, value) for name, value in top.params if name.lower() not in ("received", "rport")
        ]
        if top.host.strip("[]") != source.host:
            params.append(("received", source.host))
        if top.rport is not None:
            params.append(("rport", str(source.port)))
        text = f"{top.protocol}/{top.version}/{top.transport} {top.sent_by}"
        text += "".join(
            f";{name}" if value is None else f";{name}={value}" for name, value in params
        )
        message.headers.replace_all("Via", [text, *vias[1:]])

    def pop_our_via(self, message: Message, toward: Side) -> Via | None:
        """Remove our Via from a response; None (and nothing removed) if the top is not ours."""
        vias = message.headers.values("via")
        if not vias:
            return None
        try:
            top = message.via[0]  # the typed view, parsed once per message
        except RemoteProtocolError:
            return None
        branch = top.branch or ""
        if not branch.startswith(BRANCH_PREFIX) or top.sent_by != self._hostport[toward]:
            return None
        remaining = message.via[1:]
        message.headers.replace_all("Via", vias[1:])
        message.headers.seed("via", remaining)  # the same fields: no second parse
        return top

    def wrote(self, via: Via) -> bool:
        """Whether ``via`` is one of ours, at either face (a loop, RFC 3261 16.3 step 4)."""
        return (via.branch or "").startswith(BRANCH_PREFIX) and via.sent_by in self._faces

    def hidden_vias(self, via: Via) -> tuple[str, ...] | None:
        """The Vias our Via replaced (see :meth:`push_via`), or None."""
        token = via.param(VIA_PARAM)
        return self.signer.open(_VIAS, token) if token else None

    # ---------------------------------------------------------------- Contact

    def alias_contacts(
        self, message: Message, toward: Side, *, phone: Endpoint | None, upstream: int
    ) -> None:
        """Replace each Contact by an alias at our face ``toward`` (see the module doc)."""
        if message.contact_is_star:
            return
        values = message.headers.values("contact")
        if not values:
            return
        face = self.face(toward)
        purpose = _PHONE if toward is Side.INSIDE else _PBX
        where = "" if phone is None else f"{phone.transport}|{phone.host}|{phone.port}"
        aliased = [self._alias(value, face, purpose, where, upstream) for value in values]
        message.headers.replace_all("Contact", aliased)

    def _alias(self, value: str, face: Endpoint, purpose: str, where: str, upstream: int) -> str:
        try:
            contact = parse_name_addr(value, strict=False)  # memoised: a dialog repeats it
        except RemoteProtocolError:
            return value  # not a name-addr we can rewrite: the validator decides about it
        uri = contact.uri
        user = uri.user if isinstance(uri, SipUri) else None
        token = self.signer.seal(purpose, (str(uri), where, str(upstream)))
        # Written out, not built with SipUri (which re-parses what it builds): every
        # part is either ours or the user part as the sender wrote it. The display
        # name is left out: routing needs none, and a PBX's may name its product.
        userpart = f"{user}@" if user else ""
        params = "".join(
            f";{name}" if param is None else f";{name}={param}" for name, param in contact.params
        )
        return f"<sip:{userpart}{self._face_texts[face]};{CONTACT_PARAM}={token}>{params}"

    @staticmethod
    def _face_text(face: Endpoint) -> str:
        transport = "" if face.transport == "udp" else f";transport={face.transport}"
        return f"{face.hostport}{transport}"

    def resolve_alias(self, request: Request, arriving_from: Side) -> tuple[Endpoint | None, int]:
        """Undo an alias in the Request-URI; returns (the phone's address, the upstream index).

        A request from the inside to a phone's alias goes to the phone's address
        (NAT traversal); a request from the outside to the PBX's alias goes to the
        PBX's real Contact. ``(None, -1)`` when the Request-URI is no alias of ours.
        """
        purpose = _PHONE if arriving_from is Side.INSIDE else _PBX
        try:
            uri = request.request_uri
        except RemoteProtocolError:
            return None, -1
        if not isinstance(uri, SipUri):
            return None, -1
        token = uri.param(CONTACT_PARAM)
        fields = self.signer.open(purpose, token) if token else None
        if fields is None or len(fields) != 3:
            return None, -1
        original, where, upstream = fields
        request.uri = original
        target = None
        if where:
            transport, host, port = where.split("|")
            target = Endpoint(transport, host, int(port))
        return target, int(upstream)

    # ---------------------------------------------------------------- routes

    def inside_record_route(self) -> str:
        return f"<sip:{self._face_texts[self.inside]};lr;{ROUTE_PARAM}={_INSIDE_MARK}>"

    def _is_inside_entry(self, value: str) -> bool:
        uri = _uri_of(value)
        return (
            uri is not None
            and uri.param(ROUTE_PARAM) == _INSIDE_MARK
            and _hostport(uri) == self._hostport[Side.INSIDE]
        )

    def _outside_entry(self, value: str) -> tuple[str, ...] | None:
        uri = _uri_of(value)
        if uri is None or _hostport(uri) != self._hostport[Side.OUTSIDE]:
            return None
        token = uri.param(ROUTE_PARAM)
        return self.signer.open(_ROUTE, token) if token else None

    def fold_record_route(self, message: Message, upstream: int) -> None:
        """Going out: the PBX-side route set becomes one Record-Route of ours."""
        values = message.headers.values("record-route")
        if not values:
            return
        hidden = [value for value in values if not self._is_inside_entry(value)]
        token = self.signer.seal(_ROUTE, (str(upstream), *hidden))
        entry = f"<sip:{self._face_texts[self.outside]};lr;{ROUTE_PARAM}={token}>"
        message.headers.replace_all("Record-Route", [entry])

    def unfold_record_route(self, message: Message) -> None:
        """Coming in (a response echoing our folded entry): the inside route set again."""
        values = message.headers.values("record-route")
        unfolded: list[str] = []
        changed = False
        for value in values:
            fields = self._outside_entry(value)
            if fields is None:
                unfolded.append(value)
            else:
                unfolded += [self.inside_record_route(), *fields[1:]]
                changed = True
        if changed:
            message.headers.replace_all("Record-Route", unfolded)

    def pop_route(self, request: Request, arriving_from: Side) -> int:
        """Remove our own top Route entry; unfold the hidden ones. Returns the upstream index
        the entry named (-1 when none).

        From the outside, only the route set sealed in our entry is kept: any other
        Route an outsider wrote (a preloaded route, RFC 3261 8.1.2) is removed, so
        nobody can use the PBX to relay a request to a host of their choosing.
        """
        routes = request.headers.values("route")
        if not routes:
            return -1
        if arriving_from is Side.INSIDE:
            if self._is_inside_entry(routes[0]):
                request.headers.replace_all("Route", routes[1:])
            return -1
        fields = self._outside_entry(routes[0])
        request.headers.replace_all("Route", list(fields[1:]) if fields is not None else [])
        if fields is None:
            return -1
        return int(fields[0]) if fields[0].lstrip("-").isdigit() else -1


def _uri_of(value: str) -> SipUri | None:
    try:
        uri = parse_name_addr(value, strict=False).uri
    except RemoteProtocolError:
        try:
            uri = parse_uri(value.strip("<> "), strict=False)
        except RemoteProtocolError:
            return None
    return uri if isinstance(uri, SipUri) else None


def _hostport(uri: SipUri) -> str:
    return f"{uri.host}:{uri.port or 5060}"
