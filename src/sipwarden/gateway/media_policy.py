"""SRTP policy: refuse a call whose session description offers no SRTP.

With ``gateway.media.require_srtp``, an INVITE (initial or re-INVITE) or an
UPDATE from outside whose SDP offers plain RTP is answered by the gateway
itself with 488 Not Acceptable Here (RFC 3261 21.4.26) and a ``Warning: 399``
that says why; it never reaches the PBX. SRTP counts as offered when every
active RTP stream is either

* ``RTP/SAVP``/``RTP/SAVPF`` with a usable ``a=crypto`` (SDES, RFC 4568), or
* DTLS-SRTP: ``UDP/TLS/RTP/SAVP[F]`` with ``a=fingerprint`` (RFC 5763 5,
  RFC 5764 8), the fingerprint being what authenticates the DTLS peer.

(:meth:`~sipwarden.sip.sdp.SessionDescription.offers_srtp` decides; one plain
stream next to an SRTP one is refused, since its media would go in clear.)

The policy fails closed: a body the gateway cannot read as SDP although the
PBX might (malformed SDP, a broken Content-Type, an encoded body, a multipart
body it cannot split) is refused too, or a peer could slip plain RTP past the
check by wrapping it. The 488 carries no body: RFC 3261 21.4.26 allows an SDP
of what *would* be acceptable, but that would describe the PBX's media (the
topology the gateway hides), and the Warning says enough.

Late offers: an INVITE without SDP asks the PBX to offer in its 2xx (and the
caller answers in the ACK, RFC 3261 13.2.1, RFC 3264 4). There is nothing to
refuse in the request, so it passes; the gateway checks that side with
:func:`answer_offers_srtp` on the 2xx (and on the ACK) instead.
"""

from __future__ import annotations

import re
from typing import Final

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.replies import make_response
from sipwarden.sip.sdp import SessionDescription, parse_sdp
from sipwarden.sip.uri import unquote

__all__ = [
    "DEFAULT_WARN_AGENT",
    "SRTP_CHECKED_METHODS",
    "answer_offers_srtp",
    "srtp_problem",
    "srtp_verdict",
]

#: Requests whose SDP is an offer the UAS can refuse with 488 (RFC 3261 14.1
#: re-INVITE, RFC 3311 5.2 UPDATE). PRACK and ACK carry offers or answers too,
#: but an answer cannot be refused with 488 (RFC 3264 6: the answerer already
#: accepted) and an ACK gets no response at all: the gateway checks those with
#: :func:`answer_offers_srtp` and ends the call itself if need be.
SRTP_CHECKED_METHODS: Final = frozenset({"INVITE", "UPDATE"})

#: The warn-agent of our Warning header (RFC 3261 20.43 allows a pseudonym):
#: neutral by default, so the answer does not name the product or the host.
DEFAULT_WARN_AGENT: Final = "gateway"

# RFC 3261 20.43: 399 "Miscellaneous warning", the text for a human.
_WARN_CODE: Final = 399

# Multipart bodies (RFC 2046 5.1, RFC 5621): bounded work for a hostile body.
_MAX_PARTS: Final = 16
_MAX_DEPTH: Final = 3
# Content-Transfer-Encodings that leave the part's octets as they are.
_PLAIN_ENCODINGS: Final = frozenset({"7bit", "8bit", "binary"})
# What may go into a quoted-string verbatim (RFC 3261 25.1 qdtext, printable
# ASCII subset): everything else in a warn-text is replaced.
_UNSAFE_TEXT: Final = re.compile(r"[^ !#-\[\]-~]")


class _UnreadableBodyError(Exception):
    """The body may hold an offer that the gateway cannot read as SDP."""


# --- the verdict -------------------------------------------------------------------------


def srtp_verdict(
    message: Request,
    *,
    require_srtp: bool,
    to_tag: str | None = None,
    warn_agent: str = DEFAULT_WARN_AGENT,
) -> Response | None:
    """The 488 refusing ``message``, or None to let it pass.

    Only INVITE and UPDATE with a session description are checked, and only
    when ``require_srtp``. ``to_tag`` is the tag for the To field when it has
    none yet (an initial INVITE; RFC 3261 8.2.6.2 wants one on a final
    response, drawn at random by the caller: this module draws no randomness,
    so the gateway's transaction layer can hand the same tag to a
    retransmitted INVITE).
    """
    if not require_srtp or message.method not in SRTP_CHECKED_METHODS:
        return None
    problem = srtp_problem(message)
    if problem is None:
        return None
    text = _UNSAFE_TEXT.sub("?", f"SRTP required: {problem}")
    return make_response(
        message,
        488,
        to_tag=to_tag,
        headers=[("Warning", f'{_WARN_CODE} {warn_agent} "{text}"')],
    )


def srtp_problem(message: Message) -> str | None:
    """Why the SDP in ``message`` does not make the media SRTP, or None.

    None when every session description in the body offers SRTP, and also
    when the body holds no session description at all (a late offer, or a
    body of another type): the caller decides whether an SDP was due. The
    text names only the rule broken and the stream (its number, media type
    and transport), never addresses or keys, so it may go into a Warning.
    """
    try:
        bodies = _sdp_bodies(message)
    except _UnreadableBodyError as error:
        return str(error)
    for body in bodies:
        try:
            sd = parse_sdp(body)
        except RemoteProtocolError as error:
            # The rule names a section of RFC 4566, never the peer's bytes.
            return f"malformed SDP ({error.rule})"
        problem = _stream_problem(sd)
        if problem is not None:
            return problem
    return None


