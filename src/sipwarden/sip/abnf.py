"""The pieces of the RFC 3261 grammar (section 25.1) that the parser checks.

Like h11's ``_abnf.py``: every rule is written once here, as a compiled regular
expression over ``str`` (the header section is decoded as UTF-8 with
``surrogateescape``, so bytes that are not UTF-8 show up as lone surrogates and
fail every rule below). Each rule cites the grammar it comes from and says why
where it deviates.
"""

from __future__ import annotations

import re

__all__ = [
    "CALL_ID",
    "SIP_VERSION",
    "TOKEN",
    "TOKEN_CHARS",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = "A-Za-z0-9\\-.!%*_+`'~"  # noqa: S105 - a character class, not a password
TOKEN = re.compile(f"[{TOKEN_CHARS}]+")

# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
_WORD_CHARS = TOKEN_CHARS + '()<>:\\\\"/\\[\\]?{}'

# callid = word [ "@" word ]  (RFC 3261 20.8)
CALL_ID = re.compile(f"[{_WORD_CHARS}]+(?:@[{_WORD_CHARS}]+)?")

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; ABNF string literals are
# case-insensitive (RFC 5234 2.3), so "sip/2.0" is the same version.
SIP_VERSION = re.compile(r"[Ss][Ii][Pp]/([0-9]+)\.([0-9]+)")
