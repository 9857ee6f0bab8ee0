"""Building the response a UAS or a proxy sends to a request (RFC 3261 8.2.6).

A response copies the request's Via fields (all of them, in order), From,
Call-ID and CSeq, and its To with a tag added when the response is not 100
and the To had none (8.2.6.2). The tag comes from the caller: this module is
sans-IO and draws no randomness of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .headers import Headers
from .message import Request, Response

__all__ = ["REASON_PHRASES", "make_response"]

# RFC 3261 21 and the extensions a gateway answers with.
REASON_PHRASES: Final = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}

# Copied from the request unchanged, in this order (RFC 3261 8.2.6.2).
_COPIED: Final = ("via", "from", "call-id", "cseq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """The response with ``status`` to ``request``, with ``headers`` appended.

    ``to_tag`` is added to the To field when the status is above 100 and the
    request's To carries no tag yet.
    """
    source = request.headers
    fields = Headers()
    for key in _COPIED[:2]:
        for value in source.get_all(key):
            fields.add(_NAMES[key], value)
    to = source.get("to")
    if to is not None:
        if status > 100 and to_tag and not _has_tag(to):  # 8.2.6.2
            to = f"{to};tag={to_tag}"
        fields.add("To", to)
    for key in _COPIED[2:]:
        single = source.get(key)
        if single is not None:
            fields.add(_NAMES[key], single)
    for name, value in headers:
        fields.add(name, value)
    fields.add("Content-Length", "0")
    return Response(status, reason or REASON_PHRASES.get(status, "Unknown"), headers=fields)


_NAMES: Final = {"via": "Via", "from": "From", "call-id": "Call-ID", "cseq": "CSeq"}


def _has_tag(to: str) -> bool:
    # The tag is a parameter of the name-addr, after any <...> URI (whose own
    # parameters could spell "tag=" too).
    tail = to[to.rfind(">") + 1 :] if ">" in to else to
    return any(part.strip().lower().startswith("tag=") for part in tail.split(";")[1:])
