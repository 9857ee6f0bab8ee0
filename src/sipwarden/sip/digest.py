"""HTTP Digest authentication as SIP uses it (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).

sipwarden reads every ``Authorization`` / ``Proxy-Authorization`` value an
attacker sends (to tell which account a cracking run targets and whether a
guess was right), replays captured challenge/response pairs against password
lists (the cracking audit), and will one day challenge clients itself. So this
module parses, computes, verifies and serialises, and never does I/O.

The grammar, RFC 3261 25.1 as updated by RFC 8760 2.7, with RFC 7616 3.3/3.4::

    challenge      = ("Digest" LWS digest-cln *(COMMA digest-cln)) / other-challenge
    credentials    = ("Digest" LWS digest-response) / other-response
    auth-param     = auth-param-name EQUAL ( token / quoted-string )
    quoted-string  = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
    qdtext         = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
    quoted-pair    = "\\" (%x00-09 / %x0B-0C / %x0E-7F)
    qop-options    = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT
    message-qop    = "qop" EQUAL qop-value
    nc-value       = 8LHEX
    request-digest = LDQUOT *LHEX RDQUOT          ; RFC 8760 2.7 (was 32LHEX)
    digest-uri     = "uri" EQUAL LDQUOT digest-uri-value RDQUOT

Two parsing modes share one scanner. *Strict* (the gateway) raises
:class:`~sipwarden.errors.RemoteProtocolError` naming the rule and the offset
in the input string at the first violation. *Lenient* (the monitor, cracking
detection) never raises: it recovers what it can and lists what was wrong in
``defects`` as stable codes (``"quoted:qop"``, ``"missing:username"``, ...)
that detectors may use as tool fingerprints.

Strings are hashed as UTF-8. The message parser decodes header fields with
``surrogateescape``, so bytes that were not UTF-8 come back as the very bytes
the client hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip.abnf import TOKEN_CHARS

__all__ = [
    "ALGORITHMS",
    "MAX_AUTH_PARAMS",
    "MAX_AUTH_VALUE_LENGTH",
    "AuthHeader",
    "DigestChallenge",
    "DigestCredentials",
    "ResponseTemplate",
    "answer_challenge",
    "build_challenge",
    "build_credentials",
    "canonical_algorithm",
    "compute_response",
    "find_password",
    "ha1",
    "hash_username",
    "parse_auth_header",
    "parse_auth_params",
    "parse_challenge",
    "parse_credentials",
    "verify",
]

# --------------------------------------------------------------------------- limits

# An honest Digest value carries 5-12 parameters; 64 bounds the work an
# attacker can make us do per header while leaving room for extensions.
MAX_AUTH_PARAMS: Final = 64
# Same bound as the message parser's line length: one header value is one line.
MAX_AUTH_VALUE_LENGTH: Final = 8192

# --------------------------------------------------------------------------- algorithms


class _Algorithm(NamedTuple):
    name: str  # canonical spelling (RFC 7616 3.3, RFC 8760 2.1)
    digest: Callable[[bytes], str]  # H(data) as lowercase hex (RFC 8760 2.2)
    hex_length: int
    session: bool  # "-sess": A1 also covers nonce and cnonce (RFC 7616 3.4.2)


def _md5(data: bytes) -> str:
    # MD5 is what SIP deployments use; it is a protocol requirement here, not
    # a security choice of ours, hence usedforsecurity=False (FIPS builds).
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def _has_sha512_256() -> bool:
    # SHA-512/256 comes from OpenSSL; a Python built without it still gets the rest.
    try:
        hashlib.new("sha512_256")
    except ValueError:
        return False
    return True


_ALGORITHM_LIST: list[_Algorithm] = [
    _Algorithm("MD5", _md5, 32, False),
    _Algorithm("MD5-sess", _md5, 32, True),
    _Algorithm("SHA-256", _sha256, 64, False),
    _Algorithm("SHA-256-sess", _sha256, 64, True),
]
if _has_sha512_256():
    _ALGORITHM_LIST += [
        _Algorithm("SHA-512-256", _sha512_256, 64, False),
        _Algorithm("SHA-512-256-sess", _sha512_256, 64, True),
    ]

#: The algorithms this module computes, canonical spelling. Names compare
#: case-insensitively (RFC 7616 3.3: "algorithm ... case-insensitive").
ALGORITHMS: Final[tuple[str, ...]] = tuple(a.name for a in _ALGORITHM_LIST)
_BY_LOWER: Final[dict[str, _Algorithm]] = {a.name.lower(): a for a in _ALGORITHM_LIST}
# RFC 7616 3.3: "If this is not present, it is assumed to be "MD5"."
_DEFAULT_ALGORITHM: Final = _BY_LOWER["md5"]


def canonical_algorithm(name: str | None) -> str | None:
    """The canonical spelling of a supported algorithm name.

    ``None`` (parameter absent) means MD5 (RFC 7616 3.3). Returns ``None`` for
    an algorithm this module cannot compute.
    """
    if name is None:
        return _DEFAULT_ALGORITHM.name
    spec = _BY_LOWER.get(name.lower())
    return spec.name if spec is not None else None


# --------------------------------------------------------------------------- grammar

# SWS = [LWS]; LWS = [*WSP CRLF] 1*WSP (RFC 3261 25.1). A run of several folds is
# accepted too: the message parser unfolds anyway and it changes no meaning.
_SWS: Final = r"(?:[ \t]|\r\n[ \t])*+"
_SWS_RE: Final = re.compile(_SWS)
_ANY_WS_RE: Final = re.compile(r"[ \t\r\n]++")
_SP_HT_RE: Final = re.compile(r"[ \t]+")
_TOKEN_RE: Final = re.compile(f"[{TOKEN_CHARS}]++")
# qdtext minus LWS (handled as its own alternative); lone surrogates are bytes
# that were not UTF-8, which UTF8-NONASCII does not allow.
_QDTEXT: Final = r'[^\x00-\x08\x0a-\x1f\x7f"\\\ud800-\udfff]'
_QUOTED_PAIR: Final = r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]"
_QSTRING_BODY: Final = rf"(?:{_QDTEXT}++|{_QUOTED_PAIR}|\r\n[ \t])*+"
_NAME: Final = f"[{TOKEN_CHARS}]++"
# auth-param = auth-param-name EQUAL ( token / quoted-string ), with and without groups.
_ITEM: Final = rf'({_NAME}){_SWS}={_SWS}(?:"({_QSTRING_BODY})"|({_NAME}))'
_ITEM_NC: Final = rf'{_NAME}{_SWS}={_SWS}(?:"{_QSTRING_BODY}"|{_NAME})'
# Fastest path: one match proves the whole list well formed; finditer then
# splits it (on a list known good it finds exactly the items, in order).
_LIST_RE: Final = re.compile(rf"{_SWS}(?:{_ITEM_NC}(?:{_SWS},{_SWS}{_ITEM_NC})*+)?{_SWS}")
_ITEM_RE: Final = re.compile(_ITEM)
# Fast path for one element of an irregular list: a well-formed auth-param and
# the SWS after it, followed by a comma or the end. Anything else goes to the
# slow scanner, which diagnoses (strict) or recovers (lenient).
_PARAM_RE: Final = re.compile(rf"{_ITEM}{_SWS}(?=,|\Z)")
_UNESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)
# Liberal spans for recovery: whatever runs up to the next delimiter.
_LIBERAL_NAME_RE: Final = re.compile(r'[^ \t\r\n=,"]++')
_LIBERAL_VALUE_RE: Final = re.compile(r'[^ \t\r\n,"]*+')
_LHEX_RE: Final = re.compile(r"[0-9a-f]*+")
_NC_RE: Final = re.compile(r"[0-9a-f]{8}")
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]++")
# token68 (RFC 7235 2.1), for schemes such as Bearer (RFC 8898) in parse_auth_header.
_TOKEN68_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]++=*+[ \t]*+")
_BAD_QDTEXT_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# RFC 8187 3.2.1 attr-char minus what a SIP token cannot carry ("#$&^|"):
# username* is sent as a token, so those get percent-encoded.
_ATTR_SAFE: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!+-._`~"
)
_EXT_VALUE_RE: Final = re.compile(r"([A-Za-z0-9!#$%&+\-^_`{}~]+)'([A-Za-z0-9\-]*)'(.*)", re.DOTALL)
_PCT_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_PCT_VALUE_RE: Final = re.compile(r"(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-Fa-f]{2})*+")

# Rules named in errors (RFC sections the way the brief and DESIGN cite them).
_R_EMPTY: Final = "RFC 3261 25.1 credentials/challenge: an auth-scheme is required"
_R_SCHEME: Final = "RFC 7235 2.1 auth-scheme = token, then 1*SP before the parameters"
_R_DIGEST_CRED: Final = 'RFC 3261 25.1 credentials = ("Digest" LWS digest-response)'
_R_DIGEST_CHAL: Final = 'RFC 3261 25.1 challenge = ("Digest" LWS digest-cln *(COMMA digest-cln))'
_R_LWS: Final = "RFC 3261 25.1 LWS = [*WSP CRLF] 1*WSP (a line break only as a fold)"
_R_PARAM: Final = "RFC 3261 25.1 auth-param = auth-param-name EQUAL ( token / quoted-string )"
_R_QSTRING: Final = "RFC 3261 25.1 quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE"
_R_QPAIR: Final = 'RFC 3261 25.1 quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)'
_R_QDTEXT: Final = "RFC 3261 25.1 qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII"
_R_COMMA: Final = "RFC 3261 25.1 auth-param *(COMMA auth-param): no empty list elements"
_R_SEPARATOR: Final = 'RFC 3261 25.1 COMMA = SWS "," SWS between auth-params'
_R_DUPLICATE: Final = "RFC 7235 2.1 each parameter name MUST only occur once"
_R_TOO_MANY: Final = f"sipwarden limit: at most {MAX_AUTH_PARAMS} auth-params per header"
_R_TOO_LONG: Final = f"sipwarden limit: at most {MAX_AUTH_VALUE_LENGTH} characters per header"
_R_CRED_REQUIRED: Final = "RFC 7616 3.4 username, realm, nonce, uri and response are required"
_R_CRED_QUOTED: Final = (
    "RFC 7616 3.4 username, realm, nonce, uri, response, cnonce, opaque MUST be quoted-strings"
)
_R_CRED_BARE: Final = "RFC 7616 3.4 algorithm, qop and nc MUST NOT use the quoted-string syntax"
_R_RESPONSE: Final = (
    "RFC 8760 2.7 request-digest = LDQUOT *LHEX RDQUOT, of the algorithm's size (RFC 8760 2.2)"
)
_R_NC: Final = "RFC 3261 25.1 nc-value = 8LHEX"
_R_QOP_PAIRS: Final = "RFC 2617 3.2.2 cnonce and nc MUST be sent with qop and MUST NOT without"
_R_USERHASH: Final = 'RFC 7616 3.4 userhash = "true" / "false"'
_R_USERNAME_STAR: Final = "RFC 7616 3.4 username* is an RFC 8187 ext-value, never with username"
_R_CHAL_REQUIRED: Final = "RFC 2617 1.2/3.2.1 a Digest challenge requires realm and nonce"
_R_CHAL_QUOTED: Final = "RFC 7616 3.3 realm, domain, nonce, opaque, qop MUST be quoted-strings"
_R_CHAL_BARE: Final = "RFC 7616 3.3 stale and algorithm MUST NOT use the quoted-string syntax"
_R_STALE: Final = 'RFC 3261 25.1 stale = "stale" EQUAL ( "true" / "false" )'
_R_QOP_OPTIONS: Final = (
    'RFC 3261 25.1 qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT'
)
_R_CHARSET: Final = 'RFC 7616 3.3 charset: the only allowed value is "UTF-8"'
_R_BARE_WORD: Final = "RFC 3261 25.1 token"
_R_ALGORITHM: Final = "RFC 7616 3.3 algorithm: MD5, SHA-256, SHA-512-256 and their -sess forms"
_R_QOP: Final = 'RFC 7616 3.4 qop = "auth" / "auth-int"'

# --------------------------------------------------------------------------- result types

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthHeader:
    """Any auth-scheme's value, read by the generic grammar (RFC 7235 2.1).

    ``params`` names are lowercased (they are case-insensitive), values have
    their quoted-pair escapes resolved. ``token68`` is set instead of
    ``params`` for schemes such as Bearer (RFC 8898).
    """

    scheme: str
    params: Params = ()
    token68: str | None = None

    @property
    def is_digest(self) -> bool:
        """Whether the scheme is Digest (auth-scheme tokens are case-insensitive)."""
        return self.scheme.lower() == "digest"


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestChallenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value (RFC 7616 3.3).

    ``algorithm`` is kept as written (``None`` when absent, which means MD5);
    :func:`canonical_algorithm` maps it to a canonical name. ``qop_options``
    is empty for an RFC 2069 challenge. ``extra`` holds extension parameters
    (lowercase names). ``defects`` lists what a lenient parse had to forgive.
    """

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str | None = None
    qop_options: tuple[str, ...] = ()
    stale: bool = False
    domain: tuple[str, ...] = ()
    userhash: bool = False
    charset: str | None = None
    extra: Params = ()
    defects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestCredentials:
    """An ``Authorization`` / ``Proxy-Authorization`` Digest value (RFC 7616 3.4).

    A lenient parse fills a missing required parameter with ``""`` and says
    so in ``defects`` (``"missing:username"``). ``response`` and ``uri`` are
    kept exactly as written between the quotes: RFC 3261 25.1 wraps them in
    LDQUOT/RDQUOT without making them quoted-strings. ``username_star`` is
    true when the name came in RFC 8187 form (``username*=UTF-8''...``);
    ``username`` is then the decoded name. When ``userhash`` is true,
    ``username`` is H(username ":" realm) (RFC 7616 3.4.4).
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False
    username_star: bool = False
    extra: Params = ()
    defects: tuple[str, ...] = ()

    @property
    def nonce_count(self) -> int | None:
        """``nc`` as a number, or ``None`` when absent or not hex."""
        if self.nc is None or _HEX_RE.fullmatch(self.nc) is None:
            return None
        return int(self.nc, 16)


# --------------------------------------------------------------------------- scanner


class _Param(NamedTuple):
    name: str  # lowercased
    value: str  # quoted-pairs resolved, folds removed
    raw: str  # between the quotes as written (folds removed): uri and response
    quoted: bool
    offset: int  # where the parameter name starts in the input


class _Ctx:
    """Strict: the first problem raises. Lenient: problems become defect codes."""

    __slots__ = ("defects", "strict")

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.defects: dict[str, None] = {}  # an ordered set

    def problem(self, code: str, message: str, rule: str, offset: int | None) -> None:
        if self.strict:
            raise RemoteProtocolError(message, rule=rule, offset=offset)
        self.defects.setdefault(code, None)

    def result(self) -> tuple[str, ...]:
        return tuple(self.defects)


def _bounded(value: str, ctx: _Ctx) -> str:
    if len(value) > MAX_AUTH_VALUE_LENGTH:
        ctx.problem("too-long", "auth header value too long", _R_TOO_LONG, MAX_AUTH_VALUE_LENGTH)
        # Lenient: look at the head only; the username is near the start.
        return value[:MAX_AUTH_VALUE_LENGTH]
    return value


def _ws(text: str, i: int, ctx: _Ctx) -> int:
    """Skip SWS; a CR or LF that is not part of a fold is a problem, then skipped."""
    m = _SWS_RE.match(text, i)
    i = m.end() if m is not None else i
    if i < len(text) and text[i] in "\r\n":
        ctx.problem("bad-line-break", "line break that is not a fold", _R_LWS, i)
        m = _ANY_WS_RE.match(text, i)  # the whole run at once: no per-character loop
        i = m.end() if m is not None else i + 1
    return i


def _unquote(raw: str) -> str:
    # RFC 5322 2.2.3 unfolding (remove a CRLF before WSP), then resolve quoted-pairs.
    if "\r" in raw:
        raw = raw.replace("\r\n", "")
    if "\\" in raw:
        raw = _UNESCAPE_RE.sub(r"\1", raw)
    return raw


def _slow_quoted(text: str, start: int, ctx: _Ctx) -> tuple[str, str, int]:
    """Scan the quoted-string at ``start`` char by char: (value, raw, end)."""
    n = len(text)
    out: list[str] = []
    k = start + 1
    while k < n:
        c = text[k]
        if c == '"':
            return "".join(out), text[start + 1 : k].replace("\r\n", ""), k + 1
        if c == "\\":
            if k + 1 >= n:
                break
            d = text[k + 1]
            if d in "\r\n" or ord(d) > 0x7F:
                ctx.problem("bad-escape", "quoted-pair escapes CR, LF or non-ASCII", _R_QPAIR, k)
            out.append(d)
            k += 2
            continue
        if c in "\r\n":
            if text.startswith("\r\n", k) and k + 2 < n and text[k + 2] in " \t":
                k += 2  # a fold inside the string: unfold
                continue
            ctx.problem("bad-line-break", "line break inside a quoted-string", _R_LWS, k)
        elif (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            ctx.problem("control-char", "control character in a quoted-string", _R_QDTEXT, k)
        elif 0xD800 <= ord(c) <= 0xDFFF:
            ctx.problem("bad-utf8", "bytes that are not UTF-8 in a quoted-string", _R_QDTEXT, k)
        out.append(c)
        k += 1
    ctx.problem("unterminated-quote", "quoted-string without its closing quote", _R_QSTRING, start)
    return "".join(out), text[start + 1 :].replace("\r\n", ""), n


def _slow_param(text: str, i: int, ctx: _Ctx) -> tuple[_Param | None, int]:
    """Diagnose (strict) or recover (lenient) one parameter the fast path refused.

    ``text[i]`` is neither whitespace nor a comma. Always returns an index past ``i``.
    """
    n = len(text)
    m = _LIBERAL_NAME_RE.match(text, i)
    if m is not None:
        name = m.group()
        if _TOKEN_RE.fullmatch(name) is None:
            ctx.problem("bad-param-name", f"parameter name {name!r} is not a token", _R_PARAM, i)
        j = _ws(text, m.end(), ctx)
    else:
        name = ""  # text[i] is '=' or '"'
        j = i
    if j >= n or text[j] != "=":
        ctx.problem("missing-equals", "parameter without '=' and value", _R_PARAM, j)
        if j < n and text[j] == '"':
            # A value without a name (or a name and value without '='): skip it.
            _, _, j = _slow_quoted(text, j, ctx)
        return None, max(j, i + 1)
    if not name:
        ctx.problem("bad-param-name", "parameter without a name", _R_PARAM, i)
    j = _ws(text, j + 1, ctx)
    if j < n and text[j] == '"':
        value, raw, j = _slow_quoted(text, j, ctx)
        quoted = True
    else:
        vm = _LIBERAL_VALUE_RE.match(text, j)
        value = vm.group() if vm is not None else ""
        if not value:
            ctx.problem("empty-value", f"parameter {name!r} has no value", _R_PARAM, j)
        elif _TOKEN_RE.fullmatch(value) is None:
            ctx.problem("bad-token", f"value {value!r} is neither token nor quoted", _R_PARAM, j)
        j += len(value)
        raw = value
        quoted = False
    j = _ws(text, j, ctx)
    if not name:
        return None, j
    return _Param(name.lower(), value, raw, quoted, i), j


_new_param = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


def _item(m: re.Match[str]) -> _Param:
    """A _Param from a match of _ITEM_RE or _PARAM_RE."""
    name, raw, token = m.groups()
    if raw is None:
        return _new_param(_Param, (name.lower(), token, token, False, m.start()))
    value = raw
    if "\r" in raw or "\\" in raw:
        raw = raw.replace("\r\n", "")
        value = _unquote(raw)
    return _new_param(_Param, (name.lower(), value, raw, True, m.start()))


def _lex(text: str, pos: int, ctx: _Ctx, *, fast: bool = True) -> list[_Param]:
    """The auth-param list from ``pos`` on: ``auth-param *(COMMA auth-param)``.

    Every element counts against :data:`MAX_AUTH_PARAMS`, garbage and empty
    ones included, so a lenient parse of hostile input stays cheap.
    """
    if fast and _LIST_RE.fullmatch(text, pos) is not None:
        params = [_item(m) for m in _ITEM_RE.finditer(text, pos)]
        if len(params) <= MAX_AUTH_PARAMS:
            return params
    params = []
    n = len(text)
    i = _ws(text, pos, ctx)
    expecting = True  # at the start or after a comma
    after_comma = False
    elements = 0
    while i < n:
        comma = text[i] == ","
        if not comma or expecting:  # a new element, possibly an empty one
            if elements >= MAX_AUTH_PARAMS:
                ctx.problem("too-many-params", "too many auth-params", _R_TOO_MANY, i)
                return params  # lenient: keep what we have
            elements += 1
        if comma:
            if expecting:
                ctx.problem("empty-element", "empty element in the parameter list", _R_COMMA, i)
            i = _ws(text, i + 1, ctx)
            expecting = after_comma = True
            continue
        if not expecting:
            ctx.problem("missing-comma", "parameters not separated by a comma", _R_SEPARATOR, i)
        m = _PARAM_RE.match(text, i) if fast else None
        if m is not None:
            params.append(_item(m))
            i = _ws(text, m.end(), ctx)
        else:
            param, i = _slow_param(text, i, ctx)
            if param is not None:
                params.append(param)
        expecting = after_comma = False
    if after_comma:
        ctx.problem("empty-element", "trailing comma in the parameter list", _R_COMMA, n)
    return params


def _scheme(text: str, ctx: _Ctx) -> tuple[str, int]:
    """The auth-scheme and where its parameters start."""
    n = len(text)
    i = _ws(text, 0, ctx)
    if i >= n:
        ctx.problem("empty", "empty auth header value", _R_EMPTY, 0)
        return "", n
    m = _TOKEN_RE.match(text, i)
    if m is None:
        ctx.problem("bad-scheme", "auth-scheme is not a token", _R_SCHEME, i)
        return "", i
    j = m.end()
    sws = _SWS_RE.match(text, j)
    k = sws.end() if sws is not None else j
    if k < n and text[k] == "=":
        # "username=..." straight away: a client that forgot the scheme.
        ctx.problem("missing-scheme", "parameters without an auth-scheme", _R_SCHEME, i)
        return "", i
    if j < n and k == j:
        ctx.problem("no-lws-after-scheme", "no whitespace after the auth-scheme", _R_SCHEME, j)
    return m.group(), k


def _index(params: list[_Param], ctx: _Ctx) -> dict[str, _Param]:
    fields: dict[str, _Param] = {}
    for p in params:
        if p.name in fields:
            # Lenient keeps the first: what a PBX that stops at the first match sees.
            ctx.problem(
                f"duplicate:{p.name}", f"parameter {p.name!r} twice", _R_DUPLICATE, p.offset
            )
        else:
            fields[p.name] = p
    return fields


def _quoted(fields: dict[str, _Param], name: str, ctx: _Ctx, rule: str) -> _Param | None:
    p = fields.get(name)
    if p is not None and not p.quoted:
        ctx.problem(f"unquoted:{name}", f"{name} must be a quoted-string", rule, p.offset)
    return p


def _token(fields: dict[str, _Param], name: str, ctx: _Ctx, rule: str) -> str | None:
    p = fields.get(name)
    if p is None:
        return None
    if p.quoted:
        # Some real clients write qop="auth" and algorithm="MD5".
        ctx.problem(f"quoted:{name}", f"{name} must be a token, not quoted", rule, p.offset)
        if _TOKEN_RE.fullmatch(p.value) is None:
            ctx.problem(f"bad-token:{name}", f"{name} value is not a token", _R_BARE_WORD, p.offset)
    return p.value


def _boolean(p: _Param | None, name: str, ctx: _Ctx, rule: str) -> bool:
    if p is None:
        return False
    low = p.value.lower()
    if low not in ("true", "false"):
        ctx.problem(f"bad-{name}", f"{name} must be true or false", rule, p.offset)
    return low == "true"


def _decode_ext_value(value: str) -> str | None:
    """RFC 8187 3.2 ext-value (``charset'lang'pct-encoded``), or None if malformed."""
    m = _EXT_VALUE_RE.fullmatch(value)
    if m is None or _PCT_VALUE_RE.fullmatch(m.group(3)) is None:
        return None
    charset = m.group(1).lower()
    if charset not in ("utf-8", "iso-8859-1"):  # the two RFC 8187 3.2.1 requires
        return None
    data = _PCT_RE.sub(lambda h: chr(int(h.group(1), 16)), m.group(3)).encode("latin-1")
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        return None


def _encode_ext_value(value: str) -> str:
    data = _enc(value)
    return "UTF-8''" + "".join(chr(b) if chr(b) in _ATTR_SAFE else f"%{b:02X}" for b in data)


# --------------------------------------------------------------------------- parsing

_CREDENTIAL_NAMES: Final = frozenset(
    (
        "username",
        "username*",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "opaque",
        "qop",
        "nc",
        "userhash",
    )
)
_CHALLENGE_NAMES: Final = frozenset(
    ("realm", "domain", "nonce", "opaque", "stale", "algorithm", "qop", "charset", "userhash")
)


def parse_auth_params(text: str) -> list[tuple[str, str]]:
    """The generic ``auth-param *(COMMA auth-param)`` list (RFC 7235 2.1, RFC 3261 25.1).

    Names are lowercased (case-insensitive); quoted-string values come back
    with quotes removed and quoted-pair escapes resolved. Duplicates are kept:
    that check belongs to the scheme. Raises
    :class:`~sipwarden.errors.RemoteProtocolError` on malformed input or more
    than :data:`MAX_AUTH_PARAMS` parameters.
    """
    ctx = _Ctx(strict=True)
    return [(p.name, p.value) for p in _lex(_bounded(text, ctx), 0, ctx)]


def parse_auth_header(value: str) -> AuthHeader:
    """Any scheme's challenge or credentials value, e.g. to decide whether it is Digest.

    RFC 4475 3.3.14 (regaut01) is a REGISTER with ``Authorization:
    NoOneKnowsThisScheme opaque-data=here``: well formed, so it parses here;
    refusing an unknown scheme is policy, left to the caller. Raises
    :class:`~sipwarden.errors.RemoteProtocolError` on malformed input.
    """
    ctx = _Ctx(strict=True)
    text = _bounded(value, ctx)
    scheme, pos = _scheme(text, ctx)
    if pos < len(text) and _TOKEN68_RE.fullmatch(text, pos) is not None:
        return AuthHeader(scheme=scheme, token68=text[pos:].rstrip(" \t"))
    params = _lex(text, pos, ctx)
    return AuthHeader(scheme=scheme, params=tuple((p.name, p.value) for p in params))


def parse_credentials(value: str, *, strict: bool = True) -> DigestCredentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` Digest value.

    Strict: raises :class:`~sipwarden.errors.RemoteProtocolError` (rule, offset
    in ``value``) on a non-Digest scheme, a missing required parameter, a
    duplicate, a response that is not lowercase hex of the algorithm's size
    (empty is allowed: RFC 8760 2.7 and 3GPP initial REGISTERs), a bad ``nc``,
    ``qop`` without ``cnonce``/``nc`` or the reverse, wrong quoting, or any
    lexical error. Lenient: never raises; ``defects`` says what was forgiven
    and the username is recovered whenever it is there.
    """
    ctx = _Ctx(strict)
    text = _bounded(value, ctx)
    scheme, pos = _scheme(text, ctx)
    if scheme and scheme.lower() != "digest":
        ctx.problem("not-digest", f"scheme {scheme!r} is not Digest", _R_DIGEST_CRED, 0)
    fields = _index(_lex(text, pos, ctx), ctx)

    def required(name: str) -> str:
        p = _quoted(fields, name, ctx, _R_CRED_QUOTED)
        if p is None:
            ctx.problem(f"missing:{name}", f"{name} is missing", _R_CRED_REQUIRED, len(text))
            return ""
        # uri and response are LDQUOT ... RDQUOT, not quoted-string (RFC 3261 25.1).
        return p.raw if name in ("uri", "response") else p.value

    def optional(name: str) -> str | None:
        p = _quoted(fields, name, ctx, _R_CRED_QUOTED)
        return None if p is None else p.value

    username, username_star = "", False
    star = fields.get("username*")
    if star is not None and "username" not in fields:
        decoded = _decode_ext_value(star.value)
        if decoded is None:
            ctx.problem(
                "bad:username*", "username* is not an ext-value", _R_USERNAME_STAR, star.offset
            )
        else:
            username, username_star = decoded, True
        if star.quoted:
            ctx.problem(
                "quoted:username*", "username* must not be quoted", _R_USERNAME_STAR, star.offset
            )
    if not username_star:
        if star is not None and "username" in fields:
            ctx.problem(
                "conflict:username*", "username and username*", _R_USERNAME_STAR, star.offset
            )
        username = required("username")
    realm = required("realm")
    nonce = required("nonce")
    uri = required("uri")
    response = required("response")
    algorithm = _token(fields, "algorithm", ctx, _R_CRED_BARE)
    qop = _token(fields, "qop", ctx, _R_CRED_BARE)
    nc = _token(fields, "nc", ctx, _R_CRED_BARE)
    cnonce = optional("cnonce")
    opaque = optional("opaque")
    userhash = _boolean(fields.get("userhash"), "userhash", ctx, _R_USERHASH)

    if response:
        spec = _BY_LOWER.get((algorithm or "MD5").lower())
        size_ok = spec is None or len(response) == spec.hex_length
        if _LHEX_RE.fullmatch(response) is None or not size_ok:
            at = fields["response"].offset
            ctx.problem(
                "bad-response", "response is not the digest in lowercase hex", _R_RESPONSE, at
            )
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        ctx.problem("bad-nc", "nc is not 8 lowercase hex digits", _R_NC, fields["nc"].offset)
    if qop is not None:
        for name in ("cnonce", "nc"):
            if name not in fields:
                ctx.problem(f"missing:{name}", f"qop without {name}", _R_QOP_PAIRS, len(text))
    else:
        for name in ("cnonce", "nc"):
            if name in fields:
                at = fields[name].offset
                ctx.problem(f"unexpected:{name}", f"{name} without qop", _R_QOP_PAIRS, at)

    extra = tuple((p.name, p.value) for p in fields.values() if p.name not in _CREDENTIAL_NAMES)
    return DigestCredentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=cnonce,
        opaque=opaque,
        qop=qop,
        nc=nc,
        userhash=userhash,
        username_star=username_star,
        extra=extra,
        defects=ctx.result(),
    )


