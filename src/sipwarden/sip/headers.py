"""Header fields: case-insensitive names, compact forms, list splitting, raw text kept.

A message's header section is held as a list of :class:`HeaderField` tuples in
wire order. Each keeps the text exactly as received (folded lines included), so
a message whose headers were not edited is forwarded byte-exact; an edited or
added field has ``raw`` set to ``None`` and is regenerated from name and value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from sipwarden.errors import LocalProtocolError

from .abnf import TOKEN

__all__ = [
    "COMPACT_FORMS",
    "KEY_CACHE",
    "LIST_HEADERS",
    "HeaderField",
    "Headers",
    "header_key",
    "split_list",
]

# RFC 3261 7.3.3 and the compact forms registered since (IANA "Header Fields"
# registry): the single letter is a full synonym of the long name.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",  # RFC 3841
    "b": "referred-by",  # RFC 3892
    "c": "content-type",
    "d": "request-disposition",  # RFC 3841
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",  # RFC 3841
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",  # RFC 4474
    "o": "event",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "s": "subject",
    "t": "to",
    "u": "allow-events",  # RFC 6665
    "v": "via",
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 8224
}

# Header fields whose grammar is a comma-separated list (RFC 3261 7.3.1): only
# these may be split on commas or combined into one field. Authorization and
# the challenge headers are deliberately absent: their values contain commas
# between parameters, and each field is one credential.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "diversion",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

# Wire name -> canonical key. Pre-seeded with the common spellings so the hot
# path is one dict hit; other spellings are added as they are seen, up to a
# bound, so a flood of random header names cannot grow it without limit.
KEY_CACHE: dict[str, str] = {}
KEY_CACHE_MAX = 4096


def _seed_key_cache() -> None:
    common = (
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Content-Length",
        "Route",
        "Record-Route",
        "User-Agent",
        "Server",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Expires",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Accept",
        "Date",
        "Subject",
        "Event",
        "Allow-Events",
        "Session-Expires",
        "Min-SE",
        "Diversion",
        "History-Info",
        "P-Asserted-Identity",
        "Privacy",
        "Organization",
        "Warning",
        "Call-Info",
        "Content-Disposition",
        "Unsupported",
        "Retry-After",
        "Min-Expires",
        "Path",
        "Refer-To",
        "Referred-By",
    )
    for name in common:
        KEY_CACHE[name] = name.lower()
        KEY_CACHE[name.lower()] = name.lower()
    for short, long in COMPACT_FORMS.items():
        KEY_CACHE[short] = long
        KEY_CACHE[short.upper()] = long
    KEY_CACHE["CSEQ"] = "cseq"
    KEY_CACHE["Call-Id"] = "call-id"


_seed_key_cache()


def header_key(name: str) -> str | None:
    """The canonical key of a header name: lower-case, compact form expanded.

    Returns ``None`` when ``name`` is not a valid ``token`` (RFC 3261 25.1
    ``header-name = token``), so callers decide whether that is an error.
    """
    key = KEY_CACHE.get(name)
    if key is not None:
        return key
    if TOKEN.fullmatch(name) is None:
        return None
    lowered = name.lower()
    key = COMPACT_FORMS.get(lowered, lowered)
    if len(KEY_CACHE) < KEY_CACHE_MAX:
        KEY_CACHE[name] = key
    return key


class HeaderField(NamedTuple):
    """One header field line as it stands in the message.

    ``value`` is the field value with folding replaced by a single space and
    surrounding whitespace removed (RFC 3261 7.3.1). ``raw`` is the complete
    original line(s) without the final CRLF, or ``None`` once edited.
    """

    key: str
    name: str
    value: str
    raw: str | None


# tuple.__new__ builds a NamedTuple without its Python-level __new__: the
# parser creates one per header line, so this is measurable on the hot path.
make_field: Callable[..., HeaderField] = tuple.__new__


def split_list(value: str) -> list[str]:
    """Split a list header value on top-level commas (RFC 3261 7.3.1).

    Commas inside quoted strings (with ``\\"`` escapes) and inside ``<...>``
    are not separators. Empty elements are kept (as ``""``) so that strict
    validation can reject them (RFC 4475 ``badinv01``).
    """
    if "," not in value:
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            parts.append(value[start:index].strip(" \t"))
            start = index + 1
    parts.append(value[start:].strip(" \t"))
    return parts


_T = TypeVar("_T")
_MISSING: Any = object()


class Headers:
    """The ordered header fields of one message.

    Lookup is by canonical key (``"via"``, ``"call-id"``: see
    :func:`header_key`), so compact and long forms are the same header.
    Typed values parsed from the fields are cached here and dropped whenever a
    field changes, so editing a header can never leave a stale typed view.

    The fields are stored as four parallel lists (keys, names as written,
    values, raw lines) rather than one object per field: the parser fills
    them with a few C-level operations, and ``keys.index`` finds a header
    without a Python loop. Values are stored as they follow the colon and
    trimmed when read: most are never read, so trimming them all up front
    would be wasted work. Iteration yields :class:`HeaderField` tuples.
    """

    __slots__ = ("_cache", "_keys", "_names", "_raws", "_values", "edited", "strict")

    def __init__(self, fields: Iterable[HeaderField] = (), *, strict: bool = True) -> None:
        fields = list(fields)
        if fields:
            keys, names, values, raws = (list(column) for column in zip(*fields, strict=True))
        else:
            keys, names, values, raws = [], [], [], []
        self._keys: list[str] = keys
        self._names: list[str] = names
        self._values: list[str] = values
        self._raws: list[str | None] = raws
        self._cache: dict[str, Any] = {}
        self.edited = False
        # Whether typed views parse URIs and addresses strictly (the gateway)
        # or recover what they can (the monitor).
        self.strict = strict

    @classmethod
    def from_columns(
        cls,
        keys: list[str],
        names: list[str],
        values: list[str],
        raws: list[str | None],
        *,
        strict: bool = True,
    ) -> Headers:
        """Build from parallel lists (the parser's fast path); the lists are taken, not copied."""
        headers = cls.__new__(cls)
        headers._keys = keys
        headers._names = names
        headers._values = values
        headers._raws = raws
        headers._cache = {}
        headers.edited = False
        headers.strict = strict
        return headers

    # -- reading -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[HeaderField]:
        for key, name, value, raw in zip(
            self._keys, self._names, self._values, self._raws, strict=True
        ):
            yield make_field(HeaderField, (key, name, value.strip(" \t"), raw))

    def __contains__(self, name: str) -> bool:
        return _key_or_fail(name) in self._keys

    def keys(self) -> list[str]:
        """The canonical key of every field, in order."""
        return list(self._keys)

    def count(self, name: str) -> int:
        """How many fields are called ``name``."""
        return self._keys.count(_key_or_fail(name))

    def get(self, name: str) -> str | None:
        """The value of the first field called ``name``, or ``None``."""
        key = KEY_CACHE.get(name) or _key_or_fail(name)
        try:
            return self._values[self._keys.index(key)].strip(" \t")
        except ValueError:
            return None

    def get_all(self, name: str) -> list[str]:
        """The values of every field called ``name``, in order (not comma-split)."""
        key = KEY_CACHE.get(name) or _key_or_fail(name)
        keys = self._keys
        count = keys.count(key)
        if count <= 1:  # the common case, without a Python loop over every field
            return [self._values[keys.index(key)].strip(" \t")] if count else []
        values = self._values
        return [values[index].strip(" \t") for index, each in enumerate(keys) if each == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header across all its fields, comma-split."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(split_list(value))
        return out

    def typed(self, key: str, parse: Callable[[Headers], _T]) -> _T:
        """The typed view ``parse(self)`` of header ``key``, computed once."""
        # .get with a sentinel, not try/except KeyError: a miss is the common
        # case on first access and raising costs more than the lookup.
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self._cache[key] = parse(self)
        return value  # type: ignore[no-any-return]

    # -- editing -----------------------------------------------------------

    def _insert(self, index: int, key: str, name: str, value: str) -> None:
        value = _checked_value(value)  # before any list changes: a refused edit changes nothing
        self._keys.insert(index, key)
        self._names.insert(index, name)
        self._values.insert(index, value)
        self._raws.insert(index, None)
        self._changed(key)

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a field (or insert it before all others with ``first``)."""
        self._insert(0 if first else len(self._keys), _key_or_fail(name), name, value)

    def insert_before(self, name: str, value: str) -> None:
        """Insert a field before the first field of the same name (or append).

        This is how a proxy adds its Via or Record-Route (RFC 3261 16.6):
        topmost, but after unrelated headers that precede it.
        """
        key = _key_or_fail(name)
        index = self._keys.index(key) if key in self._keys else len(self._keys)
        self._insert(index, key, name, value)

    def _delete(self, index: int) -> None:
        del self._keys[index], self._names[index], self._values[index], self._raws[index]

    def remove(self, name: str) -> int:
        """Remove every field called ``name``; returns how many were removed."""
        count = self._keys.count(_key_or_fail(name))
        if count:
            self.replace_all(name, ())
        return count

    def replace_all(self, name: str, values: Sequence[str]) -> None:
        """Replace every field called ``name`` by one field per element of ``values``,
        in order, where the first of them stood (appended when there was none).

        A proxy rewrites Via, Route, Record-Route and Contact this way on every
        message: the fields of one name are nearly always adjacent, so this is
        a few C-level slice assignments, not a pass over every field.
        """
        key = _key_or_fail(name)
        checked = [_checked_value(value) for value in values]  # before any change
        keys = self._keys
        count = keys.count(key)
        if not count and not checked:
            return
        start = keys.index(key) if count else len(keys)
        if keys[start : start + count].count(key) != count:  # scattered: gather them first
            for index in range(len(keys) - 1, start, -1):
                if keys[index] == key:
                    self._delete(index)
            count = 1
        end = start + count
        size = len(checked)
        self._keys[start:end] = [key] * size
        self._names[start:end] = [name] * size
        self._values[start:end] = checked
        self._raws[start:end] = [None] * size
        self._changed(key)

    def remove_first(self, name: str) -> str | None:
        """Remove the first field called ``name``; return its value."""
        key = _key_or_fail(name)
        if key not in self._keys:
            return None
        index = self._keys.index(key)
        value = self._values[index]
        self._delete(index)
        self._changed(key)
        return value

    def set(self, name: str, value: str) -> None:
        """Replace the first field called ``name`` in place, dropping the others.

        When there is none, the field is appended.
        """
        key = _key_or_fail(name)
        value = _checked_value(value)
        if key not in self._keys:
            self._insert(len(self._keys), key, name, value)
            return
        first = self._keys.index(key)
        for index in range(len(self._keys) - 1, first, -1):
            if self._keys[index] == key:
                self._delete(index)
        self._names[first] = name
        self._values[first] = value
        self._raws[first] = None
        self._changed(key)

    def remove_where(self, match: Callable[[str], bool]) -> int:
        """Remove every field whose canonical key ``match`` accepts; returns how many went.

        Decided on the keys alone (lower-case, compact forms expanded), and only the
        typed views of the removed keys are forgotten: a proxy strips a few headers
        from most messages and reads the others afterwards.
        """
        gone = [index for index, key in enumerate(self._keys) if match(key)]
        if not gone:
            return 0
        removed_keys = {self._keys[index] for index in gone}
        for index in reversed(gone):
            self._delete(index)
        for key in removed_keys:
            self._changed(key)
        return len(gone)

    def seed(self, key: str, view: object) -> None:
        """Set the typed view of ``key`` after an edit, when the caller already holds
        what parsing the new fields would give (a proxy that pops the top Via keeps the
        rest of the parsed list): the next read need not parse them again."""
        self._cache[key] = view

    def clear_cache(self) -> None:
        """Drop every typed view (they are parsed again on next access)."""
        self._cache.clear()

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the typed views of ``keys`` (parsed again on next access); keep the others."""
        cache = self._cache
        for key in keys:
            cache.pop(key, None)

    def _changed(self, key: str) -> None:
        """Forget the typed views an edit of ``key`` made stale: those of ``key`` only
        (each view is parsed from the fields of one key; ``contact*`` from
        ``contact``'s). A proxy edits several headers per message, and re-parsing the
        untouched ones after every edit was a measurable share of its time."""
        self._cache.pop(key, None)
        self._cache.pop(key + "*", None)
        self.edited = True

    # -- output ------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        """Each field as its wire text (original if unchanged), without CRLF."""
        for name, value, raw in zip(self._names, self._values, self._raws, strict=True):
            yield raw if raw is not None else f"{name}: {value}"


def _key_or_fail(name: str) -> str:
    key = header_key(name)
    if key is None:
        raise LocalProtocolError(f"{name!r} is not a valid header name (RFC 3261 25.1 token)")
    return key


def _checked_value(value: str) -> str:
    # A CR or LF in a value we write would let a header value we copy from an
    # attacker inject extra header lines into the message we forward.
    if "\r" in value or "\n" in value:
        raise LocalProtocolError("header value contains CR or LF")
    return value