def answer_offers_srtp(message: Message) -> bool:
    """Whether ``message`` carries SDP and that SDP makes every RTP stream SRTP.

    For the side of a late offer: the 2xx (or reliable 1xx) that answers an
    INVITE without SDP carries the PBX's offer, and the ACK (or PRACK) the
    caller's answer. Neither can be refused with 488, so the gateway ends
    such a call itself (CANCEL or BYE) when this is False. A message without
    SDP is False: ask only where RFC 3264 puts an offer or an answer.
    """
    try:
        if not _sdp_bodies(message):
            return False
    except _UnreadableBodyError:
        return False
    return srtp_problem(message) is None


def _stream_problem(sd: SessionDescription) -> str | None:
    """Name the first active RTP stream that is not SRTP, when offers_srtp says no."""
    if sd.offers_srtp():
        return None
    for number, media in enumerate(sd.media, start=1):
        if media.port == 0 or not media.is_rtp or media.is_srtp:
            continue
        stream = f"stream {number} ({media.media} {media.proto})"
        if media.proto.endswith(("/SAVP", "/SAVPF")):
            parts = media.proto.split("/")
            if "TLS" in parts or "DTLS" in parts:
                return f"{stream} has no a=fingerprint (RFC 5763 5)"
            return f"{stream} has no usable a=crypto (RFC 4568)"
        return f"{stream} is plain RTP, not RTP/SAVP with a=crypto or DTLS-SRTP"
    return "no active RTP stream to protect"


# --- finding the SDP in a body -------------------------------------------------------------


def _sdp_bodies(message: Message) -> list[bytes]:
    """The SDP bodies of ``message``: none, its body, or the SDP parts of a multipart body."""
    if not message.body:
        return []
    if len(message.headers.get_all("content-type")) > 1:
        raise _UnreadableBodyError("more than one Content-Type (RFC 3261 20.15)")
    try:
        content_type = message.content_type
    except RemoteProtocolError:
        raise _UnreadableBodyError("malformed Content-Type (RFC 3261 20.15)") from None
    if content_type is None:
        # RFC 3261 20.15: a body MUST come with its Content-Type. A PBX may
        # still sniff it as SDP; we cannot tell, so it is refused.
        raise _UnreadableBodyError("a body without Content-Type (RFC 3261 20.15)")
    encoding = message.headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise _UnreadableBodyError("an encoded body (Content-Encoding) cannot be checked")
    if content_type.mime == "application/sdp":
        return [message.body]
    if content_type.type == "multipart":
        boundary = content_type.param("boundary")  # as written, quotes included
        return _multipart_sdp(message.body, boundary and unquote(boundary), depth=1)
    return []  # another type alone (e.g. application/isup): no SDP offer here


def _multipart_sdp(body: bytes, boundary: str | None, *, depth: int) -> list[bytes]:
    """The application/sdp parts of a multipart body (RFC 2046 5.1.1), nested ones too."""
    if not boundary or depth > _MAX_DEPTH:
        raise _UnreadableBodyError(
            "a multipart body without boundary, or nested too deep (RFC 2046)"
        )
    found: list[bytes] = []
    for headers, content in _split_multipart(body, boundary):
        part_type = headers.get("content-type", "text/plain")  # RFC 2046 5.1 default
        mime, _, params = part_type.partition(";")
        mime = mime.strip().lower()
        transfer = headers.get("content-transfer-encoding", "binary").strip().lower()
        if mime == "application/sdp":
            if transfer not in _PLAIN_ENCODINGS:
                raise _UnreadableBodyError("an encoded SDP part (Content-Transfer-Encoding)")
            found.append(content)
        elif mime.startswith("multipart/"):
            found.extend(_multipart_sdp(content, _boundary_param(params), depth=depth + 1))
    return found


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, content) of each part; header names lower-cased."""
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    # The first delimiter may open the body; later ones follow a CRLF that
    # belongs to the delimiter, not to the part before it (RFC 2046 5.1.1).
    text = b"\r\n" + body
    pieces = text.split(b"\r\n" + delimiter)
    if len(pieces) < 3 or len(pieces) - 2 > _MAX_PARTS:
        raise _UnreadableBodyError("a multipart body that cannot be split (RFC 2046 5.1.1)")
    parts: list[tuple[dict[str, str], bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            return parts  # the close-delimiter; the epilogue after it is ignored
        # The rest of the delimiter line (transport padding), then the headers.
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            break
        parts.append(_split_part(piece[line_end + 2 :]))
    # A PBX may read a truncated body differently: refuse what does not close.
    raise _UnreadableBodyError("a multipart body without its close-delimiter (RFC 2046 5.1.1)")


def _split_part(part: bytes) -> tuple[dict[str, str], bytes]:
    """A part's header fields (RFC 2045 entity headers) and its content."""
    if part.startswith(b"\r\n"):
        return {}, part[2:]  # no header fields: text/plain by default
    head, found, content = part.partition(b"\r\n\r\n")
    if not found:
        raise _UnreadableBodyError("a multipart part without the blank line after its headers")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        # A second Content-Type could be the one the PBX reads: refuse to guess.
        if not colon or key in headers:
            raise _UnreadableBodyError("a multipart part with a malformed or repeated header field")
        headers[key] = value.strip()
    return headers, content


def _boundary_param(params: str) -> str | None:
    """The boundary parameter of a part's Content-Type parameters (quoted or not)."""
    for param in params.split(";"):
        name, equals, value = param.partition("=")
        if equals and name.strip().lower() == "boundary":
            return unquote(value.strip()) or None
    return None