def parse_challenge(value: str, *, strict: bool = True) -> DigestChallenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value.

    One value is one challenge: SIP sends several as several header fields
    (RFC 3261 25.1 grammar, RFC 8760 2.3). Strict: raises
    :class:`~sipwarden.errors.RemoteProtocolError` on a non-Digest scheme,
    missing realm or nonce, duplicates, wrong quoting, a bad ``stale``,
    ``qop`` list or ``charset``, or any lexical error. Lenient: never raises.
    """
    ctx = _Ctx(strict)
    text = _bounded(value, ctx)
    scheme, pos = _scheme(text, ctx)
    if scheme and scheme.lower() != "digest":
        ctx.problem("not-digest", f"scheme {scheme!r} is not Digest", _R_DIGEST_CHAL, 0)
    fields = _index(_lex(text, pos, ctx), ctx)

    def quoted(name: str) -> str | None:
        p = _quoted(fields, name, ctx, _R_CHAL_QUOTED)
        return None if p is None else p.value

    realm = quoted("realm")
    nonce = quoted("nonce")
    for name, got in (("realm", realm), ("nonce", nonce)):
        if got is None:
            ctx.problem(f"missing:{name}", f"{name} is missing", _R_CHAL_REQUIRED, len(text))
    opaque = quoted("opaque")
    domain_value = quoted("domain")
    # domain = LDQUOT URI *( 1*SP URI ) RDQUOT (RFC 7616 3.3): split on SP/HTAB only.
    domain = tuple(_SP_HT_RE.split(domain_value.strip(" \t"))) if domain_value else ()
    domain = tuple(item for item in domain if item)
    qop_value = quoted("qop")
    qop_options: tuple[str, ...] = ()
    if qop_value is not None:
        items = [item.strip(" \t") for item in qop_value.split(",")]
        if any(_TOKEN_RE.fullmatch(item) is None for item in items):
            at = fields["qop"].offset
            ctx.problem("bad-qop-options", "qop is not a list of tokens", _R_QOP_OPTIONS, at)
        qop_options = tuple(item for item in items if item)
    algorithm = _token(fields, "algorithm", ctx, _R_CHAL_BARE)
    stale_param = fields.get("stale")
    _token(fields, "stale", ctx, _R_CHAL_BARE)
    stale = _boolean(stale_param, "stale", ctx, _R_STALE)
    charset_param = fields.get("charset")
    charset = None if charset_param is None else charset_param.value
    if charset_param is not None and charset_param.value.lower() != "utf-8":
        ctx.problem("bad-charset", "charset other than UTF-8", _R_CHARSET, charset_param.offset)
    userhash = _boolean(fields.get("userhash"), "userhash", ctx, _R_USERHASH)
    extra = tuple((p.name, p.value) for p in fields.values() if p.name not in _CHALLENGE_NAMES)
    return DigestChallenge(
        realm=realm or "",
        nonce=nonce or "",
        opaque=opaque,
        algorithm=algorithm,
        qop_options=qop_options,
        stale=stale,
        domain=domain,
        userhash=userhash,
        charset=charset,
        extra=extra,
        defects=ctx.result(),
    )


# --------------------------------------------------------------------------- computing


def _enc(text: str) -> bytes:
    # surrogateescape restores the bytes the message parser could not decode;
    # any other lone surrogate (only our own callers can make one) passes through.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _algorithm_spec(algorithm: str | None) -> _Algorithm:
    spec = _BY_LOWER.get(algorithm.lower()) if algorithm is not None else _DEFAULT_ALGORITHM
    if spec is None:
        raise LocalProtocolError(f"unsupported digest algorithm {algorithm!r}")
    return spec


def _check_ha1(value: str, spec: _Algorithm) -> str:
    low = value.lower()
    if len(low) != spec.hex_length or _LHEX_RE.fullmatch(low) is None:
        raise LocalProtocolError(f"ha1 is not a {spec.hex_length}-digit hex {spec.name} digest")
    return low


def ha1(username: str, realm: str, password: str, algorithm: str | None = "MD5") -> str:
    """H(username ":" realm ":" password) as hex: what a server stores (RFC 7616 3.4.2).

    For a ``-sess`` algorithm this is the per-user part; the session key is
    derived from it with the nonces by :func:`compute_response`.
    """
    spec = _algorithm_spec(algorithm)
    return spec.digest(_enc(f"{username}:{realm}:{password}"))


def hash_username(username: str, realm: str, algorithm: str | None = "MD5") -> str:
    """The ``userhash`` form of a username: H(username ":" realm) (RFC 7616 3.4.4)."""
    return _algorithm_spec(algorithm).digest(_enc(f"{username}:{realm}"))


def _tail(
    spec: _Algorithm,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> tuple[bytes, bytes | None]:
    """What follows HA1 in the response input, and in the session A1 for ``-sess``."""
    digest = spec.digest
    low_qop = None if qop is None else qop.lower()
    if low_qop == "auth-int":
        # RFC 7616 3.4.3: A2 = Method ":" request-uri ":" H(entity-body)
        ha2 = digest(_enc(f"{method}:{uri}:") + digest(body).encode("ascii"))
    elif low_qop is None or low_qop == "auth":
        ha2 = digest(_enc(f"{method}:{uri}"))
    else:
        raise LocalProtocolError(f"unsupported qop {qop!r}")
    if qop is not None:
        if cnonce is None or nc is None:
            raise LocalProtocolError("qop needs cnonce and nc (RFC 7616 3.4.1)")
        # RFC 7616 3.4.1: KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2)),
        # every value as sent (the qop token's spelling included).
        suffix = f":{nonce}:{nc}:{cnonce}:{qop}:{ha2}"
    else:
        # RFC 2617 3.2.2.1 / RFC 2069: KD(H(A1), nonce ":" H(A2))
        suffix = f":{nonce}:{ha2}"
    if not spec.session:
        return _enc(suffix), None
    if cnonce is None:
        raise LocalProtocolError(f"{spec.name} needs a cnonce (RFC 7616 3.4.2)")
    # RFC 7616 3.4.2: A1 = H(unq(username):unq(realm):passwd) ":" nonce ":" cnonce
    return _enc(suffix), _enc(f":{nonce}:{cnonce}")


def _respond(digest: Callable[[bytes], str], key: bytes, tail: tuple[bytes, bytes | None]) -> str:
    suffix, sess_suffix = tail
    if sess_suffix is not None:
        key = digest(key + sess_suffix).encode("ascii")
    return digest(key + suffix)


class ResponseTemplate:
    """Everything of a response that does not depend on the secret, hashed once.

    The cracking audit tries many passwords against one captured exchange:
    H(A2) and the tail of the response input are fixed, so each guess costs
    one hash for HA1 (two for ``-sess``) and one for the response.
    """

    __slots__ = ("_digest", "_sess_suffix", "_suffix")

    def __init__(
        self,
        *,
        method: str,
        uri: str,
        nonce: str,
        algorithm: str | None = None,
        qop: str | None = None,
        nc: str | None = None,
        cnonce: str | None = None,
        body: bytes = b"",
    ) -> None:
        spec = _algorithm_spec(algorithm)
        self._digest = spec.digest
        self._suffix, self._sess_suffix = _tail(
            spec, method=method, uri=uri, nonce=nonce, qop=qop, nc=nc, cnonce=cnonce, body=body
        )

    @classmethod
    def for_credentials(
        cls, credentials: DigestCredentials, *, method: str, body: bytes = b""
    ) -> ResponseTemplate:
        """The template of a received response.

        Raises :class:`~sipwarden.errors.RemoteProtocolError` when the peer's
        algorithm or qop is not one this module computes, or a value the
        computation needs is missing.
        """
        c = credentials
        if _BY_LOWER.get((c.algorithm or "MD5").lower()) is None:
            raise RemoteProtocolError(f"unsupported algorithm {c.algorithm!r}", rule=_R_ALGORITHM)
        if c.qop is not None and c.qop.lower() not in ("auth", "auth-int"):
            raise RemoteProtocolError(f"unsupported qop {c.qop!r}", rule=_R_QOP)
        try:
            return cls(
                method=method,
                uri=c.uri,
                nonce=c.nonce,
                algorithm=c.algorithm,
                qop=c.qop,
                nc=c.nc,
                cnonce=c.cnonce,
                body=body,
            )
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc), rule=_R_QOP_PAIRS) from None

    def from_ha1(self, ha1: str) -> str:
        """The response for a stored HA1 (lowercase hex; see :func:`ha1`)."""
        key = ha1.encode("utf-8", "surrogatepass")
        if self._sess_suffix is not None:
            key = self._digest(key + self._sess_suffix).encode("ascii")
        return self._digest(key + self._suffix)

    def from_password(self, password: str, *, username: str, realm: str) -> str:
        """The response for a password."""
        return self.from_ha1(self._digest(_enc(f"{username}:{realm}:{password}")))

    def find_password(
        self, candidates: Iterable[str], *, username: str, realm: str, response: str
    ) -> str | None:
        """The first candidate whose response is ``response``, or None."""
        target = response.lower()
        digest = self._digest
        prefix = _enc(f"{username}:{realm}:")
        for candidate in candidates:
            if self.from_ha1(digest(prefix + _enc(candidate))) == target:
                return candidate
        return None


def compute_response(
    *,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str | None = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
    ha1: str | None = None,
    password: str | None = None,
    username: str | None = None,
    realm: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 3.4.1; RFC 2069 form when ``qop`` is None).

    Give either ``ha1`` (hex of H(username:realm:password), also for ``-sess``
    algorithms) or ``password`` with ``username`` and ``realm``. ``qop`` may be
    ``"auth"``, ``"auth-int"`` (then ``body`` is hashed) or None. Raises
    :class:`~sipwarden.errors.LocalProtocolError` on an unsupported algorithm
    or qop, or missing inputs.
    """
    spec = _algorithm_spec(algorithm)
    tail = _tail(
        spec, method=method, uri=uri, nonce=nonce, qop=qop, nc=nc, cnonce=cnonce, body=body
    )
    if (ha1 is None) == (password is None):
        raise LocalProtocolError("give exactly one of ha1 and password")
    if ha1 is not None:
        key = _check_ha1(ha1, spec).encode("ascii")
    elif username is None or realm is None:
        raise LocalProtocolError("a password needs username and realm")
    else:
        key = spec.digest(_enc(f"{username}:{realm}:{password}")).encode("ascii")
    return _respond(spec.digest, key, tail)


