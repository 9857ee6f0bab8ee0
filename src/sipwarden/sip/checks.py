"""Request validation a proxy performs before forwarding (RFC 3261 16.3).

Pure functions: a request in, a :class:`Rejection` (the response to send) or
``None`` out. The gateway runs them after the strict parse; the RFC 4475
application-layer messages (section 3.3) are their conformance tests.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from sipwarden.errors import RemoteProtocolError

from .message import Request
from .replies import REASON_PHRASES
from .uri import AbsoluteUri

__all__ = [
    "DEFAULT_URI_SCHEMES",
    "MANDATORY_REQUEST_HEADERS",
    "MANDATORY_RULE",
    "SINGLE_INSTANCE_HEADERS",
    "SINGLE_INSTANCE_RULE",
    "Rejection",
    "check_proxy_request",
    "header_set_problems",
]

# RFC 3261 8.1.1: the header fields every request carries. Max-Forwards is
# left out on purpose: a proxy adds it when missing (16.6 step 3), so its
# absence is no reason to reject (RFC 2543 peers, RFC 4475 inv2543).
MANDATORY_REQUEST_HEADERS = ("to", "from", "cseq", "call-id", "via")

# Header fields whose grammar allows one instance only (RFC 3261 7.3.1):
# two of them leave the message's meaning undecidable (RFC 4475 multi01, mcl01).
SINGLE_INSTANCE_HEADERS = (
    "to",
    "from",
    "cseq",
    "call-id",
    "max-forwards",
    "content-length",
    "content-type",
    "expires",
)

DEFAULT_URI_SCHEMES: frozenset[str] = frozenset({"sip", "sips", "tel"})

_MANDATORY: Final = frozenset(MANDATORY_REQUEST_HEADERS)
_SINGLE_INSTANCE: Final = frozenset(SINGLE_INSTANCE_HEADERS)
MANDATORY_RULE: Final = "RFC 3261 8.1.1 mandatory header fields"
SINGLE_INSTANCE_RULE: Final = "RFC 3261 7.3.1 single-instance header fields"


def header_set_problems(keys: list[str]) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """The mandatory fields ``keys`` lacks, and the single-instance ones it repeats with
    their counts, each in table order.

    Set operations and C-level counting first: the gateway and the malformed
    detector ask this of every message, and nearly all have every mandatory
    field and repeat none that is single.
    """
    present = set(keys)
    missing = (
        ()
        if present >= _MANDATORY
        else tuple(key for key in MANDATORY_REQUEST_HEADERS if key not in present)
    )
    if len(present) == len(keys):  # no key twice at all
        return missing, ()
    if sum(map(_SINGLE_INSTANCE.__contains__, keys)) == len(_SINGLE_INSTANCE & present):
        return missing, ()
    repeated = tuple(
        (key, count) for key in SINGLE_INSTANCE_HEADERS if (count := keys.count(key)) > 1
    )
    return missing, repeated


_CANONICAL_NAMES = {
    "to": "To",
    "from": "From",
    "cseq": "CSeq",
    "call-id": "Call-ID",
    "via": "Via",
    "max-forwards": "Max-Forwards",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "expires": "Expires",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """The response a proxy sends instead of forwarding, and why."""

    status: int
    reason: str
    rule: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


def check_proxy_request(
    request: Request,
    *,
    uri_schemes: Collection[str] = DEFAULT_URI_SCHEMES,
    proxy_extensions: Collection[str] = (),
) -> Rejection | None:
    """Run the RFC 3261 16.3 request validation steps a proxy applies.

    1. reasonable syntax: the full grammar check, the mandatory header fields,
       one instance of each single-instance field;
    2. URI scheme: 416 for a scheme the proxy cannot route;
    3. Max-Forwards: 483 when it is zero (the proxy must not forward);
    4. loop detection is the gateway's (it knows its own addresses);
    5. Proxy-Require: 420 listing every option tag the proxy does not support.
    """
    return (
        _check_syntax(request)
        or _check_uri_scheme(request, uri_schemes)
        or _check_max_forwards(request)
        or _check_proxy_require(request, proxy_extensions)
    )


def _check_syntax(request: Request) -> Rejection | None:
    try:
        request.validate()
    except RemoteProtocolError as error:
        if error.header == "Request-URI" and _is_foreign_scheme(request):
            return None  # an opaque URI of another scheme: step 2 answers it
        return Rejection(
            status=error.status_hint,
            reason=REASON_PHRASES.get(error.status_hint, "Bad Request"),
            rule=error.rule,
            detail=str(error),
        )
    missing, repeated = header_set_problems(request.headers.keys())
    if missing:
        name = _CANONICAL_NAMES[missing[0]]
        return Rejection(
            status=400,
            reason=f"Missing {name}",
            rule=MANDATORY_RULE,
            detail=f"the request has no {name} header field",
        )
    if repeated:
        name = _CANONICAL_NAMES[repeated[0][0]]
        return Rejection(
            status=400,
            reason=f"Multiple {name}",
            rule=SINGLE_INSTANCE_RULE,
            detail=f"the request has more than one {name} header field",
        )
    return None


def _is_foreign_scheme(request: Request) -> bool:
    scheme = request.uri.partition(":")[0].lower()
    # Only a real scheme (RFC 3986 3.1) is another scheme: "<sip" of a Request-URI
    # in angle brackets (RFC 4475 3.1.2.11 ltgtruri) is broken syntax, a 400, not 416.
    return _SCHEME.fullmatch(scheme) is not None and scheme not in ("sip", "sips", "tel")


_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")


def _check_uri_scheme(request: Request, uri_schemes: Collection[str]) -> Rejection | None:
    scheme = request.uri.partition(":")[0].lower()
    if scheme in uri_schemes and not isinstance(request.request_uri, AbsoluteUri):
        return None
    return Rejection(
        status=416,
        reason="Unsupported URI Scheme",
        rule="RFC 3261 16.3 step 2 URI scheme",
        detail=f"cannot route Request-URI scheme {scheme[:32]!r}",
    )


def _check_max_forwards(request: Request) -> Rejection | None:
    if request.max_forwards == 0:
        return Rejection(
            status=483,
            reason="Too Many Hops",
            rule="RFC 3261 16.3 step 3 Max-Forwards",
            detail="Max-Forwards is 0: the request must not be forwarded",
        )
    return None


def _check_proxy_require(request: Request, proxy_extensions: Collection[str]) -> Rejection | None:
    unsupported = [tag for tag in request.proxy_require if tag not in proxy_extensions]
    if not unsupported:
        return None
    return Rejection(
        status=420,
        reason="Bad Extension",
        rule="RFC 3261 16.3 step 5 Proxy-Require",
        detail=f"unsupported proxy extensions: {', '.join(unsupported)}",
        headers=(("Unsupported", ", ".join(unsupported)),),
    )
