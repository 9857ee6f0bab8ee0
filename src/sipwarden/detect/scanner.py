"""Scanner signatures: recognise the tools attackers sweep SIP servers with.

A :class:`Signature` is one fingerprint of one tool: regular expressions over
a few request fields (User-Agent, From/To parts, tags, Call-ID, Via branch,
Contact, Request-URI, any header), a method list, and named *structural
checks* implemented here because a regex cannot express them:

``sipvicious_tag``
    The From tag is the hex encoding of ``<data>\\x01<random digits>``, which
    SIPVicious' ``createTag()`` builds for every request. ``<data>`` is the
    scanned target's ``ip:port`` in hex for svmap, the extension for svwar and
    ``user:password`` for svcrack, so the evidence shows what was probed
    (for svcrack, the password being tried). It survives a changed User-Agent.
``from_equals_to``
    From and To carry the same URI and the same display name on an
    out-of-dialog request, as svmap's probes do (svmap copies From into To);
    a legitimate caller is not its own callee.

The built-in signatures live in ``sipwarden/data/signatures.toml`` (each with
the source of its fingerprint); administrators add their own files in the same
format without touching code. :func:`load_signatures` validates a file
strictly: an unknown key, a bad regex or an unknown check is a
:class:`~sipwarden.errors.ConfigError` naming the signature and the key.

:class:`ScannerDetector` reports one :data:`~sipwarden.engine.contract.EventKind.SCANNER`
event per source and tool, then at most one more per ``realert_after`` seconds
with updated counts, and proposes dropping requests that match a
high-confidence signature. Only requests count, and only the transport source
address is blamed: never anything the attacker wrote. Sans-IO at inspection
time; the signature files are read once, when the detector is built.
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple, cast

from sipwarden.engine.contract import (
    Action,
    EventKind,
    Evidence,
    Observation,
    SecurityEvent,
    Severity,
    Verdict,
)
from sipwarden.engine.correlation import account_of, user_of
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, prefix64
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.abnf import TOKEN
from sipwarden.sip.headers import header_key
from sipwarden.sip.memo import Memo
from sipwarden.sip.message import Request
from sipwarden.sip.uri import NameAddr, SipUri

from .common import MAX_EVIDENCE_MESSAGES, describe, iso_time

__all__ = [
    "BUILTIN_ORIGIN",
    "CHECKS",
    "DEFAULT_MAX_SOURCES",
    "DEFAULT_REALERT_AFTER",
    "MATCH_FIELDS",
    "MAX_FIELD_LENGTH",
    "CheckResult",
    "Confidence",
    "DecodedTag",
    "RequestFields",
    "ScannerDetector",
    "ScannerSettings",
    "Sighting",
    "Signature",
    "SignatureMatch",
    "builtin_signatures",
    "decode_sipvicious_tag",
    "load_signature_files",
    "load_signatures",
    "merge_signatures",
    "signatures_for",
]

Confidence = Literal["high", "medium"]
_CONFIDENCE_RANK: Final[Mapping[str, int]] = {"medium": 1, "high": 2}

MAX_FIELD_LENGTH: Final = 256
"""Characters of a field a signature regex may see: bounds the regex time per message."""

DEFAULT_REALERT_AFTER: Final = 300.0
DEFAULT_MAX_SOURCES: Final = 10_000

# Bounded samples kept per source and tool, for the evidence.
MAX_DECODED_SAMPLE: Final = 32
MAX_ADDRESS_SAMPLE: Final = 16
# An excerpt of an attacker-written value in an event's detail.
MAX_DETAIL_VALUE: Final = 120

BUILTIN_ORIGIN: Final = "sipwarden/data/signatures.toml"
"""The ``file`` named in errors about the built-in signature file."""

# A signature name becomes part of a rule name (``scanner.<name>``).
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_TOOL = 64
_MAX_PATTERN = 1024

# -- the fields a signature can look at --------------------------------------------------


def _address_user(address: NameAddr | None) -> str | None:
    return user_of(address.uri) if address is not None else None


def _address_host(address: NameAddr | None) -> str | None:
    return address.uri.host if address is not None and isinstance(address.uri, SipUri) else None


class RequestFields:
    """The fields of one request that signatures look at, extracted once and cut short.

    Every typed view of the message may raise :class:`RemoteProtocolError` on
    attacker bytes; here a field that does not parse is simply absent
    (``None``), so a broken header can neither crash the detector nor match a
    signature. Values are cut to ``limit`` characters before any regex sees
    them.
    """

    __slots__ = ("_cache", "_from", "_parsed", "_to", "limit", "message")

    def __init__(self, message: Request, *, limit: int = MAX_FIELD_LENGTH) -> None:
        self.message = message
        self.limit = limit
        self._cache: dict[str, str | None] = {}
        self._parsed = 0  # bit 1: From parsed, bit 2: To parsed
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def from_address(self) -> NameAddr | None:
        if not self._parsed & 1:
            self._parsed |= 1
            try:
                self._from = self.message.from_
            except RemoteProtocolError:  # attacker bytes: no From to look at
                self._from = None
        return self._from

    @property
    def to_address(self) -> NameAddr | None:
        if not self._parsed & 2:
            self._parsed |= 2
            try:
                self._to = self.message.to
            except RemoteProtocolError:  # attacker bytes: no To to look at
                self._to = None
        return self._to

    def has_header(self, key: str) -> bool:
        """``key`` is a canonical header key (see :func:`~sipwarden.sip.headers.header_key`)."""
        return key in self.message.headers

    def get(self, name: str) -> str | None:
        """The value of field ``name`` (one of :data:`MATCH_FIELDS`, or ``headers.<key>``)."""
        cache = self._cache
        if name in cache:
            return cache[name]
        extract = _EXTRACTORS.get(name)
        if extract is None:  # "headers.<key>": a raw header value
            value = self.message.headers.get(name[8:])
        else:
            try:
                value = extract(self)
            except RemoteProtocolError:  # attacker bytes: the field is absent
                value = None
        if value is not None:
            value = value[: self.limit]
        cache[name] = value
        return value


def _user_agent(fields: RequestFields) -> str | None:
    return fields.message.headers.get("user-agent")


def _from_tag(fields: RequestFields) -> str | None:
    address = fields.from_address
    return address.tag if address is not None else None


def _to_tag(fields: RequestFields) -> str | None:
    address = fields.to_address
    return address.tag if address is not None else None


def _call_id(fields: RequestFields) -> str | None:
    return fields.message.call_id


def _branch(fields: RequestFields) -> str | None:
    via = fields.message.top_via
    return via.branch if via is not None else None


def _from_user(fields: RequestFields) -> str | None:
    return _address_user(fields.from_address)


def _from_host(fields: RequestFields) -> str | None:
    return _address_host(fields.from_address)


def _from_display(fields: RequestFields) -> str | None:
    address = fields.from_address
    return address.display_name if address is not None else None


def _to_user(fields: RequestFields) -> str | None:
    return _address_user(fields.to_address)


def _to_host(fields: RequestFields) -> str | None:
    return _address_host(fields.to_address)


def _to_display(fields: RequestFields) -> str | None:
    address = fields.to_address
    return address.display_name if address is not None else None


def _contact(fields: RequestFields) -> str | None:
    # The raw first Contact value: tools' defaults are recognisable as written,
    # and a malformed Contact is still evidence.
    return fields.message.headers.get("contact")


def _request_uri(fields: RequestFields) -> str | None:
    return fields.message.uri


_EXTRACTORS: Final[Mapping[str, Callable[[RequestFields], str | None]]] = {
    "user_agent": _user_agent,
    "from_tag": _from_tag,
    "to_tag": _to_tag,
    "call_id": _call_id,
    "branch": _branch,
    "from_user": _from_user,
    "from_host": _from_host,
    "from_display": _from_display,
    "to_user": _to_user,
    "to_host": _to_host,
    "to_display": _to_display,
    "contact": _contact,
    "request_uri": _request_uri,
}

MATCH_FIELDS: Final = tuple(_EXTRACTORS)
"""The request fields a signature can match with a regex (TOML keys of the same name)."""

# -- structural checks ---------------------------------------------------------------------


class DecodedTag(NamedTuple):
    """What a SIPVicious From tag says about the probe.

    ``kind`` is ``"target"`` (svmap: the scanned ``ip:port``), ``"credentials"``
    (svcrack: ``user:password``) or ``"extension"`` (svwar). ``text`` is the
    decoded data as shown in evidence (the password hidden when asked to).
    """

    kind: str
    text: str
    user: str | None = None
    password: str | None = None


class CheckResult(NamedTuple):
    """A passed structural check: the fields that satisfied it and what it decoded."""

    matched: Mapping[str, str]
    decoded: DecodedTag | None = None


# A tag of 7..128 hex octets; SIPVicious writes lower-case (binascii.b2a_hex).
_HEX_TAG = re.compile(r"(?:[0-9a-fA-F]{2}){7,128}")
# createTag(): str(data) + b"\x01" + str(getrandbits(32)). Requiring 5-10 digits
# after \x01 (a 32-bit number has fewer than 5 with probability 2e-5) keeps a
# random hex tag of a real phone from matching by chance (~1e-10 at 14 digits).
_SV_PAYLOAD = re.compile(rb"([^\x00-\x1f\x7f]{1,120})\x01([0-9]{5,10})")
_SVMAP_TARGET = re.compile(r"[0-9a-f]{12}")


def decode_sipvicious_tag(tag: str) -> DecodedTag | None:
    """Decode a SIPVicious From tag, or ``None`` when ``tag`` is not one.

    svmap encodes the IPv4 target as 8 hex digits and the port as 4
    (``7f0000013ad4`` is 127.0.0.1:15060); an IPv6 target is its groups
    without colons, which cannot be told apart reliably and stays as written.
    """
    if _HEX_TAG.fullmatch(tag) is None:
        return None
    match = _SV_PAYLOAD.fullmatch(bytes.fromhex(tag))
    if match is None:
        return None
    try:
        data = match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not data.isprintable():
        return None
    if ":" in data:
        user, password = data.split(":", 1)
        return DecodedTag("credentials", data, user=user, password=password)
    lowered = data.lower()
    if _SVMAP_TARGET.fullmatch(lowered) and not data.isdigit():
        octets = ".".join(str(int(lowered[i : i + 2], 16)) for i in range(0, 8, 2))
        return DecodedTag("target", f"{octets}:{int(lowered[8:], 16)}")
    return DecodedTag("extension", data, user=data)


def _check_sipvicious_tag(fields: RequestFields) -> CheckResult | None:
    tag = fields.get("from_tag")
    if tag is None:
        return None
    decoded = decode_sipvicious_tag(tag)
    if decoded is None:
        return None
    return CheckResult({"from_tag": tag}, decoded)


# Requests whose sender legitimately addresses itself: a registration binds the
# address of record it is sent From (RFC 3261 10.2), and presence or MWI
# subscriptions and publications are often about the subscriber's own AOR.
_SELF_ADDRESSED: Final = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH", "NOTIFY"})


def _check_from_equals_to(fields: RequestFields) -> CheckResult | None:
    if fields.method in _SELF_ADDRESSED:
        return None
    sender, callee = fields.from_address, fields.to_address
    if sender is None or callee is None or callee.tag is not None:
        return None  # a To tag means in-dialog (RFC 3261 12.2)
    # svmap always writes a quoted display name; requiring a non-empty one keeps
    # keep-alive OPTIONS (which rarely name the target) out.
    if not sender.display_name or sender.display_name != callee.display_name:
        return None
    if str(sender.uri) != str(callee.uri):
        return None
    return CheckResult(
        {"from": str(sender)[:MAX_DETAIL_VALUE], "to": str(callee)[:MAX_DETAIL_VALUE]}
    )


CHECKS: Final[Mapping[str, Callable[[RequestFields], CheckResult | None]]] = {
    "sipvicious_tag": _check_sipvicious_tag,
    "from_equals_to": _check_from_equals_to,
}
"""The structural checks a signature can name (``check = "..."`` in TOML)."""

# -- signatures ----------------------------------------------------------------------------


class SignatureMatch(NamedTuple):
    """One signature that matched one request (a cheap per-message record)."""

    signature: Signature
    matched: Mapping[str, str]
    decoded: DecodedTag | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """One fingerprint of one tool; every matcher given must match.

    ``patterns`` pairs a field name (one of :data:`MATCH_FIELDS`, or
    ``headers.<canonical key>``) with a compiled regex searched in that
    field. ``methods`` (exact), ``headers_present`` (canonical keys) and
    ``checks`` (names in :data:`CHECKS`) complete it.
    """

    name: str
    tool: str
    severity: Severity
    confidence: Confidence
    description: str = ""
    reference: str = ""
    methods: frozenset[str] = frozenset()
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()
    headers_present: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.methods or self.patterns or self.headers_present or self.checks):
            raise ConfigError(f"signature {self.name!r} has no matcher", key_path=self.name)
        for check in self.checks:
            if check not in CHECKS:
                raise ConfigError(
                    f"signature {self.name!r}: unknown check {check!r}", key_path=self.name
                )
        for field_name, _ in self.patterns:
            if field_name not in _EXTRACTORS and not field_name.startswith("headers."):
                raise ConfigError(
                    f"signature {self.name!r}: unknown field {field_name!r}", key_path=self.name
                )

    @property
    def rule(self) -> str:
        return f"scanner.{self.name}"

    def match(self, fields: RequestFields) -> SignatureMatch | None:
        """The match of this signature on ``fields``, or ``None``. Never raises."""
        if self.methods and fields.method not in self.methods:
            return None
        for key in self.headers_present:
            if not fields.has_header(key):
                return None
        matched: dict[str, str] = {}
        for field_name, regex in self.patterns:
            value = fields.get(field_name)
            if value is None or regex.search(value) is None:
                return None
            matched[field_name] = value
        decoded: DecodedTag | None = None
        for check in self.checks:
            result = CHECKS[check](fields)
            if result is None:
                return None
            matched.update(result.matched)
            decoded = result.decoded or decoded
        return SignatureMatch(self, matched, decoded)


# -- loading signatures from TOML -----------------------------------------------------------

_REGEX_KEYS: Final = frozenset(_EXTRACTORS)
_TEXT_KEYS: Final = frozenset(
    {"name", "tool", "severity", "confidence", "description", "reference"}
)
_LIST_KEYS: Final = frozenset({"method", "header_present", "check"})
_KNOWN_KEYS: Final = _REGEX_KEYS | _TEXT_KEYS | _LIST_KEYS | {"headers"}
_REQUIRED_KEYS: Final = ("tool", "severity", "confidence")
_SEVERITIES: Final = {severity.label: severity for severity in Severity}


class _SignatureError(Exception):
    """A bad value inside one signature entry, turned into a ConfigError by the loader."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def load_signatures(text: str, *, origin: str | None = None) -> tuple[Signature, ...]:
    """Parse and validate a signature file's text (pure: no file is read here).

    ``origin`` names the file in error messages. Raises :class:`ConfigError`
    for invalid TOML, unknown keys (naming the signature and the key), missing
    or mistyped values, bad regexes, unknown checks and duplicate names.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=origin) from None
    for key in document:
        if key != "signature":
            raise ConfigError(
                f"unknown top-level key {key!r} (a signature file holds [[signature]] tables)",
                key_path=key,
                file=origin,
            )
    entries = document.get("signature", [])
    if not isinstance(entries, list):
        raise ConfigError(
            "must be an array of tables ([[signature]])", key_path="signature", file=origin
        )
    signatures: list[Signature] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        signature = _parse_entry(entry, index, origin)
        if signature.name in seen:
            raise ConfigError(
                f"signature {signature.name!r} is defined twice",
                key_path=f"signature[{index}].name",
                file=origin,
            )
        seen.add(signature.name)
        signatures.append(signature)
    return tuple(signatures)


def _parse_entry(entry: object, index: int, origin: str | None) -> Signature:
    where = f"signature[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError("must be a table ([[signature]])", key_path=where, file=origin)
    raw_name = entry.get("name")
    if not isinstance(raw_name, str) or _NAME.fullmatch(raw_name) is None:
        raise ConfigError(
            f"signature #{index + 1} needs a name: 1-64 characters of a-z, 0-9, '.', '_', '-' "
            f"(got {raw_name!r})",
            key_path=f"{where}.name",
            file=origin,
        )
    name = raw_name
    try:
        return _build_signature(name, entry)
    except _SignatureError as problem:
        raise ConfigError(
            f"signature {name!r}: {problem.message}",
            key_path=f"{where}.{problem.key}",
            file=origin,
        ) from None
    except ConfigError as exc:  # from Signature.__post_init__
        raise ConfigError(exc.reason, key_path=where, file=origin) from None


def _build_signature(name: str, entry: dict[str, object]) -> Signature:
    for key in entry:
        if key not in _KNOWN_KEYS:
            close = difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _SignatureError(key, f"unknown key {key!r}{hint}")
    for key in _REQUIRED_KEYS:
        if key not in entry:
            raise _SignatureError(key, f"missing required key {key!r}")
    tool = _text(entry, "tool")
    if not tool or len(tool) > _MAX_TOOL:
        raise _SignatureError("tool", f"must be 1-{_MAX_TOOL} characters")
    severity_label = _text(entry, "severity")
    if severity_label not in _SEVERITIES:
        raise _SignatureError("severity", f"must be one of {', '.join(_SEVERITIES)}")
    confidence = _text(entry, "confidence")
    if confidence not in _CONFIDENCE_RANK:
        raise _SignatureError("confidence", "must be 'high' or 'medium'")
    patterns: list[tuple[str, re.Pattern[str]]] = []
    for key in MATCH_FIELDS:  # a fixed order: cheap fields first does not matter here
        if key in entry:
            # User-Agent strings vary in case between versions of one tool.
            flags = re.IGNORECASE if key == "user_agent" else 0
            patterns.append((key, _regex(key, _text(entry, key), flags)))
    headers = entry.get("headers", {})
    if not isinstance(headers, dict):
        raise _SignatureError("headers", "must be a table of header name = regex")
    for header_name, pattern in headers.items():
        canonical = header_key(header_name)
        if canonical is None:
            raise _SignatureError("headers", f"{header_name!r} is not a header name")
        if not isinstance(pattern, str):
            raise _SignatureError(f"headers.{header_name}", "must be a string (a regex)")
        patterns.append((f"headers.{canonical}", _regex(f"headers.{header_name}", pattern, 0)))
    methods = _names(entry, "method")
    for method in methods:
        if TOKEN.fullmatch(method) is None:
            raise _SignatureError("method", f"{method!r} is not a method name")
    present: list[str] = []
    for header_name in _names(entry, "header_present"):
        canonical = header_key(header_name)
        if canonical is None:
            raise _SignatureError("header_present", f"{header_name!r} is not a header name")
        present.append(canonical)
    checks = _names(entry, "check")
    for check in checks:
        if check not in CHECKS:
            raise _SignatureError("check", f"unknown check {check!r} (known: {', '.join(CHECKS)})")
    if not (patterns or methods or present or checks):
        raise _SignatureError(
            "name", "has no matcher (give a field regex, method, header or check)"
        )
    return Signature(
        name=name,
        tool=tool,
        severity=_SEVERITIES[severity_label],
        confidence=cast("Confidence", confidence),
        description=_text(entry, "description", ""),
        reference=_text(entry, "reference", ""),
        methods=frozenset(methods),
        patterns=tuple(patterns),
        headers_present=tuple(present),
        checks=tuple(checks),
    )


def _text(entry: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise _SignatureError(key, f"must be a string, not {type(value).__name__}")
    return value


def _names(entry: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = entry.get(key, ())
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(cast("list[str]", value))
    raise _SignatureError(key, "must be a string or an array of strings")


def _regex(key: str, pattern: str, flags: int) -> re.Pattern[str]:
    if not pattern or len(pattern) > _MAX_PATTERN:
        raise _SignatureError(key, f"a regex must be 1-{_MAX_PATTERN} characters")
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise _SignatureError(key, f"{key} is not a valid regular expression: {exc}") from None


def merge_signatures(*groups: Iterable[Signature]) -> tuple[Signature, ...]:
    """Later groups extend earlier ones; a signature with an existing name replaces it in place."""
    merged: dict[str, Signature] = {}
    for group in groups:
        for signature in group:
            merged[signature.name] = signature
    return tuple(merged.values())


@functools.cache
def builtin_signatures() -> tuple[Signature, ...]:
    """The signatures shipped with sipwarden (``sipwarden/data/signatures.toml``), parsed once."""
    # Imported here, not at module level: importlib.resources pulls in tempfile
    # and random, which the sans-IO core must not import (tests/test_layering.py).
    # The package data is read when a detector is built, never while traffic is
    # inspected: "a detector opens no file" is about inspection time.
    from importlib.resources import files  # noqa: PLC0415

    resource = files("sipwarden").joinpath("data").joinpath("signatures.toml")
    return load_signatures(resource.read_text(encoding="utf-8"), origin=BUILTIN_ORIGIN)


def load_signature_files(paths: Iterable[str | Path]) -> tuple[Signature, ...]:
    """Read and merge signature files (the caller's side: at construction, not inspection)."""
    groups: list[tuple[Signature, ...]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the signature file: {exc}", file=str(path)) from None
        groups.append(load_signatures(text, origin=str(path)))
    return merge_signatures(*groups)


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScannerSettings:
    """Settings of the scanner-signature detector, each with its default.

    ``signature_files``: extra TOML signature files, loaded after the built-in
    ones (default none); a signature with the name of an earlier one replaces it.
    ``builtin``: load the signatures shipped with sipwarden (default True).
    ``disabled``: names of signatures to switch off (default none; an unknown
    name is an error, so a typo does not silently keep a signature on).
    ``realert_after``: seconds (default 300) before a source already reported for
    a tool is reported again, with updated counts; in between it is counted only.
    ``max_sources``: sources (IPv6: /64s) tracked at most (default 10,000); the
    least recently seen is forgotten first.
    ``block``: propose dropping requests that match a signature of at least
    ``block_confidence`` (default True, ``"high"``); the gateway enforces it,
    the monitor only reports.
    ``show_passwords``: the From tag of svcrack carries the password it tries,
    which is the account's real one when the guess is right; False keeps
    passwords out of events (default True: the administrator needs to know
    which password an attacker found).
    ``max_field_length``: characters of a field a regex sees (default 256).
    """

    signature_files: tuple[str, ...] = ()
    builtin: bool = True
    disabled: frozenset[str] = frozenset()
    realert_after: float = DEFAULT_REALERT_AFTER
    max_sources: int = DEFAULT_MAX_SOURCES
    block: bool = True
    block_confidence: Confidence = "high"
    show_passwords: bool = True
    max_field_length: int = MAX_FIELD_LENGTH

    def __post_init__(self) -> None:
        if not self.realert_after > 0:
            raise ConfigError("must be more than 0 seconds", key_path="scanner.realert_after")
        if self.max_sources < 1:
            raise ConfigError("must be at least 1", key_path="scanner.max_sources")
        if self.block_confidence not in _CONFIDENCE_RANK:
            raise ConfigError("must be 'high' or 'medium'", key_path="scanner.block_confidence")
        if not 16 <= self.max_field_length <= 8192:
            raise ConfigError("must be from 16 to 8192", key_path="scanner.max_field_length")


def signatures_for(settings: ScannerSettings) -> tuple[Signature, ...]:
    """The built-in signatures (when enabled) and the settings' files, minus the disabled ones."""
    merged = merge_signatures(
        builtin_signatures() if settings.builtin else (),
        load_signature_files(settings.signature_files),
    )
    unknown = sorted(settings.disabled - {signature.name for signature in merged})
    if unknown:
        raise ConfigError(
            f"no signature called {unknown[0]!r} to disable", key_path="scanner.disabled"
        )
    return tuple(signature for signature in merged if signature.name not in settings.disabled)


# -- the detector --------------------------------------------------------------------------

# Distinct values whose screening is remembered per field (see _Screen).
_SCREEN_MEMO_ENTRIES: Final = 1024


class _Screen:
    """The signatures whose first regex searches one field, and their verdicts on recent values.

    The verdict on a value is remembered: the User-Agents, Contacts and From
    parts of ongoing traffic repeat, and one dictionary lookup costs less
    than the dozen regex searches it stands for. A regex search depends on
    the value alone, so remembering it changes no result. The memo is
    :class:`sipwarden.sip.memo.Memo`: a flood of unique values costs a fixed
    amount of memory (``_SCREEN_MEMO_ENTRIES`` values of at most
    ``max_field_length`` characters) and the regexes it would have cost anyway.
    """

    __slots__ = ("entries", "field", "verdicts")

    def __init__(self, field_name: str, entries: Sequence[tuple[int, re.Pattern[str]]]) -> None:
        self.field = field_name
        self.entries = tuple(entries)
        # value -> the indices of the signatures whose first regex finds it.
        self.verdicts: Memo[str, tuple[int, ...]] = Memo(
            self._judge, max_entries=_SCREEN_MEMO_ENTRIES
        )

    def _judge(self, value: str) -> tuple[int, ...]:
        return tuple([index for index, regex in self.entries if regex.search(value) is not None])


def _screens_of(signatures: Sequence[Signature]) -> tuple[tuple[_Screen, ...], tuple[int, ...]]:
    """Signatures grouped by the field of their first regex, and those without a regex.

    A request then costs one read per field, and a field it lacks costs
    nothing more; the full match runs only on the signatures screened in.
    """
    by_field: dict[str, list[tuple[int, re.Pattern[str]]]] = {}
    unscreened: list[int] = []
    for index, signature in enumerate(signatures):
        if signature.patterns:
            field_name, regex = signature.patterns[0]
            by_field.setdefault(field_name, []).append((index, regex))
        else:
            unscreened.append(index)
    screens = tuple(_Screen(name, entries) for name, entries in by_field.items())
    return screens, tuple(unscreened)


class _Track:
    """What is known about one source (an address, or an IPv6 /64) running one tool."""

    __slots__ = (
        "addresses",
        "addresses_overflow",
        "decoded",
        "decoded_overflow",
        "evidence",
        "first_seen",
        "last_alert",
        "last_seen",
        "messages",
        "signatures",
        "since_alert",
    )

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.last_seen = now
        self.last_alert: float | None = None
        self.messages = 0
        self.since_alert = 0
        self.signatures: dict[str, int] = {}  # bounded by the number of signatures
        self.decoded: dict[str, None] = {}  # insertion-ordered set, MAX_DECODED_SAMPLE
        self.decoded_overflow = 0
        self.addresses: dict[str, None] = {}  # IPv6 /64 only, MAX_ADDRESS_SAMPLE
        self.addresses_overflow = 0
        self.evidence: list[str] = []  # since the last event, MAX_EVIDENCE_MESSAGES - 1

    def add_decoded(self, text: str) -> None:
        if text in self.decoded:
            return
        if len(self.decoded) < MAX_DECODED_SAMPLE:
            self.decoded[text] = None
        else:
            self.decoded_overflow += 1

    def add_address(self, address: str) -> None:
        if address in self.addresses:
            return
        if len(self.addresses) < MAX_ADDRESS_SAMPLE:
            self.addresses[address] = None
        else:
            self.addresses_overflow += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """A snapshot of what the detector knows about one source running one tool."""

    source: str  # the address, or the IPv6 /64 it belongs to
    tool: str
    first_seen: float
    last_seen: float
    messages: int
    signatures: Mapping[str, int]
    decoded: tuple[str, ...]
    decoded_distinct: int
    addresses: tuple[str, ...]


class ScannerDetector:
    """Reports requests that carry a known attack tool's fingerprint (see the module doc).

    ``signatures`` defaults to :func:`signatures_for` ``(settings)``: the
    built-in file plus ``settings.signature_files``, read here, once, at
    construction. Signatures passed explicitly are used as given.
    """

    name = "scanner"

    def __init__(
        self,
        settings: ScannerSettings | None = None,
        *,
        signatures: Sequence[Signature] | None = None,
    ) -> None:
        self.settings = settings or ScannerSettings()
        self.signatures: tuple[Signature, ...] = (
            signatures_for(self.settings) if signatures is None else tuple(signatures)
        )
        self._block_rank = _CONFIDENCE_RANK[self.settings.block_confidence]
        self._screens, self._unscreened = _screens_of(self.signatures)
        # An entry idle for realert_after would alert on its next match anyway,
        # so that is also how long it needs to be kept.
        self._sources: BoundedTable[str, dict[str, _Track]] = BoundedTable(
            max_entries=self.settings.max_sources, ttl=self.settings.realert_after
        )

    @property
    def tracked_sources(self) -> int:
        """Sources (IPv6: /64s) currently remembered: at most ``settings.max_sources``."""
        return len(self._sources)

    def match(self, request: Request) -> list[SignatureMatch]:
        """Every signature ``request`` matches, in signature order (no state is touched)."""
        fields = RequestFields(request, limit=self.settings.max_field_length)
        get = fields.get
        # Most signatures fail on their first regex (an ordinary phone's
        # User-Agent): each field is read once for every signature it screens,
        # and only the signatures screened in are matched in full.
        candidates = list(self._unscreened)
        unscreened = len(candidates)
        for screen in self._screens:
            value = get(screen.field)
            if value is None:
                continue  # no signature of this screen can match
            passing = screen.verdicts(value)
            if passing:
                candidates.extend(passing)
        if len(candidates) > unscreened:
            candidates.sort()  # back to signature order, which the results keep
        signatures = self.signatures
        found: list[SignatureMatch] = []
        for index in candidates:
            result = signatures[index].match(fields)
            if result is not None:
                found.append(result)
        return found

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if not isinstance(message, Request):
            return  # responses and unparsable datagrams carry no client fingerprint
        found = self.match(message)
        if not found:
            return
        by_tool: dict[str, list[SignatureMatch]] = {}
        for result in found:
            by_tool.setdefault(result.signature.tool, []).append(result)
        if self.settings.block:
            self._propose(found, findings)
        # IPv6 sources are tracked per /64 (DESIGN), so a scanner rotating its
        # address inside one allocation is still one source to re-alert on.
        prefix = prefix64(obs.src)
        key = prefix or obs.src
        tracks = self._sources.get_or_create(key, obs.ts, dict)
        for tool, results in by_tool.items():
            track = tracks.get(tool)
            if track is None:
                track = tracks[tool] = _Track(obs.ts)
            event = self._record(
                obs=obs, message=message, track=track, tool=tool, results=results, prefix=prefix
            )
            if event is not None:
                findings.report(event)

    def _propose(self, found: list[SignatureMatch], findings: Findings) -> None:
        strongest = max(found, key=_strength)
        signature = strongest.signature
        if _CONFIDENCE_RANK[signature.confidence] >= self._block_rank:
            findings.propose(
                Verdict(
                    action=Action.DROP,
                    reason=f"{signature.tool} signature {signature.name}",
                    rule=signature.rule,
                )
            )

    def _record(
        self,
        *,
        obs: Observation,
        message: Request,
        track: _Track,
        tool: str,
        results: list[SignatureMatch],
        prefix: str | None,
    ) -> SecurityEvent | None:
        track.messages += 1
        track.since_alert += 1
        track.last_seen = max(track.last_seen, obs.ts)
        for result in results:
            name = result.signature.name
            track.signatures[name] = track.signatures.get(name, 0) + 1
        decoded = next((r.decoded for r in results if r.decoded is not None), None)
        if decoded is not None:
            decoded = self._shown(decoded)
            track.add_decoded(decoded.text)
        if prefix is not None:
            track.add_address(obs.src)
        last = track.last_alert
        if last is not None and obs.ts - last < self.settings.realert_after:
            if len(track.evidence) < MAX_EVIDENCE_MESSAGES - 1:
                track.evidence.append(describe(obs))
            return None
        event = self._event(
            obs=obs,
            message=message,
            track=track,
            tool=tool,
            results=results,
            decoded=decoded,
            prefix=prefix,
        )
        track.last_alert = obs.ts
        track.since_alert = 0
        track.evidence = []
        return event

    def _shown(self, decoded: DecodedTag) -> DecodedTag:
        if decoded.password is None or self.settings.show_passwords:
            return decoded
        return decoded._replace(text=f"{decoded.user}:<hidden>", password=None)

    def _event(
        self,
        *,
        obs: Observation,
        message: Request,
        track: _Track,
        tool: str,
        results: list[SignatureMatch],
        decoded: DecodedTag | None,
        prefix: str | None,
    ) -> SecurityEvent:
        primary = max(results, key=_strength).signature
        matched: dict[str, str] = {}
        for result in results:
            for field_name, value in result.matched.items():
                matched.setdefault(field_name, value[:MAX_DETAIL_VALUE])
        detail: dict[str, object] = {
            "tool": tool,
            "signature": primary.name,
            "signatures": [result.signature.name for result in results],
            "confidence": primary.confidence,
            "matched": matched,
            "first_seen": iso_time(track.first_seen),
            "signature_counts": dict(track.signatures),
        }
        if primary.reference:
            detail["reference"] = primary.reference
        if decoded is not None:
            detail["decoded_tag"] = decoded.text
            detail["decoded"] = {"kind": decoded.kind, "value": decoded.text}
        if track.decoded:
            detail["decoded_sample"] = list(track.decoded)
        if prefix is not None:
            detail["prefix"] = prefix
            detail["addresses"] = list(track.addresses)
        counts: dict[str, int | float] = {
            "messages": track.messages,
            "since_last_event": track.since_alert,
        }
        if track.decoded:
            counts["decoded_tags"] = len(track.decoded) + track.decoded_overflow
        if prefix is not None:
            counts["addresses"] = len(track.addresses) + track.addresses_overflow
        what = primary.description or primary.name
        summary = f"{tool} from {obs.src}: {what}"
        if decoded is not None:
            summary += f" (From tag decodes to {decoded.kind} {decoded.text})"
        return SecurityEvent(
            time=obs.ts,
            kind=EventKind.SCANNER,
            severity=max(result.signature.severity for result in results),
            source=obs.src,
            source_port=obs.sport,
            rule=primary.rule,
            summary=summary[:300],
            account=_account(message, decoded),
            evidence=Evidence(messages=(*track.evidence, describe(obs)), counts=counts),
            detail=detail,
        )

    def sightings(self, source: str) -> tuple[Sighting, ...]:
        """What is known about ``source`` (an address; IPv6 is looked up by its /64)."""
        key = prefix64(source) or source
        tracks = self._sources.get(key)
        if tracks is None:
            return ()
        return tuple(
            Sighting(
                source=key,
                tool=tool,
                first_seen=track.first_seen,
                last_seen=track.last_seen,
                messages=track.messages,
                signatures=dict(track.signatures),
                decoded=tuple(track.decoded),
                decoded_distinct=len(track.decoded) + track.decoded_overflow,
                addresses=tuple(track.addresses),
            )
            for tool, track in tracks.items()
        )

    def expire(self, now: float) -> None:
        self._sources.expire(now)


def _strength(result: SignatureMatch) -> tuple[int, Severity]:
    signature = result.signature
    return (_CONFIDENCE_RANK[signature.confidence], signature.severity)


def _account(message: Request, decoded: DecodedTag | None) -> str | None:
    """The account the probe is about, when that means something.

    svcrack's tag names the user it attacks; a REGISTER (svwar, svcrack) is
    about its address of record, and credentials name their user. The From
    user of an OPTIONS or INVITE probe is made up (svmap: 100@1.1.1.1).
    """
    if decoded is not None and decoded.user:
        return decoded.user[:MAX_DETAIL_VALUE]
    if message.method == "REGISTER" or "authorization" in message.headers:
        account = account_of(message)
        return account[:MAX_DETAIL_VALUE] if account else None
    return None