def verify(
    credentials: DigestCredentials,
    *,
    method: str,
    password: str | None = None,
    ha1: str | None = None,
    body: bytes = b"",
    username: str | None = None,
) -> bool:
    """Whether the credentials' response was computed with this secret.

    Give exactly one of ``password`` and ``ha1``. ``username`` overrides the
    one in the credentials: needed with a password when ``userhash`` is true,
    since the header then carries only a hash of the name. The comparison is
    constant-time. Checking that realm, nonce and uri are the expected ones
    (RFC 3261 22.4) is the caller's job.

    ``False`` means a wrong secret. :class:`~sipwarden.errors.RemoteProtocolError`
    means the credentials cannot be checked at all (an algorithm or qop this
    module does not compute, ``qop`` without ``cnonce``/``nc``), which a
    cracking detector should not count as a failed guess.
    """
    if (password is None) == (ha1 is None):
        raise LocalProtocolError("give exactly one of password and ha1")
    template = ResponseTemplate.for_credentials(credentials, method=method, body=body)
    if ha1 is not None:
        expected = template.from_ha1(_check_ha1(ha1, _algorithm_spec(credentials.algorithm)))
    else:
        assert password is not None
        if username is None:
            if credentials.userhash:
                raise LocalProtocolError("userhash credentials: pass the real username")
            username = credentials.username
        expected = template.from_password(password, username=username, realm=credentials.realm)
    given = credentials.response.lower().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected.encode("ascii"), given)


