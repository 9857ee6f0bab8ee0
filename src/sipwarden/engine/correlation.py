"""Pairing responses with the requests they answer, and remembering who proved return routability.

A response alone does not say who asked or for which account; the request
it answers does. The :class:`Correlator` remembers each request's essentials
(bounded, with expiry) under the key RFC 3261 17.1.3 uses to match responses
(top Via branch, CSeq number and method, Call-ID), so detectors that judge
answers (404 versus 401 for enumeration, 401 after credentials for cracking)
know the source and account they belong to.
"""

from __future__ import annotations

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.digest import DigestCredentials
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.uri import SipUri, TelUri, Uri

from .contract import Observation
from .state import BoundedTable

__all__ = [
    "Correlator",
    "RequestRecord",
    "account_of",
    "carries_credentials",
    "credentials_of",
    "user_of",
]

# Requests are answered within Timer B/F (32 s); a minute covers retransmissions.
REQUEST_TTL = 64.0
# A pending request costs ~0.8 KiB (record, key strings, table node): 65536 of
# them ~50 MiB, within the engine's 200 MB flood budget (tests/engine/
# test_memory.py), and room for ~1000 requests/s answered within 64 s.
MAX_PENDING_REQUESTS = 65_536


def user_of(uri: Uri | None) -> str | None:
    """The user part of a SIP URI (the extension), or a tel number."""
    if isinstance(uri, SipUri):
        return uri.user
    if isinstance(uri, TelUri):
        return uri.number
    return None


def account_of(message: Message) -> str | None:
    """The account a request is about.

    Credentials name it best (``Authorization: Digest username=``); else a
    REGISTER is about its To user (the address of record) and any other
    request about its From user (the caller). Never raises.
    """
    try:
        for credentials in credentials_of(message):
            if credentials.username:
                return credentials.username
        address = (
            message.to
            if isinstance(message, Request) and message.method == "REGISTER"
            else message.from_
        )
        return user_of(address.uri) if address is not None else None
    except RemoteProtocolError:  # attacker bytes: a broken header means "no account"
        return None


def carries_credentials(message: Message) -> bool:
    """Whether the message has an Authorization or Proxy-Authorization field (parses nothing)."""
    # One copy of the field names and two C-level searches: cheaper than two
    # ``in headers`` tests, each a Python call that canonicalises the name.
    keys = message.headers.keys()
    return "authorization" in keys or "proxy-authorization" in keys


def credentials_of(message: Message) -> tuple[DigestCredentials, ...]:
    """The message's Digest credentials, Authorization before Proxy-Authorization.

    Raises :class:`RemoteProtocolError` for credentials against the grammar.
    """
    # Most messages carry none: looking for the fields costs less than
    # parsing two views of nothing.
    if not carries_credentials(message):
        return ()
    return (*message.authorization, *message.proxy_authorization)


class RequestRecord:
    """What the engine remembers of a request until its final response."""

    __slots__ = (
        "account",
        "credentials_nonce",
        "has_credentials",
        "method",
        "sport",
        "src",
        "target",
        "transport",
        "ts",
    )

    def __init__(
        self,
        *,
        ts: float,
        src: str,
        sport: int,
        transport: str,
        method: str,
        account: str | None,
        target: str | None,
        has_credentials: bool,
        credentials_nonce: str | None,
    ) -> None:
        self.ts = ts
        self.src = src
        self.sport = sport
        self.transport = transport
        self.method = method
        self.account = account
        self.target = target  # the Request-URI / To user: the extension probed
        self.has_credentials = has_credentials
        self.credentials_nonce = credentials_nonce


def _key(message: Message) -> tuple[str, int, str, str] | None:
    try:
        cseq = message.cseq
        via = message.top_via
        call_id = message.call_id
    except RemoteProtocolError:  # malformed headers cannot be correlated
        return None
    if cseq is None or call_id is None:
        return None
    return (call_id, cseq.seq, cseq.method, (via.branch or "") if via is not None else "")


class Correlator:
    """Bounded request memory, looked up by the responses."""

    __slots__ = ("_pending", "_returnable")

    def __init__(
        self, *, max_requests: int = MAX_PENDING_REQUESTS, ttl: float = REQUEST_TTL
    ) -> None:
        self._pending: BoundedTable[tuple[str, int, str, str], RequestRecord] = BoundedTable(
            max_entries=max_requests, ttl=ttl
        )
        # Sources that proved they receive what is sent to them (DESIGN: bans
        # need evidence of return routability).
        self._returnable: BoundedTable[str, float] = BoundedTable(
            max_entries=max_requests, ttl=3600.0
        )

    def remember(self, obs: Observation, request: Request) -> RequestRecord | None:
        key = _key(request)
        if key is None:
            return None
        credentials = _credentials(request)
        record = RequestRecord(
            ts=obs.ts,
            src=obs.src,
            sport=obs.sport,
            transport=obs.transport,
            method=request.method,
            account=account_of(request),
            target=_target_of(request),
            has_credentials=credentials is not None,
            credentials_nonce=credentials,
        )
        self._pending.put(key, record, obs.ts)
        if credentials is not None or obs.transport in ("tcp", "tls", "ws", "wss"):
            # Credentials carry a nonce only a receiver of our challenge knows;
            # a stream transport needed a completed handshake.
            self._returnable.put(obs.src, obs.ts, obs.ts)
        return record

    def answer(self, response: Response) -> RequestRecord | None:
        """The request this response answers (kept until a final response)."""
        key = _key(response)
        if key is None:
            return None
        if response.status >= 200:
            return self._pending.pop(key)
        return self._pending.get(key)

    def is_returnable(self, source: str) -> bool:
        return source in self._returnable

    def expire(self, now: float) -> None:
        self._pending.expire(now)
        self._returnable.expire(now)

    def __len__(self) -> int:
        return len(self._pending)


def _credentials(request: Request) -> str | None:
    """The nonce of the request's Digest credentials ("" when it has none in them)."""
    try:
        for credentials in credentials_of(request):
            return credentials.nonce or ""
    except RemoteProtocolError:  # a malformed Authorization is still an attempt
        return "" if request.headers.get("authorization") else None
    return None


def _target_of(request: Request) -> str | None:
    try:
        if request.method == "REGISTER" and request.to is not None:
            return user_of(request.to.uri)
        return user_of(request.request_uri)
    except RemoteProtocolError:  # attacker bytes
        return None