def find_password(
    credentials: DigestCredentials,
    candidates: Iterable[str],
    *,
    method: str,
    body: bytes = b"",
    username: str | None = None,
) -> str | None:
    """The first candidate password that reproduces the response, or None.

    For the offline cracking audit of captured exchanges (the comparison is
    not constant-time: nothing secret is on the line). Raises
    :class:`~sipwarden.errors.RemoteProtocolError` as :func:`verify` does.
    """
    template = ResponseTemplate.for_credentials(credentials, method=method, body=body)
    if username is None:
        if credentials.userhash:
            raise LocalProtocolError("userhash credentials: pass the real username")
        username = credentials.username
    return template.find_password(
        candidates, username=username, realm=credentials.realm, response=credentials.response
    )


def answer_challenge(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> DigestCredentials:
    """The credentials a UAC sends in reply to ``challenge`` (RFC 3261 22.2, RFC 7616 3.4).

    Picks qop "auth" when offered, else "auth-int", else the RFC 2069 form.
    ``cnonce`` (the caller's randomness: this layer has none) is required
    with a qop or a ``-sess`` algorithm. Honours ``userhash``.
    """
    spec = _algorithm_spec(challenge.algorithm)
    if not 0 < nc <= 0xFFFFFFFF:
        raise LocalProtocolError("nc counts from 1 and fits 8 hex digits")
    offered = [q.lower() for q in challenge.qop_options]
    qop = "auth" if "auth" in offered else "auth-int" if "auth-int" in offered else None
    if (qop is not None or spec.session) and cnonce is None:
        raise LocalProtocolError("this challenge needs a cnonce")
    nc_value = f"{nc:08x}" if qop is not None else None
    response = compute_response(
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_value,
        cnonce=cnonce,
        body=body,
        ha1=ha1,
        password=password,
        username=username,
        realm=challenge.realm,
    )
    sent_name = username
    if challenge.userhash:
        sent_name = hash_username(username, challenge.realm, challenge.algorithm)
    return DigestCredentials(
        username=sent_name,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce if qop is not None else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_value,
        userhash=challenge.userhash,
    )


# --------------------------------------------------------------------------- building


def _quote(name: str, value: str) -> str:
    # Refuse what the strict parser would refuse: a CR or LF here would be
    # header injection, and parse(build(x)) == x must hold.
    bad = _BAD_QDTEXT_RE.search(value)
    if bad is not None:
        raise LocalProtocolError(f"{name}: character {bad.group()!r} cannot be sent")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_raw(name: str, value: str) -> str:
    # uri: LDQUOT Request-URI RDQUOT, no escaping exists (RFC 3261 25.1).
    if '"' in value or "\\" in value or _BAD_QDTEXT_RE.search(value) is not None:
        raise LocalProtocolError(f"{name}: {value!r} cannot be sent between quotes")
    return f'"{value}"'


def _bare(name: str, value: str) -> str:
    if _TOKEN_RE.fullmatch(value) is None:
        raise LocalProtocolError(f"{name}: {value!r} is not a token")
    return value


def _extras(extra: Params, reserved: frozenset[str], count: int) -> list[str]:
    parts: list[str] = []
    seen: set[str] = set()
    for name, value in extra:
        if _TOKEN_RE.fullmatch(name) is None or name != name.lower():
            raise LocalProtocolError(f"extension parameter name {name!r}: a lowercase token")
        if name in reserved or name in seen:
            raise LocalProtocolError(f"extension parameter {name!r} is reserved or repeated")
        seen.add(name)
        shown = value if _TOKEN_RE.fullmatch(value) else _quote(name, value)
        parts.append(f"{name}={shown}")
    if count + len(parts) > MAX_AUTH_PARAMS:
        raise LocalProtocolError(f"more than {MAX_AUTH_PARAMS} parameters")
    return parts


def build_challenge(challenge: DigestChallenge) -> str:
    """Serialise a challenge as a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value.

    Quoting follows RFC 7616 3.3 (realm, domain, nonce, opaque, qop quoted;
    stale, algorithm bare). Raises :class:`~sipwarden.errors.LocalProtocolError`
    for a value that cannot be sent; ``parse_challenge(build_challenge(c)) == c``
    for every challenge it accepts (``defects`` empty).
    """
    c = challenge
    parts = [f"realm={_quote('realm', c.realm)}"]
    if c.domain:
        for item in c.domain:
            if not item or any(ch in " \t" for ch in item):
                raise LocalProtocolError(f"domain: {item!r} is not one URI")
        parts.append(f"domain={_quote('domain', ' '.join(c.domain))}")
    parts.append(f"nonce={_quote('nonce', c.nonce)}")
    if c.opaque is not None:
        parts.append(f"opaque={_quote('opaque', c.opaque)}")
    if c.stale:
        parts.append("stale=true")
    if c.algorithm is not None:
        parts.append(f"algorithm={_bare('algorithm', c.algorithm)}")
    if c.qop_options:
        for q in c.qop_options:
            _bare("qop", q)
        parts.append(f'qop="{",".join(c.qop_options)}"')
    if c.charset is not None:
        if c.charset.lower() != "utf-8":
            raise LocalProtocolError("charset: only UTF-8 (RFC 7616 3.3)")
        parts.append(f"charset={_bare('charset', c.charset)}")
    if c.userhash:
        parts.append("userhash=true")
    parts += _extras(c.extra, _CHALLENGE_NAMES, len(parts))
    return "Digest " + ", ".join(parts)


def build_credentials(credentials: DigestCredentials) -> str:
    """Serialise credentials as an ``Authorization`` / ``Proxy-Authorization`` value.

    Quoting follows RFC 7616 3.4 (algorithm, qop, nc bare). Raises
    :class:`~sipwarden.errors.LocalProtocolError` for a value that cannot be
    sent or that the strict parser would refuse (bad response or nc, qop
    without cnonce/nc, ...); ``parse_credentials(build_credentials(c)) == c``
    for every value it accepts (``defects`` empty).
    """
    c = credentials
    if c.username_star:
        parts = [f"username*={_encode_ext_value(c.username)}"]
    else:
        parts = [f"username={_quote('username', c.username)}"]
    parts += [
        f"realm={_quote('realm', c.realm)}",
        f"nonce={_quote('nonce', c.nonce)}",
        f"uri={_quote_raw('uri', c.uri)}",
    ]
    spec = _BY_LOWER.get((c.algorithm or "MD5").lower())
    if c.response and (
        _LHEX_RE.fullmatch(c.response) is None
        or (spec is not None and len(c.response) != spec.hex_length)
    ):
        raise LocalProtocolError("response: not the digest in lowercase hex")
    parts.append(f'response="{c.response}"')
    if c.algorithm is not None:
        parts.append(f"algorithm={_bare('algorithm', c.algorithm)}")
    if (c.qop is None) != (c.cnonce is None) or (c.qop is None) != (c.nc is None):
        raise LocalProtocolError("cnonce and nc go with qop, and only with it (RFC 2617 3.2.2)")
    if c.cnonce is not None:
        parts.append(f"cnonce={_quote('cnonce', c.cnonce)}")
    if c.opaque is not None:
        parts.append(f"opaque={_quote('opaque', c.opaque)}")
    if c.qop is not None:
        parts.append(f"qop={_bare('qop', c.qop)}")
    if c.nc is not None:
        if _NC_RE.fullmatch(c.nc) is None:
            raise LocalProtocolError("nc: 8 lowercase hex digits")
        parts.append(f"nc={c.nc}")
    if c.userhash:
        parts.append("userhash=true")
    parts += _extras(c.extra, _CREDENTIAL_NAMES, len(parts))
    return "Digest " + ", ".join(parts)
